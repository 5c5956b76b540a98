"""The Talon.One Management API client: the few reads talon-classic needs, politely.

The Management API is not the Integration API: another key (``Authorization:
ManagementKey-v1 <key>``, created in the Campaign Manager under Account >
Tools > Management API keys, with access to each endpoint it will call), the
same deployment host, and at most 3 requests per second. It is meant for
back-office reads, so talon-classic reads once and caches
(:mod:`talon_classic.schemacache`).

* :meth:`ManagementClient.attributes`: every customer-profile attribute,
  custom and built-in, as a :class:`~talon_classic.schema.Schema`.
* :meth:`ManagementClient.audiences` and
  :meth:`ManagementClient.audience_memberships`: every audience, every
  member of one.

Lists are read in pages of 1000 (``pageSize``/``skip``) until ``hasMore``
says no, ``totalResultSize`` is reached or (when the answer has neither) a
page comes back short; always at an empty page. A server that does not let
a list end (the same page again, more than :data:`MAX_PAGES` pages) is a
one-line :class:`~talon_classic.exceptions.DeliveryError`. Answers are read
by :func:`talon_classic.jsonio.loads`: however deep, one line. Every request, retries included, takes a token from a
:class:`~talon_classic.ratelimit.TokenBucket` (3 per second), and is retried
by the Integration API client's policy (:class:`~talon_classic.retry.RetryPolicy`:
exponential backoff with full jitter, at least the ``Retry-After`` asked,
capped): 408, 409, 429, 5xx except 501/505, timeouts and broken connections. 401 and 403 are one
:class:`~talon_classic.exceptions.AuthError` line saying what to do.

The key is never in a ``repr``, a log line or an exception.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from talon_classic import __version__
from talon_classic.client import scrub
from talon_classic.exceptions import (
    AuthError,
    BadLine,
    DeliveryError,
    RejectedError,
    SettingsError,
)
from talon_classic.jsonio import loads
from talon_classic.ratelimit import TokenBucket
from talon_classic.retry import TRANSIENT_ERRORS, Retryable, RetryPolicy, check_status
from talon_classic.schema import ENTITY, Schema
from talon_classic.settings import ENV_MANAGEMENT_KEY, Settings, redact

log = logging.getLogger("talon_classic.management")

PAGE_SIZE = 1000
#: Most pages one list is read in (100 million items at 1000 a page): past it, the server
#: is taken to be answering ``hasMore: true`` without end.
MAX_PAGES = 100_000
RATE_LIMIT = 3.0
ATTRIBUTES_PATH = "/v1/attributes"
AUDIENCES_PATH = "/v1/audiences"
KEYS_PAGE = "Campaign Manager > Account > Tools > Management API keys"


def _check_key(key: str) -> None:
    """Refuse a key that cannot be sent as a header, without ever showing it.

    Settings refuse such keys when they load; this guards direct callers, since
    ``requests`` would quote the whole header in its error.
    """
    if not key:
        raise SettingsError("managementKey: must not be empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in key) or key != key.strip():
        raise SettingsError(
            "managementKey: has surrounding whitespace or a control character (not shown): "
            "copy the key again"
        )


class ManagementClient:
    """Reads one Talon.One deployment's Management API with one Management API key.

    ``base_url`` is the deployment (``https://mycompany.talon.one``, as the
    settings' ``applicationDomain``). ``sleep`` and ``clock`` are injectable
    so paging, limiting and retries can be tested without waiting.
    """

    def __init__(
        self,
        base_url: str,
        management_key: str,
        *,
        session: requests.Session | None = None,
        rate_limit: float = RATE_LIMIT,
        page_size: int = PAGE_SIZE,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        retry_after_cap: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        limiter: TokenBucket | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        _check_key(management_key)
        self.base_url = base_url.rstrip("/")
        self._shown_key = redact(management_key)
        #: Text the client did not write (an error answer's message) loses every trace of
        #: the key before it is raised or logged, as the Integration API client does.
        self._scrub: Callable[[str], str] = lambda text: scrub(text, management_key)
        self._own_session = session is None
        self.session = session if session is not None else requests.Session()
        # Sent with each request, never set on the session: a caller's session
        # must not carry the key to other hosts.
        self._headers = {
            "Authorization": f"ManagementKey-v1 {management_key}",
            "Accept": "application/json",
            "User-Agent": f"talon-classic/{__version__}",
        }
        self.page_size = max(1, page_size)
        self.max_pages = max(1, max_pages)
        self.timeout = (connect_timeout, read_timeout)
        self.limiter = limiter if limiter is not None else TokenBucket(
            rate_limit, clock=clock, sleep=sleep)
        self.retry_policy = RetryPolicy(
            max_attempts=max_attempts, backoff_base=backoff_base, backoff_cap=backoff_cap,
            retry_after_cap=retry_after_cap, sleep=sleep, log=log,
            label="Talon.One Management API", gave_up="Management API: ",
            scrub=self._scrub)
        self.max_attempts = self.retry_policy.max_attempts
        self.retry_after_cap = retry_after_cap
        #: Requests sent (attempts, retries included): for summaries and tests.
        self.requests = 0

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> ManagementClient:
        """A client for :class:`~talon_classic.settings.Settings` with a management key and domain."""
        if not settings.management_key:
            raise SettingsError(
                f"settings: managementKey: missing (set it in the settings file, "
                f"{ENV_MANAGEMENT_KEY} or --management-key)"
            )
        if not settings.application_domain:
            raise SettingsError(
                "settings: applicationDomain: missing (the Management API is on the same "
                "deployment as the Integration API)"
            )
        return cls(settings.application_domain, settings.management_key, **kw)

    def __repr__(self) -> str:
        return f"ManagementClient({self.base_url!r}, auth='ManagementKey-v1 {self._shown_key}')"

    def close(self) -> None:
        """Close the session if this client made it (a caller's session stays theirs)."""
        if self._own_session:
            self.session.close()

    def __enter__(self) -> ManagementClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one place that does HTTP -----------------------------------------
    def get(self, path: str, params: dict[str, str], needs: str) -> Any:
        """``GET path`` with limiting and retries; the decoded JSON of a 2xx answer.

        ``needs`` names the access the key must have, for the 401/403 message
        (``"attributes"``). Raises AuthError, RejectedError (other 4xx),
        RetriesExhausted or DeliveryError (anything else, a body not JSON).
        """
        url = self.base_url + path

        def attempt() -> requests.Response:
            self.limiter.acquire()
            self.requests += 1
            try:
                response = self.session.get(url, params=params, headers=self._headers,
                                            timeout=self.timeout, allow_redirects=False)
            except TRANSIENT_ERRORS as exc:
                log.debug("GET %s -> %s", path, exc.__class__.__name__)
                raise Retryable(f"{exc.__class__.__name__} on GET {path}") from None
            except requests.RequestException as exc:  # its text could quote a header
                raise DeliveryError(f"GET {path} could not be sent ({exc.__class__.__name__})"
                                    ) from None
            log.debug("GET %s -> %s", path, response.status_code)
            return check_status(response, f"GET {path}")

        response = self.retry_policy.run(attempt)
        status = response.status_code
        if status in (401, 403):
            raise AuthError(_auth_message(status, needs), status)
        if 300 <= status < 400:
            raise DeliveryError(
                f"GET {path} was redirected ({status}): set the application domain to the "
                f"deployment's own https:// address",
                status,
            )
        if 400 <= status < 500:
            raise RejectedError(self._scrub(_error_message(response)), status)
        if status >= 300:
            message = self._scrub(_error_message(response))
            raise DeliveryError(
                f"unexpected answer {status} from the Management API: {message}", status)
        try:
            return loads(response.content)
        except BadLine as exc:
            raise DeliveryError(
                f"GET {path} answered {status} without JSON: is {self.base_url} a Talon.One "
                f"deployment? ({exc})",
                status,
            ) from None

    def pages(self, path: str, params: dict[str, str] | None = None,
              needs: str = "it") -> Iterator[dict[str, Any]]:
        """Every item of a paged list endpoint, page after page (``pageSize``, ``skip``).

        Stops when ``hasMore`` is false (when the answer has it), else when
        ``skip`` reaches ``totalResultSize`` (when it has that), else at a
        short page; always at an empty page, and once ``totalResultSize``
        items were read whatever ``hasMore`` says. A page that repeats the
        one before, or more than ``max_pages`` pages, raises DeliveryError:
        the list would never end, and what was read cannot be trusted whole.
        """
        skip = 0
        previous: list[Any] | None = None
        for number in range(1, self.max_pages + 1):
            query = {**(params or {}), "pageSize": str(self.page_size), "skip": str(skip)}
            body = self.get(path, query, needs)
            data = body.get("data") if isinstance(body, dict) else None
            if not isinstance(data, list):
                raise DeliveryError(
                    f"GET {path} answered without a data list: is {self.base_url} a Talon.One "
                    f"deployment?"
                )
            if not data:
                return
            if data == previous:
                raise DeliveryError(
                    f"GET {path} answered the same page again at skip={skip} (the server "
                    f"ignores skip): stopped reading, the list is not complete"
                )
            previous = data
            yield from data
            skip += len(data)
            more = body.get("hasMore")
            total = body.get("totalResultSize")
            if type(total) is int and skip >= total:
                if more is True:
                    log.warning("GET %s said hasMore after all %d items of its "
                                "totalResultSize: stopped there", path, total)
                return
            if isinstance(more, bool):
                if not more:
                    return
            elif type(total) is not int and len(data) < self.page_size:
                return
            if number == self.max_pages:
                raise DeliveryError(
                    f"GET {path} still had more after {number:,} pages ({skip:,} items): "
                    f"stopped reading, the list is not complete"
                )

    # -- the reads ----------------------------------------------------------------
    def attributes(self, entity: str = ENTITY) -> Schema:
        """Every attribute of ``entity`` (custom and built-in) as a :class:`Schema`.

        Items of another entity, should the server send any, are left out.
        Raises SchemaError when an item has no usable name or type.
        """
        items = list(self.pages(ATTRIBUTES_PATH, {"entity": entity}, "attributes"))
        return Schema.from_document({"totalResultSize": len(items), "data": items},
                                    f"{self.base_url}{ATTRIBUTES_PATH}", entity=entity)

    def audiences(self) -> Iterator[dict[str, Any]]:
        """``GET /v1/audiences``: every audience of the account (``id``, ``name``, ...)."""
        return self.pages(AUDIENCES_PATH, None, "audiences")

    def audience_memberships(self, audience_id: int) -> Iterator[dict[str, Any]]:
        """``GET /v1/audiences/{id}/memberships``: every member profile (``integrationId``, ...).

        An unknown audience raises RejectedError (404).
        """
        return self.pages(f"{AUDIENCES_PATH}/{int(audience_id)}/memberships", None, "audiences")


def _auth_message(status: int, needs: str) -> str:
    if status == 401:
        return (
            f"the management key was refused (401): create one in {KEYS_PAGE} with read access "
            f"to {needs}, and check the application domain"
        )
    return (
        f"the management key may not read {needs} (403): in {KEYS_PAGE}, create a key that "
        f"includes the {needs} endpoints"
    )


def _error_message(response: requests.Response) -> str:
    """The server's ``message`` (Talon.One's error body), else the status line; one line."""
    try:
        body = loads(response.content)
    except BadLine:
        body = None
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message) if message else f"{response.status_code} {response.reason or ''}".strip()
    return " ".join(text.split())[:300]
