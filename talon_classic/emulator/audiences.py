"""The Integration API's audience endpoints, under ``/v2``, with Talon.One's shapes and codes.

* ``POST /v2/audiences``: ``name`` (required, non-empty), optional
  ``description``, ``sandbox``, ``integration``, ``integrationId`` (1-1000
  characters) and ``createdIn3rdParty``: 201 with the Audience; 409 when an
  audience with that ``integration`` and ``integrationId`` exists.
* ``PUT /v2/audiences/{id}`` ``{"name"}``: 200 with the Audience, 404.
* ``DELETE /v2/audiences/{id}``: 204, 404; its memberships go with it.
* ``DELETE /v2/audiences/{id}/memberships``: 204, 404; it is emptied.
* ``POST /v2/customer_audiences`` ``{"data": [{"action": "add"|"delete",
  "profileIntegrationId", "audienceId"}]}``: all three required, at most
  1000 actions; 400 naming the bad item with its pointer, 404 for an
  audience that does not exist (nothing is changed then); ``add`` creates
  a missing profile; 204.

Listing audiences and members is the Management API's
(:mod:`~talon_classic.emulator.management`), as in Talon.One.
"""

from __future__ import annotations

from typing import Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from talon_classic.emulator.audience_store import Action
from talon_classic.emulator.integration import IntegrationRoutes, check_integration_id
from talon_classic.emulator.problems import Problem, bad_request, json_response
from talon_classic.emulator.routes import Exchange, json_body

#: Membership actions one ``POST /v2/customer_audiences`` may carry.
MAX_ACTIONS = 1000
#: Longest audience ``integrationId`` Talon.One accepts.
MAX_AUDIENCE_ID_LENGTH = 1000


def unknown_audience(audience_id: int, pointer: str = "") -> Problem:
    """The 404 for an audience id that does not exist."""
    return Problem(404, f"audience {audience_id} does not exist", title="Not found",
                   details="create it with POST /v2/audiences, or check the id",
                   pointer=pointer)


def _text(body: dict[str, Any], key: str, *, required: bool = False,
          max_length: int | None = None) -> str | None:
    """An optional (or required, non-empty) string field of the body, checked."""
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value.strip()):
        raise bad_request(f"{key} must be a {'non-empty ' if required else ''}string",
                          f"/{key}")
    if max_length is not None and not 1 <= len(value) <= max_length:
        raise bad_request(f"{key} must be 1 to {max_length} characters long, got "
                          f"{len(value)}", f"/{key}")
    return value


def _flag(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{key} must be true or false", f"/{key}")
    return value


class AudienceAPI(IntegrationRoutes):
    """``/v2/audiences`` and ``/v2/customer_audiences``."""

    def rules(self) -> list[Rule]:
        return [
            Rule("/v2/audiences", endpoint=self.create, methods=["POST"]),
            Rule("/v2/audiences/<int:audience_id>", endpoint=self.update,
                 methods=["PUT", "DELETE"]),
            Rule("/v2/audiences/<int:audience_id>/memberships", endpoint=self.clear,
                 methods=["DELETE"]),
            Rule("/v2/customer_audiences", endpoint=self.memberships, methods=["POST"]),
        ]

    def create(self, request: Request, exchange: Exchange) -> Response:
        body = json_body(request)
        fields = {
            "name": _text(body, "name", required=True),
            "description": _text(body, "description"),
            "integration": _text(body, "integration"),
            "integrationId": _text(body, "integrationId", max_length=MAX_AUDIENCE_ID_LENGTH),
            "sandbox": _flag(body, "sandbox"),
            "createdIn3rdParty": _flag(body, "createdIn3rdParty"),
        }
        created = self.emulator.audiences.create(fields)
        if created is None:
            raise Problem(409, f"an audience with integration {fields['integration']!r} and "
                          f"integrationId {fields['integrationId']!r} already exists",
                          title="Conflict", pointer="/integrationId",
                          details="look its id up with the Management API (GET /v1/audiences)")
        return json_response(created, 201)

    def update(self, request: Request, exchange: Exchange, audience_id: int) -> Response:
        """``PUT`` renames, ``DELETE`` deletes (with its memberships)."""
        if request.method == "DELETE":
            if not self.emulator.audiences.delete(audience_id):
                raise unknown_audience(audience_id)
            return Response(status=204)
        name = _text(json_body(request), "name", required=True)
        assert name is not None
        renamed = self.emulator.audiences.rename(audience_id, name)
        if renamed is None:
            raise unknown_audience(audience_id)
        return json_response(renamed)

    def clear(self, request: Request, exchange: Exchange, audience_id: int) -> Response:
        if not self.emulator.audiences.clear_members(audience_id):
            raise unknown_audience(audience_id)
        return Response(status=204)

    def memberships(self, request: Request, exchange: Exchange) -> Response:
        data = json_body(request).get("data")
        if not isinstance(data, list):
            raise bad_request("data must be an array of audience actions", "/data")
        exchange.profiles = len(data)  # in the request log, even when refused
        if len(data) > MAX_ACTIONS:
            raise bad_request(f"at most {MAX_ACTIONS} actions per request, got {len(data)}",
                              "/data")
        actions = [self._action(item, i) for i, item in enumerate(data)]
        missing = self.emulator.audiences.apply(actions)
        if missing:
            index, first = next((i, aid) for i, (_, _, aid) in enumerate(actions)
                                if aid in missing)
            raise unknown_audience(first, f"/data/{index}/audienceId")
        added = [iid for action, iid, _ in actions if action == "add"]
        if added:
            self.emulator.store.create_missing(added)
        self.emulator.traffic.count_audience_actions(len(actions))
        return Response(status=204)

    def _action(self, item: Any, index: int) -> Action:
        """Item ``index``: ``{"action", "profileIntegrationId", "audienceId"}``, checked."""
        pointer = f"/data/{index}"
        if not isinstance(item, dict):
            raise bad_request(f"data[{index}] must be an object", pointer)
        action, iid, audience_id = (item.get(k) for k in
                                    ("action", "profileIntegrationId", "audienceId"))
        if action not in ("add", "delete"):
            raise bad_request(f"action must be \"add\" or \"delete\", got {action!r}",
                              f"{pointer}/action")
        iid = check_integration_id(iid, "profileIntegrationId", pointer,
                                   self.emulator.config.reject_ids)
        if isinstance(audience_id, bool) or not isinstance(audience_id, int):
            raise bad_request(f"audienceId must be an audience's id (an integer), got "
                              f"{audience_id!r}", f"{pointer}/audienceId")
        return action, iid, audience_id
