"""``/_emulator``: look at what arrived and change the behaviour, without an API key.

``GET profiles`` (paged) and ``profiles/{integrationId}``, ``GET audiences``
and ``audiences/{id}/members``, ``GET stats``, ``GET requests`` (the
request log), ``POST reset``, and ``GET``/``POST config``. These are the emulator's own, not Talon.One's: they take no
faults, no latency and no rate limit, and are not in the request log.
"""

from __future__ import annotations

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from talon_classic.emulator.problems import Problem, bad_request, json_response
from talon_classic.emulator.routes import Exchange, Routes, json_body, window
from talon_classic.emulator.traffic import REQUEST_LOG_SIZE


class Inspection(Routes):
    """The emulator's inspection and runtime-configuration endpoints."""

    prefix = "/_emulator/"

    def rules(self) -> list[Rule]:
        return [
            Rule("/_emulator/profiles", endpoint=self.profiles, methods=["GET"]),
            Rule("/_emulator/profiles/<path:iid>", endpoint=self.profile, methods=["GET"]),
            Rule("/_emulator/audiences", endpoint=self.audiences, methods=["GET"]),
            Rule("/_emulator/audiences/<int:audience_id>/members", endpoint=self.members,
                 methods=["GET"]),
            Rule("/_emulator/stats", endpoint=self.stats, methods=["GET"]),
            Rule("/_emulator/requests", endpoint=self.requests, methods=["GET"]),
            Rule("/_emulator/reset", endpoint=self.reset, methods=["POST"]),
            Rule("/_emulator/config", endpoint=self.config, methods=["GET", "POST"]),
        ]

    def profiles(self, request: Request, exchange: Exchange) -> Response:
        """``{"total": n, "profiles": [{"integrationId", "attributes"}, ...]}``."""
        limit, offset = window(request, 100)
        page, total = self.emulator.store.page(limit, offset)
        return json_response({"total": total, "profiles": [
            {"integrationId": p["integrationId"], "attributes": p["attributes"]} for p in page]})

    def profile(self, request: Request, exchange: Exchange, iid: str) -> Response:
        found = self.emulator.profile(iid)
        if found is None:
            raise Problem(404, f"no profile {iid!r}", title="Not found")
        return json_response(found)

    def audiences(self, request: Request, exchange: Exchange) -> Response:
        """``{"audiences": [{"id", "name", "integrationId", "members": count}]}``, by id."""
        store = self.emulator.audiences
        counts = store.member_counts()
        listed, _ = store.page(store.count() + 1, 0)
        return json_response({"audiences": [
            {"id": a["id"], "name": a["name"], "integrationId": a.get("integrationId"),
             "members": counts.get(a["id"], 0)} for a in listed]})

    def members(self, request: Request, exchange: Exchange, audience_id: int) -> Response:
        """``{"members": [integrationId, ...]}``, sorted; 404 for no such audience."""
        members = self.emulator.audiences.members(audience_id, 2**62, 0)
        if members is None:
            raise Problem(404, f"no audience {audience_id}", title="Not found")
        return json_response({"members": sorted(members)})

    def stats(self, request: Request, exchange: Exchange) -> Response:
        return json_response(self.emulator.stats())

    def requests(self, request: Request, exchange: Exchange) -> Response:
        limit, offset = window(request, REQUEST_LOG_SIZE)
        return json_response(self.emulator.traffic.entries(limit, offset))

    def reset(self, request: Request, exchange: Exchange) -> Response:
        self.emulator.reset()
        return Response(status=204)

    def config(self, request: Request, exchange: Exchange) -> Response:
        """The config without the key; a POST changes the fields it names first."""
        if request.method == "POST":
            try:
                self.emulator.configure(**json_body(request))
            except (TypeError, ValueError) as exc:
                raise bad_request(str(exc)) from None
        return json_response(self.emulator.config.public())
