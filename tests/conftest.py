"""Every test keeps talon-classic's state (the ordering ledger) in a directory of its own.

``identify`` keeps a ledger per deployment in ``$XDG_STATE_HOME/talon-classic/``
by default. Tests run it many times against emulators: without this, they
would write into the real home directory, and one test's ledger could
decide what another's run sends. Subprocesses inherit the variable.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_SESSION_STATE: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    """A state directory for the whole session, before any fixture (module-scoped ones
    such as the README runner's included) starts a talon-classic."""
    where = tempfile.mkdtemp(prefix="talon-test-state-")
    _SESSION_STATE.append(where)
    os.environ["XDG_STATE_HOME"] = where
    # The many talon-classic subprocesses compile the package once, into a cache of the
    # session's, instead of each from source where PYTHONDONTWRITEBYTECODE is set (as on
    # the project's machine); the checkout gets no __pycache__ either way.
    cache = tempfile.mkdtemp(prefix="talon-test-pycache-")
    _SESSION_STATE.append(cache)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = cache


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core, because much of the suite waits.

    Many tests spend their time in emulator round trips, subprocesses and
    backoff sleeps rather than on a core; one worker per core leaves the CPU
    half idle (64 s against 50 s with two per core on a 2-core machine).
    """
    return 2 * (os.cpu_count() or 1)


def pytest_unconfigure(config: pytest.Config) -> None:
    for where in _SESSION_STATE:
        shutil.rmtree(where, ignore_errors=True)


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory,
               monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This test's ``XDG_STATE_HOME`` (fresh, empty; not inside ``tmp_path``)."""
    where = tmp_path_factory.mktemp("xdg-state")
    monkeypatch.setenv("XDG_STATE_HOME", str(where))
    yield where
