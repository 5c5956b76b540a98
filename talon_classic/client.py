"""The Talon.One Integration API client: HTTP only, with limits and retries.

* One :class:`requests.Session` (yours, if you pass one: proxies and
  certificates stay yours) sending ``Authorization: ApiKey-v1 <key>``, a JSON
  content type and ``User-Agent: talon-classic/<version>``; connect and read
  timeouts; a connection pool as large as the concurrency, without urllib3
  retries (the retries are ours, each through the rate limiter).
* Every request, retries included, takes a token from one shared
  :class:`~talon_classic.ratelimit.TokenBucket` (60 requests/s by default).
* Retries (tenacity): 409, 429, 5xx except 501/505, timeouts and broken
  connections, with exponential backoff and full jitter (base 0.5 s, cap
  30 s, 8 attempts), waiting at least what ``Retry-After`` asks.
* Outcomes are typed: delivered, :class:`RejectedError` (400/404/422 and
  other 4xx, the server's message kept), :class:`AuthError` (401/403, stops a run) and
  :class:`RetriesExhausted`.
* A bulk request rejected with 400 is split until the bad profiles are
  isolated; all the others are still delivered.
* :meth:`Client.dry_run` swaps the transport for :class:`DryRunAdapter`, so a
  dry run prints exactly the requests a real run would send.

The API key is never in a ``repr``, a log line or an exception: only
:func:`redact_key`'s ``****abcd`` is shown.
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
from talon_classic.jsonio import dumps, dumps_bytes, loads
from talon_classic.ratelimit import TokenBucket
from talon_classic.settings import redact

log = logging.getLogger("talon_classic.client")

MAX_BULK = 1000
RETRY_STATUSES = frozenset({409, 429} | {s for s in range(500, 600) if s not in (501, 505)})
AUTH_STATUSES = frozenset({401, 403})
BULK_PATH = "/v2/customer_profiles"
AUTHPING_PATH = "/v2/authping"


def redact_key(key: str | None) -> str:
    """What may be shown of an API key: ``****`` and, for keys of 12+ characters, the last four.

    ``<unset>`` when there is no key. Enough to tell two keys apart in a log or a dry run, never enough to use one.
    """
    return redact(key)


class _Retryable(Exception):
    """One failed attempt that may succeed later."""

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


def _server_error(response: requests.Response) -> tuple[str, list[dict[str, Any]]]:
    """The ``message`` and ``errors`` of a Talon.One error body, whatever arrived."""
    try:
        body = loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or response.reason or "error"
        errors = body.get("errors") if isinstance(body.get("errors"), list) else []
        return str(message), [e for e in errors if isinstance(e, dict)]
    return f"{response.status_code} {response.reason or ''}".strip(), []



def _reason(exc: Exception) -> str:
    """A short, one-line why of a transport error (``Connection refused``, ``Read timed out``).

    urllib3 wraps the cause (``MaxRetryError(reason=NewConnectionError(...))``)
    and prefixes it with an object repr; keep only the human part.
    """
    cause: Any = exc.args[0] if exc.args else exc
    cause = getattr(cause, "reason", cause)
    text = " ".join(str(cause).split())
    for marker in (">: ", "): "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text[:200] or exc.__class__.__name__


@dataclass
class BulkOutcome:
    """What became of each profile of an :meth:`Client.upsert_profiles` call."""

    delivered: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], RejectedError]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], RetriesExhausted]] = field(default_factory=list)


class ClientStats:
    """Thread-safe request counters of one client.

    ``requests`` counts attempts (retries included), ``retries`` the retries,
    ``by_status`` each attempt's HTTP status, or the exception's class name
    (``ReadTimeout``, ``ConnectionError``...) when no answer came.
    """

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

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy: ``{"requests", "retries", "by_status"}``, safe to read while others count."""
        with self._lock:
            return {"requests": self.requests, "retries": self.retries,
                    "by_status": dict(self.by_status)}

    def __repr__(self) -> str:
        snap = self.snapshot()
        return f"ClientStats(requests={snap['requests']}, retries={snap['retries']}, by_status={snap['by_status']})"


def _fit_pool(session: requests.Session, concurrency: int) -> None:
    """Give ``session`` a pool of at least ``concurrency`` connections and no urllib3 retries.

    Only plain :class:`HTTPAdapter` mounts are replaced (the default ones, or
    a caller's own whose pool is too small or which retries): an adapter of
    another kind (a dry run, a test double, a custom transport) is left alone.
    Retries are the client's, so that each one goes through the rate limiter.
    """
    for prefix in ("https://", "http://"):
        current = session.get_adapter(prefix)
        if type(current) is not HTTPAdapter:
            continue
        size = max(concurrency, getattr(current, "_pool_maxsize", 0))
        session.mount(prefix, HTTPAdapter(pool_connections=size, pool_maxsize=size, max_retries=0))


class Client:
    """Talks to one Talon.One deployment with one Integration API key.

    Thread-safe: many threads may share one client (and so its connection
    pool, rate limiter and stats). ``sleep`` and ``clock`` are injectable so
    retries and limiting can be tested without waiting.
    """

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
        self._shown_key = redact_key(api_key)
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        _fit_pool(self.session, max(1, concurrency))
        # Sent with each request rather than set on the session, so a caller's
        # own session never carries the key to other hosts.
        self._headers = {
            "Authorization": f"ApiKey-v1 {api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"talon-classic/{__version__}",
        }
        self.timeout = (connect_timeout, read_timeout)
        self.max_attempts = max(1, max_attempts)
        self.limiter = limiter if limiter is not None else TokenBucket(
            rate_limit, clock=clock, sleep=sleep)
        self._sleep = sleep
        self._jitter = wait_random_exponential(multiplier=backoff_base, max=backoff_cap)
        self.stats = ClientStats()

    @classmethod
    def from_settings(cls, settings: Any, **kw: Any) -> Client:
        """A client for validated :class:`~talon_classic.settings.Settings`.

        Raises :class:`~talon_classic.exceptions.SettingsError` when the key
        or the application domain is missing.
        """
        settings.require_delivery()
        return cls(settings.application_domain, settings.api_key, **kw)

    @classmethod
    def dry_run(cls, base_url: str, api_key: str, out: IO[str], **kw: Any) -> Client:
        """A client that writes each request as a JSON line to ``out`` instead of sending.

        The same request-building code runs; only the transport differs. The
        rate limit is off (nothing reaches Talon.One), whatever ``kw`` says.
        """
        session = requests.Session()
        adapter = DryRunAdapter(out)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        kw["rate_limit"] = 0
        kw.pop("limiter", None)
        client = cls(base_url, api_key, session=session, **kw)
        client._own_session = True
        return client

    def __repr__(self) -> str:
        return f"Client({self.base_url!r}, auth='ApiKey-v1 {self._shown_key}')"

    def close(self) -> None:
        """Close the session if this client made it (a caller's session stays theirs)."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place that does HTTP -----------------------------------------
    def _wait(self, state: RetryCallState) -> float:
        """Full-jitter backoff, but never less than what ``Retry-After`` asked."""
        wait = self._jitter(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            wait = max(wait, exc.retry_after)
        return wait

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.count(retry=True)
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("Talon.One: %s (attempt %d/%d); retrying in %.2fs", exc,
                    state.attempt_number, self.max_attempts, wait)

    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 body: Any = None) -> requests.Response:
        """Send one request with limiting and retries; return a 2xx answer or raise.

        Raises AuthError (401/403), RejectedError (other 4xx, the server's
        message and errors kept), RetriesExhausted, or DeliveryError for any
        other answer (501, 505, a redirect).
        """
        url = self.base_url + path
        data = dumps_bytes(body) if body is not None else None

        def attempt() -> requests.Response:
            self.limiter.acquire()
            try:
                # Redirects are not followed: requests would drop the body of a
                # redirected PUT. A redirect is reported instead (see below).
                response = self.session.request(method, url, params=params, data=data,
                                                headers=self._headers, timeout=self.timeout,
                                                allow_redirects=False)
            except (requests.Timeout, requests.ConnectionError,
                    requests.exceptions.ChunkedEncodingError) as exc:
                self.stats.count(exc.__class__.__name__)
                log.debug("%s %s -> %s", method, path, exc.__class__.__name__)
                raise _Retryable(
                    f"{exc.__class__.__name__} on {method} {path} ({_reason(exc)})"
                ) from None
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
                f"gave up after {self.max_attempts} attempt{'s' if self.max_attempts > 1 else ''}: "
                f"last {exc}",
                exc.status,
            ) from None
        status = response.status_code
        if status < 300:
            return response
        if status in AUTH_STATUSES:
            raise AuthError(
                f"Talon.One rejected the API key ({status}): check the Integration API key "
                f"and the application domain in your settings",
                status,
            )
        if status < 400:
            where = response.headers.get("Location", "elsewhere")
            raise DeliveryError(
                f"{method} {path} was redirected ({status}) to {where}: set the application "
                f"domain to the deployment's own https:// address",
                status,
            )
        message, errors = _server_error(response)
        if status < 500:
            raise RejectedError(message, status, errors)
        raise DeliveryError(f"unexpected answer {status} from Talon.One: {message}", status)

    # -- the Integration API -----------------------------------------------------
    def check_auth(self) -> None:
        """``GET /v2/authping``: return if the key is accepted.

        Raises AuthError (401/403), RetriesExhausted (unreachable, or busy
        through every attempt) or DeliveryError for any other answer, which
        usually means the application domain is not a Talon.One deployment.
        """
        try:
            self._request("GET", AUTHPING_PATH)
        except RejectedError as exc:
            raise DeliveryError(
                f"GET {AUTHPING_PATH} answered {exc.status} ({exc}): is {self.base_url} "
                f"a Talon.One deployment?",
                exc.status,
            ) from None

    def upsert_profile(self, integration_id: str, attributes: dict[str, Any],
                       run_rule_engine: bool = False) -> dict[str, Any]:
        """``PUT /v2/customer_profiles/{id}``: create or update one profile.

        The id is URL-encoded whole (``a/b c`` -> ``a%2Fb%20c``). Returns the
        server's JSON answer (effects etc.), ``{}`` if it sent none. A
        RejectedError names the ``integration_id``.
        """
        params = {"runRuleEngine": "true"} if run_rule_engine else None
        try:
            response = self._request("PUT", f"{BULK_PATH}/{quote(integration_id, safe='')}",
                                     params, {"attributes": attributes})
        except RejectedError as exc:
            exc.integration_id = integration_id
            raise
        try:
            answer = loads(response.content)
        except ValueError:
            return {}
        return answer if isinstance(answer, dict) else {}

    def upsert_profiles(self, profiles: list[dict[str, Any]]) -> BulkOutcome:
        """``PUT /v2/customer_profiles?silent=yes`` in requests of at most 1000 profiles.

        Each profile is ``{"integrationId": ..., "attributes": {...}}``. A
        request rejected with 400 (or any 4xx but 404) is split, using the
        error's ``source.pointer`` when it names items, else in halves, until
        each bad profile is alone; every other profile is still delivered. A
        404 rejects its whole request (the endpoint, not a profile, is wrong).
        AuthError and DeliveryError (e.g. 501) propagate and stop the call.
        """
        outcome = BulkOutcome()
        for start in range(0, len(profiles), MAX_BULK):
            self._bulk(profiles[start:start + MAX_BULK], outcome)
        return outcome

    def _bulk(self, chunk: list[dict[str, Any]], outcome: BulkOutcome) -> None:
        """Deliver one chunk, splitting on rejection (a work stack, in input order)."""
        todo = [chunk]
        while todo:
            part = todo.pop()
            if not part:
                continue
            try:
                self._request("PUT", BULK_PATH, {"silent": "yes"}, {"customerProfiles": part})
            except RejectedError as exc:
                if len(part) == 1 or exc.status == 404:
                    for profile in part:
                        outcome.rejected.append((profile, _for_profile(exc, profile)))
                    continue
                pointed = _pointed_indexes(exc, len(part))
                if pointed:
                    for index in sorted(pointed):
                        outcome.rejected.append(
                            (part[index], _for_profile(exc, part[index], pointed[index])))
                    todo.append([p for i, p in enumerate(part) if i not in pointed])
                else:
                    mid = len(part) // 2
                    todo += [part[mid:], part[:mid]]
            except RetriesExhausted as exc:
                outcome.failed += [(p, exc) for p in part]
            else:
                outcome.delivered += part


def _pointed_indexes(exc: RejectedError, size: int) -> dict[int, list[dict[str, Any]]]:
    """The items a 400's ``source.pointer`` names (``/customerProfiles/3/...``), with their errors."""
    found: dict[int, list[dict[str, Any]]] = {}
    for err in exc.errors:
        source = err.get("source") if isinstance(err, dict) else None
        pointer = source.get("pointer") if isinstance(source, dict) else None
        parts = pointer.split("/") if isinstance(pointer, str) else []
        if len(parts) > 2 and parts[1] == "customerProfiles" and parts[2].isdigit():
            index = int(parts[2])
            if index < size:
                found.setdefault(index, []).append(err)
    return found


def _for_profile(exc: RejectedError, profile: dict[str, Any],
                 errors: list[dict[str, Any]] | None = None) -> RejectedError:
    """The rejection as it concerns one profile: its own id, and its own errors when known."""
    return RejectedError(str(exc), exc.status, errors if errors else exc.errors,
                         profile.get("integrationId"))


class DryRunAdapter(BaseAdapter):
    """A requests transport that records requests as JSONL instead of sending them.

    Each line is ``{"method", "url", "headers", "body"}`` with the key shown as
    ``ApiKey-v1 ****abcd``; lines are written whole and flushed under a lock,
    so threads never interleave. The answer is what Talon.One would give to a
    success: 200 ``{}`` for a single-profile PUT, else 204.
    """

    def __init__(self, out: IO[str]) -> None:
        super().__init__()
        self.out = out
        self._lock = threading.Lock()

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        """Write ``request`` as one JSON line and answer it without any network."""
        headers = dict(request.headers)
        auth = headers.get("Authorization", "")
        if auth:
            headers["Authorization"] = "ApiKey-v1 " + redact_key(auth.removeprefix("ApiKey-v1 "))
        body: Any = request.body
        if isinstance(body, bytes | str) and body:
            body = loads(body)
        line = dumps({"method": request.method, "url": request.url,
                      "headers": {k: headers[k] for k in ("Authorization", "Content-Type",
                                                          "User-Agent") if k in headers},
                      "body": body})
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()
        response = requests.Response()
        single = request.method == "PUT" and request.path_url.split("?")[0] != BULK_PATH
        response.status_code = 200 if single else 204
        response._content = b"{}" if single else b""
        response.headers["Content-Type"] = "application/json"
        response.request = request
        response.url = request.url or ""
        response.reason = "OK (dry run)" if single else "No Content (dry run)"
        return response

    def close(self) -> None:
        """Nothing to close."""
