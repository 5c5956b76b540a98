"""A local Talon.One Integration API, for trials, tests and benchmarks.

It answers the endpoints talon-classic uses with the real request and
response shapes (``../shared/talon-one-api.md``): ``GET /v2/authping``,
``PUT /v2/customer_profiles/{integrationId}`` and the bulk
``PUT /v2/customer_profiles``, with Talon.One's status codes and error
bodies (401, 400, 409 for concurrent updates of one profile, 429 with
``Retry-After`` above the rate limit). Faults can be injected at start or at
runtime (``POST /_emulator/config``), and ``/_emulator/...`` lets tests and
users look at what arrived without an API key.

Every ``/v2`` request goes through the same gate, in this order: the API
key (401), an injected failure (``fail_next`` first, else ``fail_rate``),
an injected hang, an injected drop, the rate limit (429), then the endpoint.
One request takes at most one injected fault, so ``fail_next=1, drop_next=1``
fails the next request and drops the one after. ``latency_ms`` is added to
every ``/v2`` answer; a write spends it while holding its profiles, which is
what makes a concurrent write of the same profile meet a 409.

It is a WSGI app (werkzeug) served by waitress; profiles live in memory or,
with ``db``, in SQLite (WAL) so they survive restarts. Audiences are
validated in requests but not modelled: ``audienceMemberships`` stays empty.
"""

from __future__ import annotations

import fnmatch
import hmac
import itertools
import logging
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

# the package's one JSON module, under the name the code below uses
from talon_classic import jsonio as json
from talon_classic.serving import WaitressServer

log = logging.getLogger("talon_classic.emulator")


class _QuietDrops(logging.Filter):
    """Keep waitress from logging a traceback for a connection we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Drop))


logging.getLogger("waitress").addFilter(_QuietDrops())

MAX_PROFILES = 1000
MAX_ID_LENGTH = 1000
#: Talon.One's attribute names (ASCII, like its Go regexp).
ATTRIBUTE_NAME = re.compile(r"[A-Za-z]\w*", re.ASCII)
REQUEST_LOG_SIZE = 100_000

_SET_FIELDS = ("attributes", "reject_ids")
_FLOAT_FIELDS = ("rate_limit", "latency_ms", "fail_rate", "hang_seconds")
_COUNT_FIELDS = ("fail_next", "hang_next", "drop_next")


def _number(name: str, value: Any, kind: type) -> Any:
    """``value`` as a non-negative ``kind``; bools and strings are refused, not guessed."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return kind(value)


def _names(name: str, value: Any) -> frozenset[str]:
    """A list or set of strings as a frozenset (a lone string is refused: it is not a list)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a list of strings, got {value!r}")
    out = frozenset(value)
    if not all(isinstance(v, str) for v in out):
        raise ValueError(f"{name} must be a list of strings")
    return out


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; every field but ``db`` can change at runtime.

    Values are checked (and lists turned into frozensets) on construction,
    so a bad runtime change is refused instead of breaking later requests.
    """

    #: The key clients send as ``Authorization: ApiKey-v1 <key>``; never shown.
    api_key: str = field(default="emulator-key", repr=False)
    #: Attribute names that "exist" (``*`` entries are shell patterns, ``consent_*``);
    #: None accepts every well-formed name.
    attributes: frozenset[str] | None = None
    #: None keeps profiles in memory; a path keeps them in SQLite (WAL), across restarts.
    db: str | None = None
    #: Requests per second over all /v2 requests; 0 = no limit. A token bucket holding
    #: ``max(1, rate_limit)`` tokens (one second's worth), so a burst of that many passes.
    rate_limit: float = 60.0
    #: Added to every /v2 answer.
    latency_ms: float = 0.0
    #: Fraction of /v2 requests answered with ``fail_status`` (random, from ``seed``).
    fail_rate: float = 0.0
    fail_status: int = 503
    #: The next N /v2 requests are answered with ``fail_status``.
    fail_next: int = 0
    #: The next N /v2 requests sleep ``hang_seconds`` before being answered normally.
    hang_next: int = 0
    hang_seconds: float = 10.0
    #: The next N /v2 requests are handled, then their connection closes mid-answer.
    drop_next: int = 0
    #: integrationIds that fail any request carrying them with 400 ("poison" profiles).
    reject_ids: frozenset[str] = frozenset()
    seed: int | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        if not isinstance(self.api_key, str) or not self.api_key:
            raise ValueError("api_key must be a non-empty string")
        if self.attributes is not None:
            put("attributes", _names("attributes", self.attributes))
        put("reject_ids", _names("reject_ids", self.reject_ids))
        if self.db is not None and not isinstance(self.db, str | os.PathLike):
            raise ValueError(f"db must be a path, got {self.db!r}")
        for name in _FLOAT_FIELDS:
            put(name, _number(name, getattr(self, name), float))
        for name in _COUNT_FIELDS:
            put(name, _number(name, getattr(self, name), int))
        if self.fail_rate > 1:
            raise ValueError(f"fail_rate must be between 0 and 1, got {self.fail_rate}")
        status = self.fail_status
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"fail_status must be an HTTP status (100-599), got {status!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")

    def public(self) -> dict[str, Any]:
        """The config as JSON-ready data, without the key (for ``/_emulator/config``)."""
        out = asdict(self)
        out.pop("api_key")
        for name in _SET_FIELDS:
            if out[name] is not None:
                out[name] = sorted(out[name])
        if out["db"] is not None:
            out["db"] = os.fspath(out["db"])
        return out


_CONFIG_FIELDS = frozenset(f.name for f in fields(EmulatorConfig))


@lru_cache(maxsize=64)
def _patterns(attributes: frozenset[str]) -> re.Pattern[str] | None:
    globs = [fnmatch.translate(a) for a in attributes if "*" in a]
    return re.compile("|".join(globs)) if globs else None


def _exists(name: str, attributes: frozenset[str]) -> bool:
    """Is ``name`` a known attribute? Entries with ``*`` are shell patterns (``consent_*``)."""
    if name in attributes:
        return True
    pattern = _patterns(attributes)
    return pattern is not None and pattern.match(name) is not None


def parse_attributes_file(path: str | os.PathLike[str]) -> frozenset[str]:
    """Attribute names from a file, for ``talon-classic emulator --attributes-file``.

    Either a JSON array of strings, or one name per line; blank lines and
    ``#`` comments (whole-line or trailing) are ignored.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{os.fspath(path)}: expected a JSON array of strings")
        return frozenset(n.strip() for n in names if n.strip())
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(line for line in lines if line)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Problem(Exception):
    """An error answer in Talon.One's shape.

    ``message`` says what is wrong (and names the item), ``title`` is the
    short kind of error, ``details`` what to do or more context, ``pointer``
    the JSON pointer into the request body (``/customerProfiles/3/attributes/x``).
    """

    def __init__(self, status: int, message: str, *, title: str = "", details: str = "",
                 pointer: str = "", parameter: str = "",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.title = title or message
        self.details = details or message
        self.pointer = pointer
        self.parameter = parameter
        self.headers = headers or {}

    def response(self) -> Response:
        source = {"pointer": self.pointer}
        if self.parameter:
            source["parameter"] = self.parameter
        body = {"message": self.message,
                "errors": [{"title": self.title, "details": self.details, "source": source}],
                "StatusCode": self.status}
        return Response(json.dumps(body), self.status, self.headers,
                        content_type="application/json")


def _bad(message: str, pointer: str = "", details: str = "", parameter: str = "") -> _Problem:
    return _Problem(400, message, title="Bad request", details=details, pointer=pointer,
                    parameter=parameter)


Items = list[tuple[str, dict[str, Any]]]


class _MemoryStore:
    """Profiles in a dict; insertion order is creation order."""

    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.next_id = 1

    def upsert(self, items: Items, snapshot: bool) -> list[dict[str, Any]]:
        """Merge each item's attributes in; with ``snapshot``, copies of the results."""
        now = _now()
        touched = []
        for iid, attrs in items:
            profile = self.profiles.get(iid)
            if profile is None:
                profile = self.profiles[iid] = {
                    "id": self.next_id, "created": now, "integrationId": iid, "attributes": {},
                }
                self.next_id += 1
            profile["attributes"].update(attrs)
            profile["lastActivity"] = now
            touched.append(profile)
        return [self._copy(p) for p in touched] if snapshot else []

    @staticmethod
    def _copy(profile: dict[str, Any]) -> dict[str, Any]:
        return {**profile, "attributes": dict(profile["attributes"])}

    def get(self, iid: str) -> dict[str, Any] | None:
        found = self.profiles.get(iid)
        return self._copy(found) if found is not None else None

    def page(self, limit: int, offset: int) -> list[dict[str, Any]]:
        chosen = itertools.islice(self.profiles.values(), offset, offset + limit)
        return [self._copy(p) for p in chosen]

    def count(self) -> int:
        return len(self.profiles)

    def clear(self) -> None:
        self.profiles.clear()
        self.next_id = 1

    def close(self) -> None:
        """Nothing to release."""


_COLUMNS = "id, integration_id, created, last_activity, attributes"


class _SqliteStore:
    """Profiles in SQLite (WAL): one transaction and one ``executemany`` per request."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "integration_id TEXT UNIQUE NOT NULL, created TEXT NOT NULL, "
            "last_activity TEXT NOT NULL, attributes TEXT NOT NULL)"
        )

    @staticmethod
    def _row(row: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": row[0], "integrationId": row[1], "created": row[2],
                "lastActivity": row[3], "attributes": json.loads(row[4])}

    def _select(self, cur: sqlite3.Cursor, ids: list[str]) -> dict[str, tuple[Any, ...]]:
        found = {}
        for start in range(0, len(ids), 500):  # well under SQLite's bound-parameter limit
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for row in cur.execute(
                    f"SELECT {_COLUMNS} FROM profiles WHERE integration_id IN ({marks})", chunk):
                found[row[1]] = row
        return found

    def upsert(self, items: Items, snapshot: bool) -> list[dict[str, Any]]:
        """Read the touched rows, merge in Python, write them back in one ``executemany``."""
        now = _now()
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            ids = list(dict.fromkeys(iid for iid, _ in items))
            existing = self._select(cur, ids)
            merged = {iid: json.loads(existing[iid][4]) if iid in existing else {} for iid in ids}
            for iid, attrs in items:
                merged[iid].update(attrs)
            cur.executemany(
                "INSERT INTO profiles (integration_id, created, last_activity, attributes) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(integration_id) DO UPDATE SET "
                "last_activity = excluded.last_activity, attributes = excluded.attributes",
                [(iid, now, now, json.dumps(merged[iid])) for iid in ids])
            rows = self._select(cur, ids) if snapshot else {}
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return [self._row(rows[iid]) for iid, _ in items] if snapshot else []

    def get(self, iid: str) -> dict[str, Any] | None:
        row = self.db.execute(f"SELECT {_COLUMNS} FROM profiles WHERE integration_id = ?",
                              (iid,)).fetchone()
        return self._row(row) if row else None

    def page(self, limit: int, offset: int) -> list[dict[str, Any]]:
        rows = self.db.execute(f"SELECT {_COLUMNS} FROM profiles ORDER BY id LIMIT ? OFFSET ?",
                               (limit, offset)).fetchall()
        return [self._row(r) for r in rows]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]

    def clear(self) -> None:
        """Delete every profile and restart ids at 1, like a fresh store."""
        self.db.execute("DELETE FROM profiles")
        self.db.execute("DELETE FROM sqlite_sequence WHERE name = 'profiles'")

    def close(self) -> None:
        self.db.close()


def _full(profile: dict[str, Any]) -> dict[str, Any]:
    """A stored profile as Talon.One's CustomerProfile object."""
    return {
        "id": profile["id"],
        "created": profile["created"],
        "integrationId": profile["integrationId"],
        "attributes": profile["attributes"],
        "accountId": 1,
        "closedSessions": 0,
        "totalSales": 0.0,
        "loyaltyMemberships": [],
        "audienceMemberships": [],
        "lastActivity": profile.get("lastActivity", profile["created"]),
    }


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status, content_type="application/json")


class _Drop(Exception):
    """Raised mid-body so waitress closes the connection (a dropped response)."""


@dataclass
class _Exchange:
    """What one /v2 request did, for the request log and the fault handling."""

    profiles: int = 0
    paused: bool = False
    drop: bool = False


class Emulator:
    """The WSGI application. Thread-safe: waitress calls it from many threads."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._store: _MemoryStore | _SqliteStore = (
            _SqliteStore(self.config.db) if self.config.db else _MemoryStore()
        )
        self._random = random.Random(self.config.seed)
        self._busy: set[str] = set()
        self._tokens = max(1.0, self.config.rate_limit)
        self._refilled = time.monotonic()
        self._status: Counter[str] = Counter()
        self._updates = 0
        self._log: deque[dict[str, Any]] = deque(maxlen=REQUEST_LOG_SIZE)
        self._url_map = Map([
            Rule("/v2/authping", endpoint="authping", methods=["GET"]),
            Rule("/v2/customer_profiles", endpoint="bulk", methods=["PUT"]),
            Rule("/v2/customer_profiles/<path:iid>", endpoint="single", methods=["PUT"]),
            Rule("/_emulator/profiles", endpoint="list", methods=["GET"]),
            Rule("/_emulator/profiles/<path:iid>", endpoint="profile", methods=["GET"]),
            Rule("/_emulator/stats", endpoint="stats", methods=["GET"]),
            Rule("/_emulator/requests", endpoint="requests", methods=["GET"]),
            Rule("/_emulator/reset", endpoint="reset", methods=["POST"]),
            Rule("/_emulator/config", endpoint="config", methods=["GET", "POST"]),
        ], strict_slashes=False)

    # -- library API -------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change config fields at runtime; lists become frozensets.

        Raises ValueError for an unknown field, a bad value, or ``db`` (the
        store is opened once, at construction).
        """
        unknown = set(changes) - _CONFIG_FIELDS
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        if "db" in changes:
            raise ValueError("db cannot change at runtime; start another emulator")
        with self._lock:
            self.config = replace(self.config, **changes)  # __post_init__ checks the values
            if "seed" in changes:
                self._random = random.Random(self.config.seed)
            if "rate_limit" in changes:
                self._tokens = max(1.0, self.config.rate_limit)
                self._refilled = time.monotonic()
        log.debug("emulator config changed: %s", ", ".join(
            name for name in sorted(changes) if name != "api_key") or "api_key")

    def profile(self, integration_id: str) -> dict[str, Any] | None:
        """``{"integrationId", "attributes"}`` of one stored profile, or None."""
        with self._store_lock:
            found = self._store.get(integration_id)
        if found is None:
            return None
        return {"integrationId": found["integrationId"], "attributes": found["attributes"]}

    def stats(self) -> dict[str, Any]:
        """``{"requests": {status: n}, "profiles": stored, "profile_updates": written}``."""
        with self._store_lock:
            profiles = self._store.count()
        with self._lock:
            return {"requests": dict(self._status), "profiles": profiles,
                    "profile_updates": self._updates}

    def reset(self) -> None:
        """Forget profiles, counters and the request log (the config stays)."""
        with self._store_lock:
            self._store.clear()
        with self._lock:
            self._status.clear()
            self._updates = 0
            self._log.clear()

    def close(self) -> None:
        """Release the store (closes the SQLite file); the app answers no more writes."""
        with self._store_lock:
            self._store.close()

    # -- WSGI ----------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        arrived = time.monotonic()
        request = Request(environ)
        adapter = self._url_map.bind_to_environ(environ)
        is_api = request.path.startswith("/v2/")
        exchange = _Exchange()
        try:
            if is_api:
                self._gate(request, exchange)
            endpoint, args = adapter.match()
            response = getattr(self, f"_on_{endpoint}")(request, exchange, **args)
        except _Problem as problem:
            response = problem.response()
        except NotFound:
            response = _Problem(404, f"no such endpoint: {request.method} {request.path}",
                                title="Not found").response()
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            response = _Problem(405, f"{request.method} is not allowed on {request.path}",
                                title="Method not allowed",
                                headers={"Allow": allowed} if allowed else None).response()
        except HTTPException as exc:  # pragma: no cover - werkzeug edge cases
            response = _Problem(exc.code or 500, exc.description or "error").response()
        if not is_api:
            return response(environ, start_response)
        if not exchange.paused:
            self._pause(exchange)
        if exchange.drop:
            return self._dropped(request, response, exchange, arrived, start_response)
        self._record(request, response.status_code, exchange, arrived)
        return response(environ, start_response)

    def _record(self, request: Request, status: int, exchange: _Exchange,
                arrived: float) -> None:
        with self._lock:
            self._status[str(status)] += 1
            self._log.append({"t": arrived, "method": request.method, "path": request.path,
                              "status": status, "profiles": exchange.profiles})
        log.debug("%s %s -> %d (%d profiles)", request.method, request.path, status,
                  exchange.profiles)

    def _dropped(self, request: Request, response: Response, exchange: _Exchange,
                 arrived: float, start_response: Any) -> Iterator[bytes]:
        """Announce more body than is sent, send half, then break the connection.

        The request was handled (a write is stored), as when a real answer
        is lost on the way back: the client must retry, and the retry is
        harmless because upserts are idempotent. A 204 has no body to cut
        short, so a dropped 204 is sent as a 200.
        """
        body = response.get_data() or b'{"dropped": "on purpose by the emulator"}'
        status = 200 if response.status_code == 204 else response.status_code
        self._record(request, status, exchange, arrived)
        log.info("dropping the connection of %s %s on purpose", request.method, request.path)
        start_response(f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body) + 100))])

        def chunks() -> Iterator[bytes]:
            yield body[: max(1, len(body) // 2)]
            raise _Drop("connection dropped on purpose by the emulator")
        return chunks()

    def _gate(self, request: Request, exchange: _Exchange) -> None:
        """Auth, then one injected fault, then the rate limit; raises the error answer."""
        header = request.headers.get("Authorization", "")
        if not hmac.compare_digest(header.encode(), f"ApiKey-v1 {self.config.api_key}".encode()):
            log.info("401 for %s %s: missing or wrong API key", request.method, request.path)
            raise _Problem(401, "Unauthorized", details="missing or invalid API key: send "
                           "'Authorization: ApiKey-v1 <key>' with the Application's key")
        fail = hang = False
        with self._lock:
            cfg = self.config
            if cfg.fail_next > 0:
                fail = True
                self.config = replace(cfg, fail_next=cfg.fail_next - 1)
            elif cfg.fail_rate > 0 and self._random.random() < cfg.fail_rate:
                fail = True
            elif cfg.hang_next > 0:
                hang = True
                self.config = replace(cfg, hang_next=cfg.hang_next - 1)
            elif cfg.drop_next > 0:
                exchange.drop = True
                self.config = replace(cfg, drop_next=cfg.drop_next - 1)
        if fail:
            log.info("injected %d for %s %s", cfg.fail_status, request.method, request.path)
            raise _Problem(cfg.fail_status, "Injected failure",
                           details="a fault injected by the emulator (fail_next / fail_rate)")
        if hang:
            log.info("hanging %s %s for %.1fs", request.method, request.path, cfg.hang_seconds)
            time.sleep(cfg.hang_seconds)
        wait = self._take_token()
        if wait:
            raise _Problem(429, "Too many requests", details=f"above the rate limit of "
                           f"{self.config.rate_limit:g} requests per second; retry after {wait}s",
                           headers={"Retry-After": str(wait)})

    def _take_token(self) -> int:
        """Take one token from the bucket; 0 when there was one, else whole seconds to wait."""
        with self._lock:
            rate = self.config.rate_limit
            if rate <= 0:
                return 0
            now = time.monotonic()
            self._tokens = min(max(1.0, rate), self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0
            return max(1, math.ceil((1 - self._tokens) / rate))

    def _pause(self, exchange: _Exchange) -> None:
        """The configured latency, once per request."""
        exchange.paused = True
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)

    # -- /v2 -------------------------------------------------------------------
    def _on_authping(self, request: Request, exchange: _Exchange) -> Response:
        return Response(status=204)

    @staticmethod
    def _body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise _bad("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object", "/")
        return body

    @staticmethod
    def _flag(request: Request, name: str, values: tuple[str, str], default: str) -> bool:
        """A query parameter that takes one of two ``values``; True for the first."""
        value = request.args.get(name, default)
        if value.lower() not in values:
            raise _bad(f"query parameter {name} must be {' or '.join(values)}, got {value!r}",
                       parameter=name)
        return value.lower() == values[0]

    def _check(self, iid: Any, attributes: Any, pointer: str) -> None:
        """One profile's id and attributes, against Talon.One's rules and the config."""
        cfg = self.config
        if not isinstance(iid, str) or not iid:
            raise _bad("integrationId must be a non-empty string", f"{pointer}/integrationId")
        if len(iid) > MAX_ID_LENGTH:
            raise _bad(f"integrationId is longer than {MAX_ID_LENGTH} characters "
                       f"({len(iid)})", f"{pointer}/integrationId")
        if iid in cfg.reject_ids:
            raise _bad(f"profile {iid!r} was rejected (reject_ids)", f"{pointer}/integrationId",
                       details=f"the emulator is told to refuse integrationId {iid!r}")
        if not isinstance(attributes, dict):
            raise _bad(f"attributes of profile {iid!r} must be an object",
                       f"{pointer}/attributes")
        for name in attributes:
            where = f"{pointer}/attributes/{name.replace('~', '~0').replace('/', '~1')}"
            if not ATTRIBUTE_NAME.fullmatch(name):
                raise _bad(f"attribute {name!r} is not a valid name (profile {iid!r})", where,
                           details=r"attribute names match ^[A-Za-z]\w*$")
            if cfg.attributes is not None and not _exists(name, cfg.attributes):
                raise _bad(f"attribute {name!r} does not exist (profile {iid!r})", where,
                           details="create it in the Campaign Manager (Attributes, entity "
                           "Customer Profile) or remove it from customAttributes")

    @staticmethod
    def _check_extras(body: dict[str, Any]) -> None:
        """``audiencesChanges`` and ``responseContent`` of a single update, when present."""
        changes = body.get("audiencesChanges")
        if changes is not None:
            if not isinstance(changes, dict) or set(changes) != {"adds", "deletes"}:
                raise _bad("audiencesChanges must be {\"adds\": [...], \"deletes\": [...]}",
                           "/audiencesChanges")
            for key in ("adds", "deletes"):
                ids = changes[key]
                if not isinstance(ids, list) or not all(
                        isinstance(i, int) and not isinstance(i, bool) for i in ids):
                    raise _bad(f"audiencesChanges.{key} must be a list of audience ids",
                               f"/audiencesChanges/{key}")
        content = body.get("responseContent")
        if content is not None and (
                not isinstance(content, list) or not all(isinstance(c, str) for c in content)):
            raise _bad("responseContent must be a list of strings", "/responseContent")

    def _write(self, items: Items, exchange: _Exchange, snapshot: bool) -> list[dict[str, Any]]:
        """Store ``items``, holding their ids (and the latency) so a concurrent write gets 409."""
        ids = {iid for iid, _ in items}
        with self._lock:
            clash = ids & self._busy
            if clash:
                shown = ", ".join(repr(i) for i in sorted(clash)[:3])
                raise _Problem(409, "Too many requests are updating this profile at the same "
                               "time", title="Conflict", details=f"profile {shown} is being "
                               "updated by another request; retry after a pause")
            self._busy |= ids
        try:
            self._pause(exchange)
            with self._store_lock:
                stored = self._store.upsert(items, snapshot)
            with self._lock:
                self._updates += len(items)
            return stored
        finally:
            with self._lock:
                self._busy -= ids

    def _on_single(self, request: Request, exchange: _Exchange, iid: str) -> Response:
        self._flag(request, "runRuleEngine", ("true", "false"), "false")
        dry = self._flag(request, "dry", ("true", "false"), "false")
        exchange.profiles = 1
        body = self._body(request)
        attributes = body.get("attributes", {})
        self._check(iid, attributes, "")
        self._check_extras(body)
        if dry:  # what the update would give, nothing stored
            with self._store_lock:
                current = self._store.get(iid)
            now = _now()
            current = current or {"id": 0, "created": now, "integrationId": iid,
                                  "attributes": {}}
            current["attributes"].update(attributes)
            profile = _full({**current, "lastActivity": now})
        else:
            profile = _full(self._write([(iid, attributes)], exchange, snapshot=True)[0])
        return _json({"customerProfile": profile, "effects": [], "createdCoupons": [],
                      "createdReferrals": [], "ruleFailureReasons": [],
                      "triggeredCampaigns": [], "awardedGiveaways": []})

    def _on_bulk(self, request: Request, exchange: _Exchange) -> Response:
        silent = self._flag(request, "silent", ("yes", "no"), "yes")
        body = self._body(request)
        items = body.get("customerProfiles")
        if not isinstance(items, list):
            raise _bad("customerProfiles must be an array", "/customerProfiles")
        exchange.profiles = len(items)  # what arrived, in the request log even when refused
        if len(items) > MAX_PROFILES:
            raise _bad(f"at most {MAX_PROFILES} profiles per request, got {len(items)}",
                       "/customerProfiles")
        batch = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _bad(f"customerProfiles[{i}] must be an object", f"/customerProfiles/{i}")
            iid, attributes = item.get("integrationId"), item.get("attributes", {})
            self._check(iid, attributes, f"/customerProfiles/{i}")
            batch.append((iid, attributes))
        stored = self._write(batch, exchange, snapshot=not silent)
        if silent:
            return Response(status=204)
        return _json({"integrationStates": [{"customerProfile": _full(p)} for p in stored]})

    # -- /_emulator ------------------------------------------------------------
    @staticmethod
    def _window(request: Request, default_limit: int) -> tuple[int, int]:
        limit = request.args.get("limit", default_limit, type=int)
        offset = request.args.get("offset", 0, type=int)
        if limit < 0 or offset < 0:
            raise _bad("limit and offset must be >= 0", parameter="limit" if limit < 0
                       else "offset")
        return limit, offset

    def _on_profile(self, request: Request, exchange: _Exchange, iid: str) -> Response:
        found = self.profile(iid)
        if found is None:
            raise _Problem(404, f"no profile {iid!r}", title="Not found")
        return _json(found)

    def _on_list(self, request: Request, exchange: _Exchange) -> Response:
        limit, offset = self._window(request, 100)
        with self._store_lock:
            page = self._store.page(limit, offset)
            total = self._store.count()
        profiles = [{"integrationId": p["integrationId"], "attributes": p["attributes"]}
                    for p in page]
        return _json({"total": total, "profiles": profiles})

    def _on_stats(self, request: Request, exchange: _Exchange) -> Response:
        return _json(self.stats())

    def _on_requests(self, request: Request, exchange: _Exchange) -> Response:
        limit, offset = self._window(request, REQUEST_LOG_SIZE)
        with self._lock:
            entries = list(itertools.islice(self._log, offset, offset + limit))
        return _json(entries)

    def _on_reset(self, request: Request, exchange: _Exchange) -> Response:
        self.reset()
        return Response(status=204)

    def _on_config(self, request: Request, exchange: _Exchange) -> Response:
        if request.method == "POST":
            try:
                self.configure(**self._body(request))
            except (TypeError, ValueError) as exc:
                raise _bad(str(exc)) from None
        return _json(self.config.public())


class EmulatorServer(WaitressServer):
    """An :class:`Emulator` served by waitress on loopback, in a thread or in the foreground.

    ``url`` holds the bound port right after construction (``port=0`` picks a
    free one). ``start()`` serves in a daemon thread, ``serve_forever()``
    blocks (for the CLI), ``stop()`` lets requests in progress finish, closes
    the sockets and the store. Also a context manager that starts and stops.
    """

    app: Emulator

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0, threads: int = 8) -> None:
        super().__init__(Emulator(config), host=host, port=port, threads=threads)
        cfg = self.app.config
        log.debug("Talon.One emulator on %s (%s store, rate limit %s)", self.url,
                 "SQLite" if cfg.db else "memory", f"{cfg.rate_limit:g}/s" if cfg.rate_limit
                 else "none")

    def start(self) -> EmulatorServer:
        """Serve in a daemon thread; returns self."""
        super().start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (requests in progress get ``timeout`` seconds), then close the store."""
        super().stop(timeout)
        self.app.close()

    def __enter__(self) -> EmulatorServer:
        return self.start()
