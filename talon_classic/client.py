"""The Talon.One Integration API client: HTTP only, with limits and retries.

* One :class:`requests.Session` (yours, if you pass one: proxies and
  certificates stay yours) with ``Authorization: ApiKey-v1 <key>``, a JSON
  content type and ``User-Agent: talon-classic/<version>``; connect and read
  timeouts; a connection pool as large as the concurrency.
* Every request, retries included, takes a token from one shared
  :class:`~talon_classic.ratelimit.TokenBucket` (60 requests/s by default).
* Retries (tenacity): 409, 429, 5xx except 501/505, timeouts and broken
  connections, with exponential backoff and full jitter (base 0.5 s, cap
  30 s, 8 attempts), waiting at least what ``Retry-After`` asks.
* Outcomes are typed: delivered, :class:`RejectedError` (400/404/422, the
  server's message kept), :class:`AuthError` (401/403, stops a run) and
  :class:`RetriesExhausted`.
* A bulk request rejected with 400 is split until the bad profiles are
  isolated; all the others are still delivered.

The API key is never in a ``repr``, a log line or an exception.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import IO, Any
from urllib.parse import quote

import requests
from requests.adapters import BaseAdapter, HTTPAdapter
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from talon_classic import __version__
from talon_classic.exceptions import AuthError, DeliveryError, RejectedError, RetriesExhausted
from talon_classic.ratelimit import TokenBucket
from talon_classic.reader import dumps, dumps_bytes, loads
from talon_classic.settings import redact

log = logging.getLogger("talon_classic.client")

MAX_BULK = 1000
RETRY_STATUSES = frozenset({409, 429} | {s for s in range(500, 600) if s not in (501, 505)})
AUTH_STATUSES = frozenset({401, 403})
BULK_PATH = "/v2/customer_profiles"


class _Retryable(Exception):
    """One failed attempt that may succeed later."""

    def __init__(self, what: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(what)
        self.status = status
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: Callable[[], datetime] | None = None) -> float | None:
    """``Retry-After`` as seconds: an integer, or an HTTP date from now; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now() if now is not None else datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


def _server_error(response: requests.Response) -> tuple[str, list[dict[str, Any]]]:
    """The ``message`` and ``errors`` of a Talon.One error body, whatever arrived."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or response.reason or "error"
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return str(message), errors
    return f"{response.status_code} {response.reason or ''}".strip(), []


@dataclass
class BulkOutcome:
    """What became of each profile of an :meth:`Client.upsert_profiles` call."""

    delivered: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], RejectedError]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], RetriesExhausted]] = field(default_factory=list)


class ClientStats:
    """Thread-safe request counters of one client."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.by_status: Counter[str] = Counter()

    def count(self, status: int | str | None = None, retry: bool = False) -> None:
        """Count one attempt (with its status or error) or one retry."""
        with self._lock:
            if retry:
                self.retries += 1
            else:
                self.requests += 1
                self.by_status[str(status)] += 1


class Client:
    """Talks to one Talon.One deployment with one Integration API key."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        concurrency: int = 4,
        rate_limit: float = 60.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        limiter: TokenBucket | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._auth = f"ApiKey-v1 {api_key}"
        self._shown_key = redact(api_key)
        self._own_session = session is None
        self.session = session or requests.Session()
        if self._own_session:
            adapter = HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency,
                                  max_retries=0)
            self.session.mount("http://", adapter)
            self.session.mount("https://", adapter)
        self.headers = {
            "Authorization": self._auth,
            "Content-Type": "application/json",
            "User-Agent": f"talon-classic/{__version__}",
        }
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, max_attempts)
        self.limiter = limiter or TokenBucket(rate_limit, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._jitter = wait_random_exponential(multiplier=backoff_base, max=backoff_cap)
        self.stats = ClientStats()

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> Client:
        """A client for validated :class:`~talon_classic.settings.Settings`."""
        settings.require_delivery()
        return cls(settings.application_domain, settings.api_key, **kw)

    @classmethod
    def dry_run(cls, base_url: str, api_key: str, out: IO[str], **kw: Any) -> Client:
        """A client that writes each request as a JSON line to ``out`` instead of sending.

        The same request-building code runs; only the transport differs.
        """
        session = requests.Session()
        adapter = DryRunAdapter(out)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        kw.setdefault("rate_limit", 0)
        return cls(base_url, api_key, session=session, **kw)

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, auth='ApiKey-v1 {self._shown_key}')"

    def close(self) -> None:
        """Close the session if this client made it."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place that does HTTP -----------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        wait = self._jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.count(retry=True)
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("Talon.One: %s; retry %d/%d in %.2fs", exc, state.attempt_number,
                    self.max_attempts - 1, wait)

    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 body: Any = None) -> requests.Response:
        url = self.base_url + path
        data = dumps_bytes(body) if body is not None else None

        def attempt() -> requests.Response:
            self.limiter.acquire()
            try:
                response = self.session.request(method, url, params=params, data=data,
                                                headers=self.headers, timeout=self.timeout)
            except (requests.Timeout, requests.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                self.stats.count(exc.__class__.__name__)
                raise _Retryable(f"{exc.__class__.__name__} on {method} {path}") from None
            self.stats.count(response.status_code)
            log.debug("%s %s -> %s", method, path, response.status_code)
            if response.status_code in RETRY_STATUSES:
                raise _Retryable(
                    f"{response.status_code} on {method} {path}",
                    response.status_code,
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            return response

        retrying = Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            response = retrying(attempt)
        except _Retryable as exc:
            raise RetriesExhausted(
                f"gave up after {self.max_attempts} attempts: last {exc}", exc.status
            ) from None
        status = response.status_code
        if status < 300:
            return response
        message, errors = _server_error(response)
        if status in AUTH_STATUSES:
            raise AuthError(
                f"Talon.One rejected the API key ({status} {message}): check the Integration "
                f"API key ({self._shown_key}) and the application domain in your settings",
                status,
            )
        if 400 <= status < 500:
            raise RejectedError(message, status, errors)
        raise DeliveryError(f"unexpected answer {status} from Talon.One: {message}", status)

    # -- the Integration API -----------------------------------------------------
    def check_auth(self) -> None:
        """``GET /v2/authping``: returns if the key is accepted, else raises AuthError."""
        self._request("GET", "/v2/authping")

    def upsert_profile(self, integration_id: str, attributes: dict[str, Any],
                       run_rule_engine: bool = False) -> dict[str, Any]:
        """``PUT /v2/customer_profiles/{id}``: create or update one profile."""
        params = {"runRuleEngine": "true"} if run_rule_engine else None
        try:
            response = self._request("PUT", f"{BULK_PATH}/{quote(integration_id, safe='')}",
                                     params, {"attributes": attributes})
        except RejectedError as exc:
            exc.integration_id = integration_id
            raise
        try:
            return response.json()
        except ValueError:
            return {}

    def upsert_profiles(self, profiles: list[dict[str, Any]]) -> BulkOutcome:
        """``PUT /v2/customer_profiles?silent=yes`` in requests of at most 1000 profiles.

        Each profile is ``{"integrationId": ..., "attributes": {...}}``. A
        request rejected with 400 is split (using the error's pointer when it
        names an item, else in halves) until each bad profile is alone; every
        other profile is still delivered. AuthError propagates.
        """
        outcome = BulkOutcome()
        for start in range(0, len(profiles), MAX_BULK):
            self._bulk(profiles[start:start + MAX_BULK], outcome)
        return outcome

    def _bulk(self, chunk: list[dict[str, Any]], outcome: BulkOutcome) -> None:
        if not chunk:
            return
        try:
            self._request("PUT", BULK_PATH, {"silent": "yes"}, {"customerProfiles": chunk})
        except RejectedError as exc:
            bad = 0 if len(chunk) == 1 else _pointed_index(exc, len(chunk))
            if bad is not None:
                exc.integration_id = chunk[bad].get("integrationId")
                outcome.rejected.append((chunk[bad], exc))
                self._bulk(chunk[:bad] + chunk[bad + 1:], outcome)
                return
            mid = len(chunk) // 2
            self._bulk(chunk[:mid], outcome)
            self._bulk(chunk[mid:], outcome)
        except RetriesExhausted as exc:
            outcome.failed += [(p, exc) for p in chunk]
        else:
            outcome.delivered += chunk


def _pointed_index(exc: RejectedError, size: int) -> int | None:
    """The item a 400's ``source.pointer`` names (``/customerProfiles/3/...``), if any."""
    for err in exc.errors:
        pointer = ((err or {}).get("source") or {}).get("pointer") or ""
        parts = pointer.split("/")
        if len(parts) > 2 and parts[1] == "customerProfiles" and parts[2].isdigit():
            index = int(parts[2])
            if index < size:
                return index
    return None


class DryRunAdapter(BaseAdapter):
    """A requests transport that records requests as JSONL instead of sending them."""

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        headers = dict(request.headers)
        auth = headers.get("Authorization", "")
        if auth:
            headers["Authorization"] = "ApiKey-v1 " + redact(auth.removeprefix("ApiKey-v1 "))
        body: Any = request.body
        if isinstance(body, bytes):
            body = loads(body)
        line = dumps({"method": request.method, "url": request.url,
                      "headers": {k: headers[k] for k in ("Authorization", "Content-Type",
                                                          "User-Agent") if k in headers},
                      "body": body})
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
        response = requests.Response()
        single = request.method == "PUT" and (request.path_url.split("?")[0] != BULK_PATH)
        response.status_code = 200 if single else 204
        response._content = b"{}" if single else b""
        response.request = request
        response.url = request.url or ""
        response.reason = "OK (dry run)"
        return response

    def close(self) -> None:
        """Nothing to close."""
