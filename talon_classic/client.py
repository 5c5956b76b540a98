"""The Talon.One Integration API client: HTTP only, with limits and retries.

* One :class:`requests.Session` (yours, if you pass one: proxies and
  certificates stay yours) sending ``Authorization: ApiKey-v1 <key>``, a JSON
  content type and ``User-Agent: talon-classic/<version>``; connect and read
  timeouts; a connection pool as large as the concurrency, without urllib3
  retries (the retries are ours, each through the rate limiter).
* Every request, retries included, takes a token from one shared
  :class:`~talon_classic.ratelimit.TokenBucket` (60 requests/s by default).
* Retries (:class:`~talon_classic.retry.RetryPolicy`, shared with the
  Management API client): 408, 409, 429, 5xx except 501/505, timeouts and
  broken connections, with exponential backoff and full jitter (base 0.5 s,
  cap 30 s, 8 attempts), waiting at least what ``Retry-After`` asks, up to
  ``max_retry_after`` (120 s).
* Outcomes are typed: delivered, :class:`RejectedError` (400/404/422 and
  other 4xx, the server's message kept), :class:`AuthError` (401/403, stops a run),
  :class:`RetriesExhausted`, and :class:`DeliveryError` for a request that
  could not even be sent (``InvalidHeader`` and the like) or an answer that is
  none of these.
* A request with an attempt that timed out or lost its connection after it
  was sent may still be carried out by Talon.One later, after a retry that
  succeeded: such profiles are reported in :attr:`BulkOutcome.uncertain`
  (and through ``upsert_profile(uncertain=...)``), so the caller can send
  their newest values once more when that attempt can no longer land.
* A bulk request rejected with 400 is split until the bad profiles are
  isolated; all the others are still delivered. An error's ``source.pointer``
  shortcuts the split only when the item it points at really holds what it names.
* An integrationId made only of dots is sent as ``%2E`` each, so no HTTP layer
  can read it as a ``.``/``..`` path segment and send the request elsewhere.
* :meth:`Client.dry_run` swaps the transport for :class:`DryRunAdapter`, so a
  dry run prints exactly the requests a real run would send.
* Audiences: :meth:`Client.create_audience` (a 409 is
  :class:`~talon_classic.exceptions.AudienceExists`, never retried),
  ``rename_audience``, ``delete_audience``, ``clear_audience`` (a 404 is
  :class:`~talon_classic.exceptions.AudienceNotFound`) and
  :meth:`Client.update_memberships`, which goes through the same splitting
  loop as profile upserts. Creating and deleting an audience must not be
  carried out twice, so an attempt that may have been carried out (its
  answer lost, or a 5xx other than 503) is sent again at most once, and
  not at all for a create without an integrationId
  (:class:`~talon_classic.exceptions.OutcomeUnknown`); a 409 or 404 answering
  such a resend is read as the earlier attempt's work.

The API key is never in a ``repr``, a log line or an exception: only
:func:`redact_key`'s ``****abcd`` is shown. A key that no HTTP header can
carry (a control or non-ASCII character) is refused when the client is built,
and whatever text the client takes from a foreign exception or an error
answer goes through :func:`scrub` first, in case it quotes the header.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import BaseAdapter, HTTPAdapter

from talon_classic import __version__
from talon_classic.audiences import Audience, MembershipAction, MembershipOutcome
from talon_classic.exceptions import (
    AudienceExists,
    AudienceNotFound,
    AuthError,
    DeliveryError,
    OutcomeUnknown,
    RejectedError,
    RetriesExhausted,
)
from talon_classic.jsonio import dumps, dumps_bytes, loads
from talon_classic.ratelimit import TokenBucket
from talon_classic.retry import (
    RETRY_STATUSES,
    TRANSIENT_ERRORS,
    Retryable,
    RetryPolicy,
    check_status,
)
from talon_classic.retry import parse_retry_after as parse_retry_after
from talon_classic.settings import Settings, check_secret, redact

log = logging.getLogger("talon_classic.client")

MAX_BULK = 1000
AUTH_STATUSES = frozenset({401, 403})
BULK_PATH = "/v2/customer_profiles"
AUTHPING_PATH = "/v2/authping"
AUDIENCES_PATH = "/v2/audiences"
MEMBERSHIPS_PATH = "/v2/customer_audiences"
#: The longest ``Retry-After`` honoured by default, in seconds (urllib3's
#: ``Retry.DEFAULT_BACKOFF_MAX``). urllib3 itself caps ``Retry-After`` at six
#: hours, a general library's choice; a batch run would rather spend its
#: attempts and leave the rest to ``--resume`` than stall for hours.
DEFAULT_MAX_RETRY_AFTER = 120.0
_SHORTEST_FRAGMENT = 4
#: On create, 409 means "this audience exists": an answer, not a busy server.
_CREATE_RETRY_STATUSES = RETRY_STATUSES - {409}
#: The one server error that says the request was not carried out (the others may
#: come from a gateway after Talon.One did the work).
_NOT_HANDLED = 503

T = TypeVar("T")
#: What a split strategy makes of a rejected part: the items rejected for good, and
#: the parts to send again, in the order they are to be sent.
Split = tuple[list[tuple[T, RejectedError]], list[list[T]]]


def redact_key(key: str | None) -> str:
    """What may be shown of an API key: ``****`` and, for keys of 12+ characters, the last four.

    ``<unset>`` when there is no key. Enough to tell two keys apart in a log or a dry run, never enough to use one.
    """
    return redact(key)


def scrub(text: str, secret: str | None) -> str:
    """``text`` with every trace of ``secret`` replaced by :func:`redact_key`'s form.

    The one filter for text the client did not write itself (a foreign
    exception's message, an error answer's message) before it is raised,
    logged or returned: ``requests`` quotes a header it refuses, and a proxy
    may echo one. Replaced: the whole ``ApiKey-v1 <key>`` value, the key
    itself, the key as a ``repr`` or JSON escapes it, and every run of
    ``_SHORTEST_FRAGMENT`` or more characters of the key between control,
    quote or backslash characters (what survives of it when a message is
    re-escaped or its whitespace collapsed).
    """
    if not secret or not text:
        return text
    shown = redact_key(secret)
    text = text.replace(f"ApiKey-v1 {secret}", f"ApiKey-v1 {shown}")
    for form in (secret, repr(secret)[1:-1], dumps(secret)[1:-1]):
        text = text.replace(form, shown)
    pieces = "".join(ch if " " < ch <= "~" and ch not in "\\'\"" else "\n" for ch in secret)
    for piece in sorted(set(pieces.split()), key=len, reverse=True):
        if len(piece) >= _SHORTEST_FRAGMENT and piece not in shown:
            text = text.replace(piece, "****")
    return text


def _scrub_errors(errors: list[dict[str, Any]], secret: str | None) -> list[dict[str, Any]]:
    """An error answer's ``errors`` with :func:`scrub` applied to every string in them."""
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value, secret)
        if isinstance(value, dict):
            return {key: clean(item) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return [clean(err) for err in errors]


def _server_error(response: requests.Response) -> tuple[str, list[dict[str, Any]]]:
    """The ``message`` and ``errors`` of a Talon.One error body, whatever arrived."""
    try:
        body = loads(response.content)
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("message") or response.reason or "error"
        errors = body.get("errors")
        found = errors if isinstance(errors, list) else []
        return str(message), [e for e in found if isinstance(e, dict)]
    return f"{response.status_code} {response.reason or ''}".strip(), []


def _reason(exc: BaseException, secret: str | None = None) -> str:
    """A short, one-line, scrubbed why of a transport error (``Connection refused``).

    urllib3 wraps the cause (``MaxRetryError(reason=NewConnectionError(...))``)
    and prefixes it with an object repr; keep only the human part. The text is
    scrubbed of ``secret`` before anything else is done to it.
    """
    cause: Any = exc
    if isinstance(exc, requests.RequestException) and exc.args:
        cause = getattr(exc.args[0], "reason", exc.args[0])
    text = " ".join(scrub(str(cause), secret).split())
    for marker in (">: ", "): "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text[:200] or exc.__class__.__name__


@dataclass
class BulkOutcome:
    """What became of each profile of an :meth:`Client.upsert_profiles` call.

    ``uncertain``: integrationId -> wall-clock time (``time.time()``) the
    last attempt of its request started that timed out or lost its
    connection after sending, whatever came of the request in the end: that
    attempt may still be carried out by Talon.One, later than anything sent
    after it.
    """

    delivered: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], RejectedError]] = field(default_factory=list)
    failed: list[tuple[dict[str, Any], RetriesExhausted]] = field(default_factory=list)
    uncertain: dict[str, float] = field(default_factory=dict)


def may_have_been_carried_out(exc: BaseException) -> bool:
    """Could Talon.One have carried out the request of an attempt that failed with ``exc``?

    :func:`may_have_landed`, and also when an answer had begun and was cut
    short (``ChunkedEncodingError``): then it was carried out for certain.
    What matters to a request that must not be carried out twice.
    """
    return (isinstance(exc, requests.exceptions.ChunkedEncodingError)
            or may_have_landed(exc))


@dataclass
class Unrepeatable:
    """How a request that must not be carried out twice is retried (create, delete).

    ``resend``: how many times it may be sent again after an attempt that
    may have been carried out; ``doubtful`` counts those attempts: a lost
    answer (:func:`may_have_been_carried_out`), or a retryable server error
    other than 503. Once ``doubtful`` exceeds ``resend``, the request is not
    sent again: :class:`~talon_classic.exceptions.OutcomeUnknown`. Anything
    that says the request was not carried out (a refused connection, 429,
    503) is retried as usual.
    """

    resend: int
    doubtful: int = 0

    def doubt(self) -> bool:
        """Count one doubtful attempt; True when the request may still be sent again."""
        self.doubtful += 1
        return self.doubtful <= self.resend


def may_have_landed(exc: BaseException) -> bool:
    """Could the request of an attempt that failed with ``exc`` still be carried out?

    Yes for a read timeout and for a connection lost before any answer; no
    when the connection could not even be made, and no when an answer had
    begun (Talon.One answers after carrying a request out).
    """
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.ChunkedEncodingError):
        return False
    if isinstance(exc, requests.Timeout):
        return True
    if isinstance(exc, requests.ConnectionError):
        cause: Any = exc.args[0] if exc.args else None
        cause = getattr(cause, "reason", cause)
        return not isinstance(cause, urllib3.exceptions.NewConnectionError
                              | urllib3.exceptions.ConnectTimeoutError)
    return False


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

    ``api_key`` goes through :func:`~talon_classic.settings.check_secret`: a
    key with surrounding whitespace, a control character (a pasted newline)
    or a non-ASCII character raises :class:`~talon_classic.exceptions.SettingsError`
    here, naming only ``api_key``, instead of failing at the first request
    with an HTTP library's error that quotes the header. An empty key is
    allowed (a dry run needs none). ``max_retry_after`` caps the wait a
    ``Retry-After`` can ask for (see :data:`DEFAULT_MAX_RETRY_AFTER`).
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
        max_retry_after: float = DEFAULT_MAX_RETRY_AFTER,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        limiter: TokenBucket | None = None,
    ) -> None:
        if api_key:
            check_secret(api_key, "api_key", "Client")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
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
        self.limiter = limiter if limiter is not None else TokenBucket(
            rate_limit, clock=clock, sleep=sleep)
        self.stats = ClientStats()
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts, backoff_base=backoff_base, backoff_cap=backoff_cap,
            retry_after_cap=max_retry_after, sleep=sleep, log=log, label="Talon.One",
            scrub=self._scrub, on_retry=lambda: self.stats.count(retry=True))
        self.max_attempts = self.retry_policy.max_attempts
        self.max_retry_after = self.retry_policy.retry_after_cap

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Client:
        """A client for validated :class:`~talon_classic.settings.Settings`.

        Raises :class:`~talon_classic.exceptions.SettingsError` when the key
        or the application domain is missing.
        """
        settings.require_delivery()
        assert settings.application_domain and settings.api_key  # require_delivery checked
        return cls(settings.application_domain, settings.api_key, **kw)

    @classmethod
    def dry_run(cls, base_url: str, api_key: str, out: TextSink, **kw: Any) -> Client:
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
    def _scrub(self, text: str) -> str:
        """:func:`scrub` with this client's key."""
        return scrub(text, self._api_key)

    def _send(self, method: str, url: str, params: dict[str, str] | None,
              data: bytes | None, path: str) -> requests.Response:
        """One HTTP exchange, as ``Session.request`` does it, keeping ``path`` as given.

        ``requests`` decodes ``%2E`` back to ``.`` when it prepares a URL (a dot
        is "unreserved"); a path built by :func:`_id_segment` with encoded dots
        is put back after preparation, so ``..`` never reaches the wire as a
        dot segment that urllib3 or a server would resolve.
        """
        prepared = self.session.prepare_request(requests.Request(
            method, url, params=params, data=data, headers=self._headers))
        if "%2E" in path and prepared.url:
            parts = urlsplit(prepared.url)
            prepared.url = urlunsplit(parts._replace(path=urlsplit(url).path))
        settings = self.session.merge_environment_settings(prepared.url or url, {}, None, None,
                                                           None)
        # Redirects are not followed: requests would drop the body of a
        # redirected PUT. A redirect is reported instead (see _request).
        return self.session.send(prepared, timeout=self.timeout, allow_redirects=False,
                                 **settings)

    def _failure(self, exc: BaseException, method: str, path: str) -> Exception:
        """What a transport error becomes: a retryable attempt, or a DeliveryError.

        Timeouts and broken connections are retried. Anything else (``InvalidHeader``,
        ``InvalidURL``, a value Python's HTTP client cannot encode) cannot get better
        and becomes a DeliveryError. Either way only the class name and the
        scrubbed reason are kept: the caller raises the result outside its
        ``except`` block, so the original (which may quote the ``Authorization``
        header) is neither its ``__cause__`` nor its ``__context__``.
        """
        name = exc.__class__.__name__
        self.stats.count(name)
        log.debug("%s %s -> %s", method, path, name)
        reason = _reason(exc, self._api_key)
        if isinstance(exc, TRANSIENT_ERRORS):
            return Retryable(f"{name} on {method} {path} ({reason})")
        return DeliveryError(
            f"{name} on {method} {path} ({reason}): the request could not be sent; "
            "check the API key and the application domain in your settings"
        )

    def _request(self, method: str, path: str, params: dict[str, str] | None = None,
                 body: Any = None, uncertain: list[float] | None = None, *,
                 retry_statuses: frozenset[int] = RETRY_STATUSES,
                 unrepeatable: Unrepeatable | None = None) -> requests.Response:
        """Send one request with limiting and retries; return a 2xx answer or raise.

        Raises AuthError (401/403), RejectedError (other 4xx, the server's
        message and errors kept), RetriesExhausted, or DeliveryError for any
        other answer (501, 505, a redirect). ``retry_statuses`` are retried
        (an endpoint where one of them is a real answer leaves it out). ``uncertain`` gets the start time
        (``time.time()``) of each attempt that may still land (:func:`may_have_landed`).
        ``unrepeatable`` bounds the resends of a request that must not be carried out
        twice, and counts its doubtful attempts (raising OutcomeUnknown past its bound).
        """
        url = self.base_url + path
        data = dumps_bytes(body) if body is not None else None

        def attempt() -> requests.Response:
            self.limiter.acquire()
            failure: Exception | None = None
            started = time.time()
            try:
                response = self._send(method, url, params, data, path)
            except (requests.RequestException, ValueError) as exc:
                # ValueError: UnicodeEncodeError and http.client's "Invalid header
                # value", whose messages and arguments hold the header.
                if uncertain is not None and may_have_landed(exc):
                    uncertain.append(started)
                failure = self._failure(exc, method, path)
                if (unrepeatable is not None and isinstance(failure, Retryable)
                        and may_have_been_carried_out(exc) and not unrepeatable.doubt()):
                    failure = OutcomeUnknown(str(failure))
            if failure is not None:  # raised here, outside the except: no chain to the original
                raise failure
            status = response.status_code
            self.stats.count(status)
            log.debug("%s %s -> %s", method, path, status)
            if (unrepeatable is not None and status in retry_statuses and status >= 500
                    and status != _NOT_HANDLED and not unrepeatable.doubt()):
                raise OutcomeUnknown(f"{status} on {method} {path}", status)
            return check_status(response, f"{method} {path}", retry_statuses)

        response = self.retry_policy.run(attempt)
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
            where = self._scrub(response.headers.get("Location", "elsewhere"))
            raise DeliveryError(
                f"{method} {path} was redirected ({status}) to {where}: set the application "
                f"domain to the deployment's own https:// address",
                status,
            )
        message, errors = _server_error(response)
        message, errors = self._scrub(message), _scrub_errors(errors, self._api_key)
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
                       run_rule_engine: bool = False,
                       uncertain: list[float] | None = None) -> dict[str, Any]:
        """``PUT /v2/customer_profiles/{id}``: create or update one profile.

        The id is URL-encoded whole (``a/b c`` -> ``a%2Fb%20c``; ``..`` ->
        ``%2E%2E``, see :func:`_id_segment`). Returns the
        server's JSON answer (effects etc.), ``{}`` if it sent none. A
        RejectedError names the ``integration_id``. ``uncertain`` gets the
        start time of each attempt that may still land (see :class:`BulkOutcome`),
        whatever the outcome.
        """
        params = {"runRuleEngine": "true"} if run_rule_engine else None
        try:
            response = self._request("PUT", f"{BULK_PATH}/{_id_segment(integration_id)}",
                                     params, {"attributes": attributes}, uncertain)
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
        """Deliver one chunk of profiles, splitting on rejection (see :meth:`_deliver_split`)."""
        def uncertain(part: list[dict[str, Any]], since: float) -> None:
            outcome.uncertain.update(dict.fromkeys([p["integrationId"] for p in part], since))

        self._deliver_split(
            chunk,
            lambda part, marks: self._request("PUT", BULK_PATH, {"silent": "yes"},
                                              {"customerProfiles": part}, marks),
            _split_profiles, outcome.delivered, outcome.rejected, outcome.failed, uncertain)

    def _deliver_split(self, chunk: list[T], send: Callable[[list[T], list[float]], object],
                       split: Callable[[RejectedError, list[T]], Split[T]],
                       delivered: list[T], rejected: list[tuple[T, RejectedError]],
                       failed: list[tuple[T, RetriesExhausted]],
                       on_uncertain: Callable[[list[T], float], None] | None = None) -> None:
        """Send ``chunk`` in one request; on a rejection let ``split`` decide, until all is told.

        The one splitting loop of every bulk endpoint (profiles, memberships):
        a work stack, so parts go out in input order. ``split`` returns the
        items rejected for good and the parts to send again. Items of a part
        whose retries ran out are ``failed``; AuthError and DeliveryError
        propagate and stop the call.
        """
        todo = [chunk]
        while todo:
            part = todo.pop()
            if not part:
                continue
            marks: list[float] = []
            try:
                send(part, marks)
            except RejectedError as exc:
                bad, again = split(exc, part)
                rejected += bad
                todo += reversed(again)
            except RetriesExhausted as exc:
                failed += [(item, exc) for item in part]
            else:
                delivered += part
            finally:
                if marks and on_uncertain is not None:
                    on_uncertain(part, max(marks))

    # -- audiences ----------------------------------------------------------------
    def create_audience(self, name: str, *, integration: str | None = None,
                        integration_id: str | None = None,
                        description: str | None = None) -> Audience:
        """``POST /v2/audiences``: a new audience (201), as an :class:`Audience`.

        ``integration`` is the platform the audience comes from (``segment``),
        ``integration_id`` that platform's own id for it (1-1000 characters).
        Raises :class:`AudienceExists` (409, never retried) when an audience
        with that ``integration`` and ``integration_id`` exists, with Talon.One's
        message; RejectedError (400) for a bad field.

        A create is not idempotent. Refused connections, 429 and 503 are
        retried as usual, but an attempt that may have been carried out (its
        answer lost, a 5xx other than 503; see :class:`Unrepeatable`) is sent
        again only with an ``integration_id``, which Talon.One refuses to
        create twice, and only once: a 409 answering that resend is the
        audience the lost attempt created, raised as AudienceExists with
        ``ours`` True (only the Management API can tell its id). Without an
        ``integration_id``, or when the resend does not tell either, raises
        :class:`OutcomeUnknown`: the audience may have been created.
        """
        body: dict[str, Any] = {"name": name}
        for key, value in (("description", description), ("integration", integration),
                           ("integrationId", integration_id)):
            if value is not None:
                body[key] = value
        guard = Unrepeatable(resend=0 if integration_id is None else 1)
        failure: DeliveryError
        try:
            response = self._request("POST", AUDIENCES_PATH, None, body,
                                     retry_statuses=_CREATE_RETRY_STATUSES, unrepeatable=guard)
        except RejectedError as exc:
            if exc.status != 409:
                raise
            if guard.doubtful and integration_id is not None:
                log.info("POST %s: 409 after an attempt whose answer was lost: that attempt "
                         "created the audience", AUDIENCES_PATH)
                failure = AudienceExists(
                    f"the audience was created by an attempt whose answer was lost (409 on "
                    f"the resend: {exc})", integration, integration_id, exc.errors, ours=True)
            else:
                failure = AudienceExists(f"the audience exists (409): {exc}", integration,
                                         integration_id, exc.errors)
        except RetriesExhausted as exc:
            if not guard.doubtful:
                raise
            if integration_id is None:
                how = ("a create without an integrationId is not sent again, as that could "
                       "create a second audience")
            else:
                how = (f"creating it again with integrationId {integration_id!r} is safe: a "
                       f"409 then says it exists")
            failure = OutcomeUnknown(f"the audience may have been created: an attempt may "
                                     f"have been carried out ({exc}); {how}", exc.status)
        else:
            return Audience.from_api(_json(response), f"POST {AUDIENCES_PATH}")
        raise failure  # outside the except: no chain to the attempts

    def rename_audience(self, audience_id: int, name: str) -> Audience:
        """``PUT /v2/audiences/{id}``: the renamed :class:`Audience`; AudienceNotFound (404)."""
        path = _audience_path(audience_id)
        with _not_found(audience_id):
            response = self._request("PUT", path, None, {"name": name})
        return Audience.from_api(_json(response), f"PUT {path}")

    def delete_audience(self, audience_id: int) -> None:
        """``DELETE /v2/audiences/{id}``: the audience and its memberships go; AudienceNotFound (404).

        An attempt that may have been carried out (its answer lost, a 5xx
        other than 503) is sent again once: a 404 answering that resend means
        the lost attempt deleted it, and the call returns. When the resend
        does not tell either, raises :class:`OutcomeUnknown`: it may be gone.
        """
        path = _audience_path(audience_id)
        guard = Unrepeatable(resend=1)
        try:
            with _not_found(audience_id):
                self._request("DELETE", path, unrepeatable=guard)
        except AudienceNotFound:
            if not guard.doubtful:
                raise
            log.info("DELETE %s: 404 after an attempt whose answer was lost: that attempt "
                     "deleted it", path)
            return
        except RetriesExhausted as exc:
            if not guard.doubtful:
                raise
            failure = OutcomeUnknown(f"audience {audience_id} may have been deleted: an attempt "
                                     f"may have been carried out ({exc})", exc.status)
        else:
            return
        raise failure  # outside the except: no chain to the attempts

    def clear_audience(self, audience_id: int) -> None:
        """``DELETE /v2/audiences/{id}/memberships``: the audience is emptied; AudienceNotFound (404)."""
        with _not_found(audience_id):
            self._request("DELETE", _audience_path(audience_id) + "/memberships")

    def update_memberships(self, actions: Iterable[MembershipAction]) -> MembershipOutcome:
        """``POST /v2/customer_audiences`` in requests of at most 1000 actions, in order.

        Rate limit, retries and splitting are those of :meth:`upsert_profiles`:
        a request rejected with 400 is split (by the error's pointer when it
        names an action, checked; else in halves) until each bad action is
        alone, and every other action is still delivered. A 404 means an
        audience does not exist: a request for several audiences is split by
        audience, and the actions of the missing one are rejected with
        :class:`AudienceNotFound` (later requests do not send them again; see
        :attr:`MembershipOutcome.unknown_audiences`). AuthError and
        DeliveryError propagate and stop the call.
        """
        outcome = MembershipOutcome()
        missing: dict[int, AudienceNotFound] = {}

        def send(part: list[MembershipAction], marks: list[float]) -> None:
            self._request("POST", MEMBERSHIPS_PATH, None,
                          {"data": [action.as_json() for action in part]}, marks)

        def split(exc: RejectedError, part: list[MembershipAction]) -> Split[MembershipAction]:
            if exc.status == 404:
                groups: dict[int, list[MembershipAction]] = {}
                for action in part:
                    groups.setdefault(action.audience_id, []).append(action)
                if len(groups) > 1:
                    return [], list(groups.values())
                audience_id = part[0].audience_id
                missing[audience_id] = _unknown_audience(exc, audience_id)
                return [(a, _for_action(missing[audience_id], a)) for a in part], []
            return _split_actions(exc, part)

        batch: list[MembershipAction] = []

        def flush() -> None:
            known = [a for a in batch if a.audience_id not in missing]
            outcome.rejected += [(a, _for_action(missing[a.audience_id], a))
                                 for a in batch if a.audience_id in missing]
            self._deliver_split(known, send, split, outcome.delivered, outcome.rejected,
                                outcome.failed)
            batch.clear()

        for action in actions:
            batch.append(action)
            if len(batch) == MAX_BULK:
                flush()
        if batch:
            flush()
        return outcome


def _audience_path(audience_id: int) -> str:
    """``/v2/audiences/{id}``; the id must be a whole number (not a bool, not text)."""
    if isinstance(audience_id, bool) or not isinstance(audience_id, int):
        raise TypeError(f"an audience id is an integer, not {type(audience_id).__name__}")
    return f"{AUDIENCES_PATH}/{audience_id}"


def _unknown_audience(exc: RejectedError, audience_id: int) -> AudienceNotFound:
    """A 404 as the AudienceNotFound it is, Talon.One's message kept."""
    return AudienceNotFound(f"audience {audience_id} does not exist in this Talon.One "
                            f"deployment (404: {exc})", audience_id, exc.errors)


@contextlib.contextmanager
def _not_found(audience_id: int) -> Iterator[None]:
    """Turn a 404 from an audience's own endpoint into :class:`AudienceNotFound`."""
    try:
        yield
    except RejectedError as exc:
        if exc.status != 404:
            raise
        raise _unknown_audience(exc, audience_id) from None


def _json(response: requests.Response) -> Any:
    """A response's JSON body, or None when it has none."""
    try:
        return loads(response.content)
    except ValueError:
        return None


def _id_segment(integration_id: str) -> str:
    """An integrationId as one path segment: all of it percent-encoded, ``/`` included.

    :func:`~urllib.parse.quote` leaves dots alone, and an id made only of
    dots (``.``, ``..``) would then be a dot segment, which urllib3 (and any
    server or proxy following RFC 3986) resolves: ``..`` would become
    ``PUT /v2/`` and ``.`` the bulk endpoint. Such an id has each dot sent as
    ``%2E`` (``...`` too, though it is no dot segment, so that one rule covers
    them all); a dot beside anything else stays as it is (``a.b``, ``.a``).
    """
    quoted = quote(integration_id, safe="")
    if quoted and quoted.strip(".") == "":
        return "%2E" * len(quoted)
    return quoted


def _pointer_tokens(pointer: str) -> list[str] | None:
    """A JSON pointer's tokens, unescaped (``~1`` is ``/``, ``~0`` is ``~``); None if not one."""
    if not pointer.startswith("/"):
        return None
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _mentions(text: str, integration_id: str) -> bool:
    """Whether ``text`` names ``integration_id`` as a whole (``u1`` is not named by ``u10``)."""
    return re.search(rf"(?<!\w){re.escape(integration_id)}(?!\w)", text) is not None


def _pointer_holds(err: dict[str, Any], index: int, tokens: list[str], part: list[dict[str, Any]],
                   message: str) -> bool:
    """Whether the item an error's pointer names really is the item at fault.

    Whether Talon.One numbers a bulk request's items from 0 is not documented,
    so the index alone is not trusted: the pointer must go past the item into
    something the item has (``/customerProfiles/N/attributes/NAME`` with NAME
    among item N's attributes, ``/customerProfiles/N/integrationId``), and
    when the error's text names an integrationId of the request, that must be
    item N's. ``/customerProfiles/N`` or ``.../attributes`` alone name nothing
    particular to one item, so they are not trusted either.
    """
    item = part[index]
    rest = tokens[2:]
    if rest == ["integrationId"]:
        if not isinstance(item.get("integrationId"), str):
            return False
    elif len(rest) == 2 and rest[0] == "attributes":
        attributes = item.get("attributes")
        if not isinstance(attributes, dict) or rest[1] not in attributes:
            return False
    else:
        return False
    text = " ".join([message, *(str(err.get(k, "")) for k in ("title", "details"))])
    ids = {p.get("integrationId") for p in part}
    named = {i for i in ids if isinstance(i, str) and i and i in text and _mentions(text, i)}
    return not named or item.get("integrationId") in named


def _pointed_indexes(exc: RejectedError, part: list[T], container: str = "customerProfiles",
                     holds: Callable[[dict[str, Any], int, list[str], list[T], str], bool] | None
                     = None) -> dict[int, list[dict[str, Any]]]:
    """The items a 400's ``source.pointer`` names (``/customerProfiles/3/...``), with their errors.

    ``container`` is the body's list (``customerProfiles``, ``data``) and
    ``holds`` the check that the item named really is at fault
    (:func:`_pointer_holds` for profiles). Empty (so the caller splits in
    halves) unless every error that points into the list points at an item
    that passes the check: one doubtful pointer makes them all doubtful, and
    halving is always right, only slower.
    """
    check: Callable[[dict[str, Any], int, list[str], list[Any], str], bool] = (
        holds if holds is not None else _pointer_holds)
    found: dict[int, list[dict[str, Any]]] = {}
    for err in exc.errors:
        source = err.get("source") if isinstance(err, dict) else None
        pointer = source.get("pointer") if isinstance(source, dict) else None
        tokens = _pointer_tokens(pointer) if isinstance(pointer, str) else None
        if not tokens or tokens[0] != container:
            continue
        number = tokens[1] if len(tokens) > 1 else ""
        canonical = number.isascii() and number.isdigit() and str(int(number)) == number
        if not canonical or int(number) >= len(part):
            return {}
        index = int(number)
        if not check(err, index, tokens, part, str(exc)):
            return {}
        found.setdefault(index, []).append(err)
    return found


def _for_profile(exc: RejectedError, profile: dict[str, Any],
                 errors: list[dict[str, Any]] | None = None) -> RejectedError:
    """The rejection as it concerns one profile: its own id, and its own errors when known."""
    return RejectedError(str(exc), exc.status, errors if errors else exc.errors,
                         profile.get("integrationId"))


def _split_profiles(exc: RejectedError, part: list[dict[str, Any]]) -> Split[dict[str, Any]]:
    """How a rejected bulk profile request is split.

    A lone profile, or a 404 (the endpoint, not a profile, is wrong), is
    rejected whole; profiles a checked pointer names are rejected and the
    rest sent again; otherwise the part is halved.
    """
    if len(part) == 1 or exc.status == 404:
        return [(profile, _for_profile(exc, profile)) for profile in part], []
    pointed = _pointed_indexes(exc, part)
    if pointed:
        bad = [(part[i], _for_profile(exc, part[i], pointed[i])) for i in sorted(pointed)]
        return bad, [[p for i, p in enumerate(part) if i not in pointed]]
    mid = len(part) // 2
    return [], [part[:mid], part[mid:]]


#: The fields of a membership action a pointer may go into.
_ACTION_FIELDS = frozenset({"action", "profileIntegrationId", "audienceId"})


def _action_holds(err: dict[str, Any], index: int, tokens: list[str],
                  part: list[MembershipAction], message: str) -> bool:
    """Whether the action an error's pointer names (``/data/N/profileIntegrationId``) is at fault.

    Every action has the same three fields, so a pointer into one proves
    nothing by itself (the index might be numbered from 1): it is trusted
    only when the error's text names that action's profile, and no other
    profile of the request.
    """
    if tokens[2:] not in ([name] for name in _ACTION_FIELDS):
        return False
    text = " ".join([message, *(str(err.get(k, "")) for k in ("title", "details"))])
    ids = {a.integration_id for a in part}
    named = {i for i in ids if i and i in text and _mentions(text, i)}
    return named == {part[index].integration_id}


def _split_actions(exc: RejectedError, part: list[MembershipAction]) -> Split[MembershipAction]:
    """How a membership request rejected with a 4xx other than 404 is split (as profiles are)."""
    if len(part) == 1:
        return [(part[0], _for_action(exc, part[0]))], []
    pointed = _pointed_indexes(exc, part, "data", _action_holds)
    if pointed:
        bad = [(part[i], _for_action(exc, part[i], pointed[i])) for i in sorted(pointed)]
        return bad, [[a for i, a in enumerate(part) if i not in pointed]]
    mid = len(part) // 2
    return [], [part[:mid], part[mid:]]


def _for_action(exc: RejectedError, action: MembershipAction,
                errors: list[dict[str, Any]] | None = None) -> RejectedError:
    """The rejection as it concerns one action: its profile, and its own errors when known."""
    if isinstance(exc, AudienceNotFound):
        return AudienceNotFound(str(exc), exc.audience_id, exc.errors, action.integration_id)
    return RejectedError(str(exc), exc.status, errors if errors else exc.errors,
                         action.integration_id)


class TextSink(Protocol):
    """Where a dry run writes its requests: a text file, stdout, or anything with these two."""

    def write(self, text: str, /) -> int:
        """Write ``text``."""

    def flush(self) -> None:
        """Make what was written visible."""


class DryRunAdapter(BaseAdapter):
    """A requests transport that records requests as JSONL instead of sending them.

    Each line is ``{"method", "url", "headers", "body"}`` with the key shown as
    ``ApiKey-v1 ****abcd``, the body the JSON text the client sent (its requests' bodies
    are :func:`~talon_classic.jsonio.dumps_bytes` text, so it is written as it is); lines are written whole and flushed under a lock,
    so threads never interleave. The answer is what Talon.One would give to a
    success: 200 ``{}`` for a single-profile PUT, else 204.
    """

    def __init__(self, out: TextSink) -> None:
        super().__init__()
        self.out = out
        self._lock = threading.Lock()

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Write ``request`` as one JSON line and answer it without any network.

        The transport options (``timeout``, ``verify``...) are accepted and ignored.
        """
        headers = dict(request.headers)
        auth = headers.get("Authorization", "")
        if isinstance(auth, bytes):
            auth = auth.decode("latin-1")
        if auth:
            headers["Authorization"] = "ApiKey-v1 " + redact_key(auth.removeprefix("ApiKey-v1 "))
        line = dumps({"method": request.method, "url": request.url,
                      "headers": {k: headers[k] for k in ("Authorization", "Content-Type",
                                                          "User-Agent") if k in headers}})
        # The body is JSON text this client wrote (compact, valid UTF-8): it goes into
        # the line as it is, byte for byte what parsing and writing it again would give,
        # without doing that for every request of a dry run (a third of its time).
        body = request.body
        if isinstance(body, bytes) and body:
            body = body.decode("utf-8")
        line = line[:-1] + ',"body":' + (body if isinstance(body, str) and body else "null") + "}"
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
