"""``python -m talon_classic``: the same as the ``talon-classic`` command."""

from talon_classic.console import run

if __name__ == "__main__":  # not when a worker process (spawn) imports it again
    run()
