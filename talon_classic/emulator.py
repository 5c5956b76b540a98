"""A local Talon.One Integration API, for trials, tests and benchmarks.

It answers the endpoints talon-classic uses with the real request and
response shapes (``../shared/talon-one-api.md``): ``GET /v2/authping``,
``PUT /v2/customer_profiles/{integrationId}`` and the bulk
``PUT /v2/customer_profiles``, with Talon.One's status codes and error
bodies (401, 400, 409 for concurrent updates of one profile, 429 with
``Retry-After`` above the rate limit). Faults can be injected at start or at
runtime (``POST /_emulator/config``), and ``/_emulator/...`` lets tests and
users look at what arrived without an API key.

It is a WSGI app (werkzeug) served by waitress; profiles live in memory or,
with ``db``, in SQLite so they survive restarts.
"""

from __future__ import annotations

import fnmatch
import hmac
import json
import logging
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
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from talon_classic.serving import WaitressServer

log = logging.getLogger("talon_classic.emulator")


class _QuietDrops(logging.Filter):
    """Keep waitress from logging a traceback for a connection we drop on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Drop))


logging.getLogger("waitress").addFilter(_QuietDrops())

MAX_PROFILES = 1000
MAX_ID_LENGTH = 1000
ATTRIBUTE_NAME = re.compile(r"[A-Za-z]\w*")
REQUEST_LOG_SIZE = 100_000


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator behaves; every field can change at runtime."""

    api_key: str = field(default="emulator-key", repr=False)
    #: Attribute names that "exist" (``*`` entries are patterns); None accepts every
    #: well-formed name.
    attributes: frozenset[str] | None = None
    db: str | None = None
    #: Requests per second on /v2 (bucket of one second's worth); 0 = no limit.
    rate_limit: float = 60.0
    latency_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 503
    fail_next: int = 0
    hang_next: int = 0
    hang_seconds: float = 10.0
    drop_next: int = 0
    reject_ids: frozenset[str] = frozenset()
    seed: int | None = None

    def public(self) -> dict[str, Any]:
        """The config as JSON, without the key."""
        out = asdict(self)
        out.pop("api_key")
        for name in ("attributes", "reject_ids"):
            if out[name] is not None:
                out[name] = sorted(out[name])
        return out


_SET_FIELDS = ("attributes", "reject_ids")
_CONFIG_FIELDS = {f.name for f in fields(EmulatorConfig)}


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


def parse_attributes_file(path: str) -> frozenset[str]:
    """Attribute names from a file: a JSON array, or one name per line (``#`` comments)."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        return frozenset(str(n) for n in json.loads(text))
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Problem(Exception):
    """An error answer in Talon.One's shape."""

    def __init__(self, status: int, message: str, details: str = "", pointer: str = "",
                 headers: dict[str, str] | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint
        self.status = status
        self.message = message
        self.details = details
        self.pointer = pointer
        self.headers = headers or {}

    def response(self) -> Response:
        error: dict[str, Any] = {"title": self.details or self.message,
                                 "details": self.hint or self.details or self.message}
        if self.pointer:
            error["source"] = {"pointer": self.pointer}
        body = {"message": self.message, "errors": [error], "StatusCode": self.status}
        return Response(json.dumps(body), self.status, self.headers,
                        content_type="application/json")


class _MemoryStore:
    """Profiles in a dict; insertion order is creation order."""

    def __init__(self) -> None:
        self.profiles: dict[str, dict[str, Any]] = {}
        self.next_id = 1

    def upsert(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        out = []
        now = _now()
        for iid, attrs in items:
            profile = self.profiles.get(iid)
            if profile is None:
                profile = self.profiles[iid] = {
                    "id": self.next_id, "created": now, "integrationId": iid, "attributes": {},
                }
                self.next_id += 1
            profile["attributes"].update(attrs)
            profile["lastActivity"] = now
            out.append(profile)
        return out

    def get(self, iid: str) -> dict[str, Any] | None:
        return self.profiles.get(iid)

    def page(self, limit: int, offset: int) -> list[dict[str, Any]]:
        return list(self.profiles.values())[offset: offset + limit]

    def count(self) -> int:
        return len(self.profiles)

    def clear(self) -> None:
        self.profiles.clear()
        self.next_id = 1


class _SqliteStore:
    """Profiles in SQLite (WAL), one transaction per request."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS profiles (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "integration_id TEXT UNIQUE NOT NULL, created TEXT NOT NULL, "
            "last_activity TEXT NOT NULL, attributes TEXT NOT NULL)"
        )

    def _row(self, row: tuple) -> dict[str, Any]:
        return {"id": row[0], "integrationId": row[1], "created": row[2],
                "lastActivity": row[3], "attributes": json.loads(row[4])}

    def upsert(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        now = _now()
        out = []
        cur = self.db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            for iid, attrs in items:
                row = cur.execute(
                    "SELECT id, integration_id, created, last_activity, attributes "
                    "FROM profiles WHERE integration_id = ?", (iid,)).fetchone()
                if row is None:
                    cur.execute(
                        "INSERT INTO profiles (integration_id, created, last_activity, attributes)"
                        " VALUES (?, ?, ?, ?)", (iid, now, now, json.dumps(attrs)))
                    profile = {"id": cur.lastrowid, "integrationId": iid, "created": now,
                               "lastActivity": now, "attributes": dict(attrs)}
                else:
                    profile = self._row(row)
                    profile["attributes"].update(attrs)
                    profile["lastActivity"] = now
                    cur.execute(
                        "UPDATE profiles SET attributes = ?, last_activity = ? WHERE id = ?",
                        (json.dumps(profile["attributes"]), now, profile["id"]))
                out.append(profile)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return out

    def get(self, iid: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT id, integration_id, created, last_activity, attributes FROM profiles "
            "WHERE integration_id = ?", (iid,)).fetchone()
        return self._row(row) if row else None

    def page(self, limit: int, offset: int) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, integration_id, created, last_activity, attributes FROM profiles "
            "ORDER BY id LIMIT ? OFFSET ?", (limit, offset)).fetchall()
        return [self._row(r) for r in rows]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM profiles").fetchone()[0]

    def clear(self) -> None:
        self.db.execute("DELETE FROM profiles")


def _full(profile: dict[str, Any]) -> dict[str, Any]:
    """A stored profile as Talon.One's CustomerProfile object."""
    return {
        "id": profile["id"],
        "created": profile["created"],
        "integrationId": profile["integrationId"],
        "attributes": dict(profile["attributes"]),
        "accountId": 1,
        "closedSessions": 0,
        "totalSales": 0.0,
        "loyaltyMemberships": [],
        "audienceMemberships": [],
        "lastActivity": profile.get("lastActivity", profile["created"]),
    }


class _Drop(Exception):
    """Raised mid-body so waitress closes the connection (a dropped response)."""


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
        """Change config fields at runtime (lists become frozensets)."""
        unknown = set(changes) - _CONFIG_FIELDS - {"db"}
        if unknown or "db" in changes:
            raise ValueError(f"cannot change: {', '.join(sorted(unknown or {'db'}))}")
        for name in _SET_FIELDS:
            if name in changes and changes[name] is not None:
                changes[name] = frozenset(changes[name])
        with self._lock:
            self.config = replace(self.config, **changes)
            if "seed" in changes:
                self._random = random.Random(changes["seed"])
            if "rate_limit" in changes:
                self._tokens = max(1.0, self.config.rate_limit)

    def profile(self, integration_id: str) -> dict[str, Any] | None:
        """``{"integrationId", "attributes"}`` of one stored profile, or None."""
        with self._store_lock:
            found = self._store.get(integration_id)
        if found is None:
            return None
        return {"integrationId": found["integrationId"], "attributes": dict(found["attributes"])}

    def stats(self) -> dict[str, Any]:
        """Requests by status, profiles stored, profiles written."""
        with self._store_lock:
            profiles = self._store.count()
        with self._lock:
            return {"requests": dict(self._status), "profiles": profiles,
                    "profile_updates": self._updates}

    def reset(self) -> None:
        """Forget profiles, counters and the request log."""
        with self._store_lock:
            self._store.clear()
        with self._lock:
            self._status.clear()
            self._updates = 0
            self._log.clear()

    # -- WSGI ----------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        adapter = self._url_map.bind_to_environ(environ)
        arrived = time.monotonic()
        is_api = request.path.startswith("/v2/")
        counted = {"profiles": 0}
        drop = False
        try:
            endpoint, args = adapter.match()
            handler = getattr(self, f"_on_{endpoint}")
            if is_api:
                drop = self._gate(request)
            response = handler(request, counted, **args)
        except _Problem as problem:
            response = problem.response()
        except NotFound:
            response = _Problem(404, "Not found", f"no route {request.path}").response()
        except MethodNotAllowed:
            response = _Problem(405, "Method not allowed").response()
        except HTTPException as exc:  # pragma: no cover - werkzeug edge cases
            response = _Problem(exc.code or 500, exc.description or "error").response()
        if is_api:
            with self._lock:
                self._status[str(response.status_code)] += 1
                self._log.append({"t": arrived, "method": request.method, "path": request.path,
                                  "status": response.status_code,
                                  "profiles": counted["profiles"]})
        if drop:
            return self._dropped(response, start_response)
        return response(environ, start_response)

    def _dropped(self, response: Response, start_response: Any) -> Iterator[bytes]:
        # a 204 cannot carry a body to cut short, so a dropped answer is a 200
        body = response.get_data() or b'{"dropped": "on purpose by the emulator"}'
        start_response(response.status if response.status_code != 204 else "200 OK",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body) + 100))])

        def chunks() -> Iterator[bytes]:
            yield body[: max(1, len(body) // 2)]
            raise _Drop("connection dropped on purpose by the emulator")
        return chunks()

    def _gate(self, request: Request) -> bool:
        """Auth, then injected faults, then the rate limit. Returns 'drop this one'."""
        header = request.headers.get("Authorization", "")
        cfg = self.config
        if not hmac.compare_digest(header.encode(), f"ApiKey-v1 {cfg.api_key}".encode()):
            raise _Problem(401, "Unauthorized", "missing or invalid API key")
        with self._lock:
            cfg = self.config
            fail = cfg.fail_next > 0 or (cfg.fail_rate > 0 and self._random.random() < cfg.fail_rate)
            hang = drop = False
            if cfg.fail_next > 0:
                self.config = replace(cfg, fail_next=cfg.fail_next - 1)
            elif not fail and cfg.hang_next > 0:
                hang = True
                self.config = replace(cfg, hang_next=cfg.hang_next - 1)
            elif not fail and cfg.drop_next > 0:
                drop = True
                self.config = replace(cfg, drop_next=cfg.drop_next - 1)
            limited = False
            if not fail and cfg.rate_limit > 0:
                now = time.monotonic()
                self._tokens = min(max(1.0, cfg.rate_limit),
                                   self._tokens + (now - self._refilled) * cfg.rate_limit)
                self._refilled = now
                if self._tokens >= 1:
                    self._tokens -= 1
                else:
                    limited = True
        if fail:
            raise _Problem(cfg.fail_status, "Injected failure", "fault injected by the emulator")
        if hang:
            time.sleep(cfg.hang_seconds)
        if limited:
            raise _Problem(429, "Too many requests", "rate limit exceeded",
                           headers={"Retry-After": "1"})
        return drop

    def _pause(self) -> None:
        """The configured latency; writes take it while holding their profiles (see 409)."""
        if self.config.latency_ms:
            time.sleep(self.config.latency_ms / 1000)

    # -- /v2 -------------------------------------------------------------------
    def _on_authping(self, request: Request, counted: dict) -> Response:
        self._pause()
        return Response(status=204)

    def _body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(request.get_data())
        except ValueError:
            raise _Problem(400, "Bad request", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _Problem(400, "Bad request", "the body must be a JSON object", "/")
        return body

    def _check(self, iid: Any, attributes: Any, pointer: str) -> None:
        cfg = self.config
        if not isinstance(iid, str) or not iid:
            raise _Problem(400, "Bad request", "integrationId must be a non-empty string",
                           f"{pointer}/integrationId")
        if len(iid) > MAX_ID_LENGTH:
            raise _Problem(400, "Bad request",
                           f"integrationId is longer than {MAX_ID_LENGTH} characters",
                           f"{pointer}/integrationId")
        if iid in cfg.reject_ids:
            raise _Problem(400, "Bad request", f"profile {iid!r} was rejected (reject_ids)",
                           f"{pointer}/integrationId")
        if not isinstance(attributes, dict):
            raise _Problem(400, "Bad request", "attributes must be an object",
                           f"{pointer}/attributes")
        for name in attributes:
            if not ATTRIBUTE_NAME.fullmatch(name) or (
                cfg.attributes is not None and not _exists(name, cfg.attributes)
            ):
                raise _Problem(400, "Bad request",
                               f"attribute '{name}' does not exist (profile {iid!r})",
                               f"{pointer}/attributes/{name}",
                               hint="create it in the Campaign Manager (Attributes, entity "
                               "Customer Profile) or remove it from customAttributes")

    def _write(self, items: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        ids = {iid for iid, _ in items}
        with self._lock:
            if ids & self._busy:
                raise _Problem(409, "Too many requests are updating this profile at the same time",
                               "retry after a pause")
            self._busy |= ids
        try:
            self._pause()
            with self._store_lock:
                stored = self._store.upsert(items)
            with self._lock:
                self._updates += len(items)
            return stored
        finally:
            with self._lock:
                self._busy -= ids

    def _on_single(self, request: Request, counted: dict, iid: str) -> Response:
        body = self._body(request)
        attributes = body.get("attributes", {})
        self._check(iid, attributes, "")
        counted["profiles"] = 1
        if request.args.get("dry", "false").lower() == "true":
            self._pause()
            stored = self.profile(iid) or {"integrationId": iid, "attributes": {}}
            profile = {**_full({"id": 0, "created": _now(), **stored})}
        else:
            profile = _full(self._write([(iid, attributes)])[0])
        answer = {"customerProfile": profile, "effects": [], "createdCoupons": [],
                  "createdReferrals": [], "ruleFailureReasons": [], "triggeredCampaigns": [],
                  "awardedGiveaways": []}
        return Response(json.dumps(answer), 200, content_type="application/json")

    def _on_bulk(self, request: Request, counted: dict) -> Response:
        body = self._body(request)
        items = body.get("customerProfiles")
        if not isinstance(items, list):
            raise _Problem(400, "Bad request", "customerProfiles must be an array",
                           "/customerProfiles")
        if len(items) > MAX_PROFILES:
            raise _Problem(400, "Bad request",
                           f"at most {MAX_PROFILES} profiles per request, got {len(items)}",
                           "/customerProfiles")
        batch = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise _Problem(400, "Bad request", "each profile must be an object",
                               f"/customerProfiles/{i}")
            iid, attributes = item.get("integrationId"), item.get("attributes", {})
            self._check(iid, attributes, f"/customerProfiles/{i}")
            batch.append((iid, attributes))
        counted["profiles"] = len(batch)
        stored = self._write(batch)
        if request.args.get("silent", "yes") == "no":
            states = [{"customerProfile": _full(p)} for p in stored]
            return Response(json.dumps({"integrationStates": states}), 200,
                            content_type="application/json")
        return Response(status=204)

    # -- /_emulator ------------------------------------------------------------
    def _json(self, data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data), status, content_type="application/json")

    def _on_profile(self, request: Request, counted: dict, iid: str) -> Response:
        found = self.profile(iid)
        if found is None:
            raise _Problem(404, "Not found", f"no profile {iid!r}")
        return self._json(found)

    def _on_list(self, request: Request, counted: dict) -> Response:
        limit = request.args.get("limit", 100, type=int)
        offset = request.args.get("offset", 0, type=int)
        with self._store_lock:
            page = self._store.page(limit, offset)
            total = self._store.count()
        profiles = [{"integrationId": p["integrationId"], "attributes": p["attributes"]}
                    for p in page]
        return self._json({"total": total, "profiles": profiles})

    def _on_stats(self, request: Request, counted: dict) -> Response:
        return self._json(self.stats())

    def _on_requests(self, request: Request, counted: dict) -> Response:
        limit = request.args.get("limit", 1000, type=int)
        offset = request.args.get("offset", 0, type=int)
        with self._lock:
            entries = list(self._log)[offset: offset + limit]
        return self._json(entries)

    def _on_reset(self, request: Request, counted: dict) -> Response:
        self.reset()
        return Response(status=204)

    def _on_config(self, request: Request, counted: dict) -> Response:
        if request.method == "POST":
            try:
                self.configure(**self._body(request))
            except (TypeError, ValueError) as exc:
                raise _Problem(400, "Bad request", str(exc)) from None
        return self._json(self.config.public())


class EmulatorServer(WaitressServer):
    """An :class:`Emulator` served by waitress on loopback, in a thread or in the foreground."""

    app: Emulator

    def __init__(self, config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                 port: int = 0, threads: int = 8) -> None:
        super().__init__(Emulator(config), host=host, port=port, threads=threads)

    def __enter__(self) -> EmulatorServer:
        self.start()
        return self
