"""The dead-letter file: every event that could not be delivered, one JSON line each.

Lines look like ``{"event": <original>, "reason": ..., "error": ...,
"input": "file:line"}`` so a user can fix the cause and feed the events
back with ``talon-classic identify``: the ``event`` field is the original
event, untouched. The file is appended to, never truncated: a run never
destroys what an earlier run could not deliver. It is created readable by
its owner only (0600), since it holds users' traits. Any event the reader
produced can be written (huge integers in full, lone surrogates as
``\\ud800`` escapes; see :mod:`talon_classic.jsonio`).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import IO, Any

from talon_classic.exceptions import DeadLetterError
from talon_classic.files import open_private
from talon_classic.jsonio import dumps


class DeadLetters:
    """A thread-safe, append-only JSONL writer, opened on first use."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh: IO[str] | None = None
        self._lock = threading.Lock()
        self.count = 0
        #: Why the file could not be written (one line), or None.
        self.broken: str | None = None

    def problem(self) -> str | None:
        """Why no dead letter could be written at :attr:`path` (one line naming it), or
        None: checked before anything is sent, since the file is only created when the
        first event fails, and then it would be too late to say so."""
        path = self.path
        if os.path.isdir(path):
            return f"{path}: is a directory; give --dead-letter FILE"
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            return f"{path}: no such directory {parent}; give --dead-letter FILE"
        if not os.access(path if os.path.exists(path) else parent, os.W_OK):
            return f"{path}: cannot be written (permission denied); give --dead-letter FILE"
        return None

    def write(self, event: Any, reason: str, error: str | None, where: str) -> None:
        """Append one dead letter (:class:`DeadLetterError` if the file cannot be written)."""
        line = dumps({"event": event, "reason": reason, "error": error, "input": where})
        with self._lock:
            try:
                if self._fh is None:
                    self._fh = open_private(self.path, "a")
                self._fh.write(line + "\n")
            except OSError as exc:
                raise self._failed(exc) from None
            self.count += 1

    def flush(self) -> None:
        """Make written lines durable (called before a checkpoint is saved);
        :class:`DeadLetterError` if they cannot be."""
        with self._lock:
            if self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    raise self._failed(exc) from None

    def close(self) -> None:
        """Flush and close. After a failure, lines not written are dropped: their events
        were not marked delivered (so a resumed run sends them again)."""
        if self.broken is None:
            self.flush()
        with self._lock:
            if self._fh is not None:
                with contextlib.suppress(OSError):
                    self._fh.close()
                self._fh = None

    def _failed(self, exc: OSError) -> DeadLetterError:
        self.broken = f"{self.path}: cannot write dead letters ({exc.strerror or exc})"
        return DeadLetterError(self.broken)
