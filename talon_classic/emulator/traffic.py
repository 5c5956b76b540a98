"""What arrived at the emulated API: the request log and the counters behind ``stats``.

Kept apart from the profiles: ``/_emulator/requests`` and ``stats`` let a
test check how talon-classic talked to Talon.One (how many requests, of
which size, answered how), not only what ended up stored.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter, deque
from typing import Any

#: Entries kept in the request log; older ones are forgotten first.
REQUEST_LOG_SIZE = 100_000


class Traffic:
    """Per-status counts, profile updates and audience actions written, and the last
    requests. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: Counter[str] = Counter()
        self._updates = 0
        self._audience_actions = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)

    def record(self, arrived: float, method: str, path: str, status: int, profiles: int) -> None:
        """One answered request: when it arrived (``time.monotonic()``), what it was, its status."""
        with self._lock:
            self._status[str(status)] += 1
            self._log.append({"t": arrived, "method": method, "path": path, "status": status,
                              "profiles": profiles})

    def count_updates(self, n: int) -> None:
        """``n`` profile updates were written."""
        with self._lock:
            self._updates += n

    def count_audience_actions(self, n: int) -> None:
        """``n`` audience membership actions were applied."""
        with self._lock:
            self._audience_actions += n

    def counts(self) -> dict[str, Any]:
        """``{"requests": {status: n}, "profile_updates": n, "audience_actions": n}``."""
        with self._lock:
            return {"requests": dict(self._status), "profile_updates": self._updates,
                    "audience_actions": self._audience_actions}

    def entries(self, limit: int, offset: int) -> list[dict[str, Any]]:
        """Log entries ``{"t", "method", "path", "status", "profiles"}``, oldest first."""
        with self._lock:
            return list(itertools.islice(self._log, offset, offset + limit))

    def clear(self) -> None:
        """Forget the counts and the log."""
        with self._lock:
            self._status.clear()
            self._updates = 0
            self._audience_actions = 0
            self._log.clear()
