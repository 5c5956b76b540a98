"""Benchmarks for talon-classic: run ``python -m benchmarks`` for the whole table."""

import signal

# The benchmarks stop their talon-classic processes with SIGINT, as Ctrl-C does.
# Started from a script in the background (``nohup python -m benchmarks &``), this
# process inherits SIGINT ignored, its children would too, and Python installs no
# KeyboardInterrupt handler in them: they would never stop. A handler here (not
# SIG_IGN) makes each child start with the default disposition.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
