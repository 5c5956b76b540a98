"""The program's entry point: a Ctrl-C while the package loads is one line, exit 130."""

from __future__ import annotations

import subprocess
import sys

#: Runs the entry point with a Ctrl-C arriving while the command line is being imported
#: (an import hook raises it, as the signal would in the middle of an import).
_CTRL_C_WHILE_LOADING = """
import sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "talon_classic.cli":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
sys.argv = ["talon-classic", "--version"]
from talon_classic.console import run
run()
"""


def test_ctrl_c_while_the_program_loads_is_one_line_and_exit_130() -> None:
    """Before, it was a KeyboardInterrupt traceback (seen after 0.3-2 s on a busy machine)."""
    done = subprocess.run([sys.executable, "-c", _CTRL_C_WHILE_LOADING], capture_output=True,
                          text=True, timeout=60)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "interrupted (Ctrl-C)\n")


def test_the_entry_point_and_the_package_load_nothing_before_run() -> None:
    code = ("import sys, talon_classic.console, talon_classic\n"
            "print(sorted(m for m in sys.modules if m.startswith('talon_classic')))\n"
            "print(talon_classic.Pipeline.__module__)\n")  # a public name, loaded on use
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["['talon_classic', 'talon_classic.console']",
                                        "talon_classic.bulk"]


def test_the_program_runs_through_it() -> None:
    done = subprocess.run([sys.executable, "-m", "talon_classic", "--version"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "talon-classic, version 0.1.0\n")
