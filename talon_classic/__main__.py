"""``python -m talon_classic``: the same as the ``talon-classic`` command."""

from talon_classic.cli import main

main()
