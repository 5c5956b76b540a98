"""When and how long to retry a Talon.One request: one policy for both of its APIs.

The Integration API client (:mod:`talon_classic.client`) and the Management
API client (:mod:`talon_classic.management`) retry alike:

* what is retried: the answers in :data:`RETRY_STATUSES` (408, 409, 429, 5xx
  except 501/505) and the transport errors in :data:`TRANSIENT_ERRORS`
  (timeouts, broken connections); an attempt says so by raising
  :class:`Retryable` (see :func:`check_status`);
* how long to wait: exponential backoff with full jitter (tenacity's
  ``wait_random_exponential``), but never less than the ``Retry-After`` the
  server asked for (:func:`parse_retry_after`), itself capped;
* what is said: one warning a retry, its text passed through the client's
  scrubber first, and after the last attempt one
  :class:`~talon_classic.exceptions.RetriesExhausted` raised outside any
  ``except`` block, so it chains to no attempt (whose exceptions may quote a
  header).

Each client builds one :class:`RetryPolicy` and sends every request through
:meth:`RetryPolicy.run`; what an attempt is (the rate limiter, the HTTP call,
the counting) stays the client's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from talon_classic.exceptions import RetriesExhausted

#: The answers worth another attempt: timeout, conflict (Talon.One's "busy
#: with this profile"), too many requests, and server errors except "not
#: implemented" and "HTTP version not supported", which no retry can change.
RETRY_STATUSES = frozenset({408, 409, 429} | {s for s in range(500, 600) if s not in (501, 505)})
#: The transport errors worth another attempt; any other cannot get better.
TRANSIENT_ERRORS: tuple[type[requests.RequestException], ...] = (
    requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)

R = TypeVar("R")


class Retryable(Exception):
    """One failed attempt that may succeed later; its text never quotes a header.

    ``status`` is the HTTP status when an answer came, ``retry_after`` the
    seconds its ``Retry-After`` asked for (None when it asked nothing usable).
    """

    def __init__(self, what: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds, or an HTTP date from now.

    None when absent or unusable (then plain backoff applies). A date in the
    past means 0. ``now`` is injectable for tests.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and seconds != float("inf") else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def check_status(response: requests.Response, what: str,
                 statuses: frozenset[int] = RETRY_STATUSES) -> requests.Response:
    """``response``, unless its status is one of ``statuses``: then :class:`Retryable`.

    ``what`` names the request (``GET /v1/attributes``) in the attempt's text;
    the answer's ``Retry-After`` goes with it.
    """
    status = response.status_code
    if status in statuses:
        raise Retryable(f"{status} on {what}", status,
                        parse_retry_after(response.headers.get("Retry-After")))
    return response


def _unchanged(text: str) -> str:
    return text


class RetryPolicy:
    """Runs an attempt until it succeeds, fails for good, or the attempts run out.

    ``max_attempts`` counts the first one (at least 1); the backoff is full
    jitter over ``backoff_base * 2**n`` capped at ``backoff_cap`` seconds,
    raised to the ``Retry-After`` asked, which is capped at
    ``retry_after_cap``. Each retry is logged on ``log`` as a warning that
    starts with ``label``, its text through ``scrub``, and ``on_retry`` is
    called (for a client's counters). ``gave_up`` starts the text of the
    :class:`~talon_classic.exceptions.RetriesExhausted` raised at the end.
    ``sleep`` is injectable so tests need not wait.

    One policy serves many threads at once: tenacity keeps the state of a
    run in thread-local storage, so the one :class:`~tenacity.Retrying` is
    built here, not for every request (an attempt must not itself run the
    same policy).
    """

    def __init__(
        self,
        *,
        max_attempts: int,
        backoff_base: float,
        backoff_cap: float,
        retry_after_cap: float,
        sleep: Callable[[float], None],
        log: logging.Logger,
        label: str,
        gave_up: str = "",
        scrub: Callable[[str], str] = _unchanged,
        on_retry: Callable[[], None] | None = None,
    ) -> None:
        self.max_attempts = max(1, max_attempts)
        self.retry_after_cap = max(0.0, retry_after_cap)
        self._jitter = wait_random_exponential(multiplier=backoff_base, max=backoff_cap)
        self._log = log
        self._label = label
        self._gave_up = gave_up
        self._scrub = scrub
        self._on_retry = on_retry
        self._retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self.wait,
            retry=retry_if_exception_type(Retryable),
            sleep=sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )

    def wait(self, state: RetryCallState) -> float:
        """Full-jitter backoff, but never less than what ``Retry-After`` asked (capped)."""
        wait = self._jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, Retryable) and exc.retry_after is not None:
            wait = max(wait, min(exc.retry_after, self.retry_after_cap))
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        if self._on_retry is not None:
            self._on_retry()
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        self._log.warning("%s: %s (attempt %d/%d); retrying in %.2fs", self._label,
                          self._scrub(str(exc)), state.attempt_number, self.max_attempts, wait)

    def run(self, attempt: Callable[[], R]) -> R:
        """``attempt()``'s result, retried while it raises :class:`Retryable`.

        Anything else it raises propagates at once. When the last attempt was
        retryable too, raises RetriesExhausted (with that attempt's status).
        """
        try:
            return self._retrying(attempt)
        except Retryable as exc:
            plural = "s" if self.max_attempts > 1 else ""
            exhausted = RetriesExhausted(
                f"{self._gave_up}gave up after {self.max_attempts} attempt{plural}: last {exc}",
                exc.status,
            )
        raise exhausted  # outside the except: no chain to the attempts
