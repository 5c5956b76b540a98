"""What goes wrong on purpose: injected failures, hangs, drops, latency and the rate limit.

A request to an emulated API takes at most one injected fault, chosen in
this order: ``fail_next`` (else ``fail_rate``, random from ``seed``), then
``hang_next``, then ``drop_next``; so ``fail_next=1, drop_next=1`` fails the
next request and drops the one after. The rate limit comes after the fault
(429 with ``Retry-After``), and ``latency_ms`` is added to every answer.

A hung request takes its place in the rate limit when it arrives, then
sleeps, then is handled as if nothing happened: its write lands at the end
of the hang, after the client has long given up and perhaps written newer
values, as a request Talon.One finishes late does. ``hang_apply=False``
answers 504 at the end of the hang instead, handling nothing.

Each API has its own rate limit (a token bucket per config field): the
Integration API ``rate_limit``, the Management API ``management_rate_limit``.
"""

from __future__ import annotations

import enum
import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from werkzeug.http import HTTP_STATUS_CODES

from talon_classic.emulator.config import EmulatorConfig
from talon_classic.emulator.problems import Problem

log = logging.getLogger(__package__)  # one logger for the emulator: talon_classic.emulator


class Fault(enum.Enum):
    """The kinds of injected fault."""

    #: Answered with ``fail_status`` instead of being handled.
    FAIL = "fail"
    #: Sleeps ``hang_seconds``, then is handled normally (or, without ``hang_apply``, 504).
    HANG = "hang"
    #: Handled (a write is stored), then the connection breaks mid-answer.
    DROP = "drop"


class Drop(Exception):
    """Raised mid-body so waitress closes the connection (a dropped answer)."""


class _QuietDrops(logging.Filter):
    """Keep waitress from logging a traceback for a connection dropped on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], Drop))


logging.getLogger("waitress").addFilter(_QuietDrops())


class TokenBucket:
    """``rate`` requests per second, bursts of one second's worth; 0 = no limit. Thread-safe."""

    def __init__(self, rate: float) -> None:
        self._lock = threading.Lock()
        self.set_rate(rate)

    def set_rate(self, rate: float) -> None:
        """A new rate, with a full bucket."""
        with self._lock:
            self.rate = rate
            self._tokens = max(1.0, rate)
            self._refilled = time.monotonic()

    def take(self) -> int:
        """Take one token; 0 when there was one, else the whole seconds until there is."""
        with self._lock:
            rate = self.rate
            if rate <= 0:
                return 0
            now = time.monotonic()
            self._tokens = min(max(1.0, rate), self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0
            return max(1, math.ceil((1 - self._tokens) / rate))


class Faults:
    """The fault injection and rate limit of one emulator."""

    #: The config fields that are rate limits, one token bucket each.
    RATE_FIELDS = ("rate_limit", "management_rate_limit")

    def __init__(self, config: EmulatorConfig) -> None:
        self._random = random.Random(config.seed)
        self._buckets = {name: TokenBucket(getattr(config, name)) for name in self.RATE_FIELDS}

    def reconfigure(self, config: EmulatorConfig, changed: set[str]) -> None:
        """Follow a config change: a new ``seed`` restarts the random faults, a new
        rate limit starts with a full bucket."""
        if "seed" in changed:
            self._random = random.Random(config.seed)
        for name in changed & set(self.RATE_FIELDS):
            self._buckets[name].set_rate(getattr(config, name))

    def pick(self, config: EmulatorConfig) -> tuple[Fault | None, EmulatorConfig]:
        """The fault the next request takes, if any, and the config with its count taken.

        The caller holds the lock guarding ``config``, so two requests never
        take the same counted fault.
        """
        if config.fail_next > 0:
            return Fault.FAIL, replace(config, fail_next=config.fail_next - 1)
        if config.fail_rate > 0 and self._random.random() < config.fail_rate:
            return Fault.FAIL, config
        if config.hang_next > 0:
            return Fault.HANG, replace(config, hang_next=config.hang_next - 1)
        if config.drop_next > 0:
            return Fault.DROP, replace(config, drop_next=config.drop_next - 1)
        return None, config

    def inflict(self, fault: Fault | None, config: EmulatorConfig, what: str,
                rate_field: str) -> None:
        """The fault, then the rate limit ``rate_field``; raises the error answer.

        Fail raises the ``fail_status`` answer; a hang takes its token first
        (it arrived now), then sleeps, then lets the request be handled (or
        raises 504 without ``hang_apply``). ``what`` names the request. A drop
        is carried out later, by :func:`dropped_answer`, once the request has
        been handled.
        """
        if fault is Fault.FAIL:
            log.info("injected %d for %s", config.fail_status, what)
            raise Problem(config.fail_status, "Injected failure",
                          details="a fault injected by the emulator (fail_next / fail_rate)")
        self.limit(rate_field)
        if fault is not Fault.HANG:
            return
        log.info("hanging %s for %.1fs%s", what, config.hang_seconds,
                 "" if config.hang_apply else ", then answering 504")
        time.sleep(config.hang_seconds)
        if not config.hang_apply:
            raise Problem(504, "Gateway timeout", details="a hang injected by the emulator "
                          "(hang_next with hang_apply false): nothing was handled")
        log.info("handling %s at the end of its hang", what)

    def limit(self, rate_field: str = "rate_limit") -> None:
        """Raise 429 with ``Retry-After`` when the request is above the rate limit
        ``rate_field`` (a config field name)."""
        bucket = self._buckets[rate_field]
        wait = bucket.take()
        if wait:
            raise Problem(429, "Too many requests", details=f"above the rate limit of "
                          f"{bucket.rate:g} requests per second; retry after {wait}s",
                          headers={"Retry-After": str(wait)})


def latency(config: EmulatorConfig) -> None:
    """Sleep the configured ``latency_ms``."""
    if config.latency_ms:
        time.sleep(config.latency_ms / 1000)


def dropped_answer(status: int, body: bytes,
                   start_response: Any) -> tuple[int, Iterator[bytes]]:
    """Announce more body than is sent, send half, then break the connection.

    The request was handled (a write is stored), as when a real answer is
    lost on the way back: the client must retry, and the retry is harmless
    because upserts are idempotent. A 204 has no body to cut short, so a
    dropped 204 is sent as a 200. Returns the status sent and the body.
    """
    body = body or b'{"dropped": "on purpose by the emulator"}'
    status = 200 if status == 204 else status
    start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
                   [("Content-Type", "application/json"),
                    ("Content-Length", str(len(body) + 100))])

    def chunks() -> Iterator[bytes]:
        yield body[: max(1, len(body) // 2)]
        raise Drop("connection dropped on purpose by the emulator")
    return status, chunks()
