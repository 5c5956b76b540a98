"""The emulator's WSGI application: its state, and the path every request takes.

:class:`Emulator` owns the config, the profile store, the traffic record
and the fault injection; the endpoints live in route groups
(:mod:`~talon_classic.emulator.routes`). A request to an emulated API goes
through the same gate, in this order: the group's key check (401), one
injected fault (:mod:`~talon_classic.emulator.faults`), the rate limit
(429), then the endpoint. ``latency_ms`` is added to every answer of an
emulated API, once; a write spends it while holding its profiles, which is
what makes a concurrent write of the same profile meet a 409.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar

from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound
from werkzeug.routing import Map
from werkzeug.wrappers import Request

from talon_classic.emulator.audience_store import AudienceStore, open_audiences
from talon_classic.emulator.audiences import AudienceAPI
from talon_classic.emulator.config import CONFIG_FIELDS, EmulatorConfig
from talon_classic.emulator.faults import Fault, Faults, dropped_answer, latency
from talon_classic.emulator.inspection import Inspection
from talon_classic.emulator.integration import IntegrationAPI
from talon_classic.emulator.management import ManagementAPI
from talon_classic.emulator.problems import Problem
from talon_classic.emulator.routes import Exchange, Routes
from talon_classic.emulator.store import ProfileStore, open_store
from talon_classic.emulator.traffic import Traffic

log = logging.getLogger(__package__)  # one logger for the emulator: talon_classic.emulator


class Emulator:
    """The WSGI application. Thread-safe: waitress calls it from many threads.

    ``config`` is the current :class:`EmulatorConfig` (replaced whole on a
    change), ``store`` the profiles, ``audiences`` the audiences and their
    members, ``traffic`` what arrived.
    """

    #: The route groups served, each under its path prefix. Groups that share a prefix
    #: (the Integration API's profiles and audiences) share its key and rate limit: the
    #: first one listed authenticates.
    route_groups: ClassVar[tuple[type[Routes], ...]] = (IntegrationAPI, AudienceAPI,
                                                        ManagementAPI, Inspection)

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self._lock = threading.Lock()  # guards replacing self.config
        db = self.config.db
        if db and os.path.isdir(db):
            raise ValueError(f"{db}: is a directory, not a database (give a file for --db)")
        store: ProfileStore | None = None
        try:
            store = open_store(db)
            self.audiences: AudienceStore = open_audiences(db)
        except BaseException as exc:
            if store is not None:
                store.close()
            if isinstance(exc, sqlite3.Error):  # a ValueError: the CLI says it in one line
                raise ValueError(f"{db}: not a usable emulator database ({exc}); give "
                                 "another --db or move this file away") from None
            raise
        self.store: ProfileStore = store
        self.traffic = Traffic()
        self.faults = Faults(self.config)
        self._groups = [group(self) for group in self.route_groups]
        self._url_map = Map([rule for group in self._groups for rule in group.rules()],
                            strict_slashes=False)

    # -- library API -------------------------------------------------------
    def configure(self, **changes: Any) -> None:
        """Change config fields at runtime; lists become frozensets.

        Raises ValueError for an unknown field, a bad value, or ``db`` (the
        store is opened once, at construction).
        """
        unknown = set(changes) - CONFIG_FIELDS
        if unknown:
            raise ValueError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        if "db" in changes:
            raise ValueError("db cannot change at runtime; start another emulator")
        with self._lock:
            self.config = replace(self.config, **changes)  # __post_init__ checks the values
            self.faults.reconfigure(self.config, set(changes))
        log.debug("emulator config changed: %s", ", ".join(sorted(changes)))

    def profile(self, integration_id: str) -> dict[str, Any] | None:
        """``{"integrationId", "attributes"}`` of one stored profile, or None."""
        found = self.store.get(integration_id)
        if found is None:
            return None
        return {"integrationId": found["integrationId"], "attributes": found["attributes"]}

    def stats(self) -> dict[str, Any]:
        """``{"requests": {status: n}, "profiles": stored, "profile_updates": written,
        "audiences": stored, "audience_actions": applied}``."""
        counts = self.traffic.counts()
        return {"requests": counts["requests"], "profiles": self.store.count(),
                "profile_updates": counts["profile_updates"],
                "audiences": self.audiences.count(),
                "audience_actions": counts["audience_actions"]}

    def reset(self) -> None:
        """Forget profiles, audiences, counters and the request log (the config stays)."""
        self.store.clear()
        self.audiences.clear()
        self.traffic.clear()

    def close(self) -> None:
        """Release the stores (closes the SQLite file); the app answers no more writes."""
        try:
            self.audiences.close()
        finally:
            self.store.close()

    def pause(self, exchange: Exchange) -> None:
        """Spend the configured latency, once per request."""
        exchange.paused = True
        latency(self.config)

    # -- WSGI ----------------------------------------------------------------
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        arrived = time.monotonic()
        request = Request(environ)
        group = next((g for g in self._groups if request.path.startswith(g.prefix)), None)
        emulated = group is not None and group.emulated
        exchange = Exchange()
        try:
            if group is not None and emulated:
                group.authenticate(request)
                self._gate(request, exchange, group.rate_field)
            endpoint, args = self._url_map.bind_to_environ(environ).match()
            response = endpoint(request, exchange, **args)
        except Problem as problem:
            response = problem.response()
        except NotFound:
            response = Problem(404, f"no such endpoint: {request.method} {request.path}",
                               title="Not found").response()
        except MethodNotAllowed as exc:
            allowed = ", ".join(sorted(exc.valid_methods or []))
            response = Problem(405, f"{request.method} is not allowed on {request.path}",
                               title="Method not allowed",
                               headers={"Allow": allowed} if allowed else None).response()
        except HTTPException as exc:  # pragma: no cover - werkzeug edge cases
            response = Problem(exc.code or 500, exc.description or "error").response()
        if not emulated:
            return response(environ, start_response)
        if not exchange.paused:
            self.pause(exchange)
        status = response.status_code
        if exchange.drop:
            log.info("dropping the connection of %s %s on purpose", request.method,
                     request.path)
            status, body = dropped_answer(status, response.get_data(), start_response)
            self._record(request, status, exchange, arrived)
            return body
        self._record(request, status, exchange, arrived)
        return response(environ, start_response)

    def _gate(self, request: Request, exchange: Exchange, rate_field: str) -> None:
        """One injected fault, then the group's rate limit; raises the error answer."""
        with self._lock:
            fault, self.config = self.faults.pick(self.config)
            config = self.config
        exchange.drop = fault is Fault.DROP
        self.faults.inflict(fault, config, f"{request.method} {request.path}", rate_field)

    def _record(self, request: Request, status: int, exchange: Exchange,
                arrived: float) -> None:
        self.traffic.record(arrived, request.method, request.path, status, exchange.profiles)
        log.debug("%s %s -> %d (%d profiles)", request.method, request.path, status,
                  exchange.profiles)
