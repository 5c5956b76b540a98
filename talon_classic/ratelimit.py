"""A thread-safe token bucket shared by every request of one client.

Talon.One allows about 60 requests per second per deployment; the limiter
keeps one client (all its threads) under a configured rate. It is the GCRA
form of a token bucket: one number, the theoretical arrival time of the next
request, is moved forward under the lock, and the caller sleeps *outside* the
lock. So a waiting thread never blocks the others from reserving, and threads
are served in the order they asked (each reservation is a distinct slot).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` at once; ``rate <= 0`` means unlimited.

    ``clock`` and ``sleep`` are injectable so tests can run on fake time.
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tat = clock()  # theoretical arrival time of the next request

    def acquire(self, n: float = 1) -> float:
        """Block until ``n`` tokens are available; return the seconds waited.

        The tokens are reserved at once, so the wait is the caller's alone:
        later callers queue behind it rather than competing with it.
        """
        if self.rate <= 0 or n <= 0:
            return 0.0
        tolerance = (self.burst - 1) / self.rate
        with self._lock:
            now = self._clock()
            tat = max(self._tat, now)
            wait = max(0.0, tat - tolerance - now)
            self._tat = tat + n / self.rate
        if wait > 0:
            self._sleep(wait)
        return wait

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate}, burst={self.burst})"
