"""The Management API endpoints talon-classic uses, under ``/v1``.

Authenticated with ``Authorization: ManagementKey-v1 <key>`` (the config's
``management_key``; 401 otherwise) and paced by its own token bucket,
``management_rate_limit`` (Talon.One's 3 requests per second; 429 with
``Retry-After`` beyond). Listings take ``pageSize`` (1 to 1000, default
1000) and ``skip``; anything else there is a 400 naming the parameter.

* ``GET /v1/attributes`` (``entity``, ``kind=builtin|custom``):
  ``{"totalResultSize", "data": [Attribute]}``. The built-in attributes
  (:data:`~talon_classic.emulator.attributes.BUILTIN_ATTRIBUTES`, kind
  ``builtin``, ids 1 and up) come first, then the configured ones (kind
  ``custom``) by name. A configured name without a type is listed with the
  type ``any``, which Talon.One does not have: a client treats it as a type
  it does not know (any value), which is what the emulator accepts for it.
  ``*`` patterns cannot be listed and are left out. Every attribute's
  entity is ``CustomerProfile``, so another ``entity`` lists none.
* ``GET /v1/audiences``: ``{"hasMore", "totalResultSize", "data": [Audience]}``, by id.
* ``GET /v1/audiences/{id}/memberships``: ``{"hasMore", "data":
  [CustomerProfile]}``, in joining order; 404 for an unknown audience.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from talon_classic.emulator.attributes import BUILTIN_ATTRIBUTES, PROFILE_ENTITY
from talon_classic.emulator.audiences import unknown_audience
from talon_classic.emulator.integration import customer_profile
from talon_classic.emulator.problems import Problem, bad_request, json_response
from talon_classic.emulator.routes import Exchange, Routes
from talon_classic.emulator.store import now

if TYPE_CHECKING:
    from talon_classic.emulator.app import Emulator
    from talon_classic.emulator.config import EmulatorConfig

log = logging.getLogger(__package__)  # one logger for the emulator: talon_classic.emulator

#: The largest (and default) ``pageSize`` of a listing.
MAX_PAGE_SIZE = 1000
#: The type a configured attribute without one is listed with.
UNTYPED = "any"


def _whole(request: Request, name: str, default: int, low: int, high: int | None) -> int:
    """Query parameter ``name`` as a whole number in ``[low, high]``, or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        value = None
    if value is None or value < low or (high is not None and value > high):
        limits = f"{low} to {high}" if high is not None else f">= {low}"
        raise bad_request(f"query parameter {name} must be a whole number {limits}, got "
                          f"{raw!r}", parameter=name)
    return value


def paging(request: Request) -> tuple[int, int]:
    """``pageSize`` (1-1000, default 1000) and ``skip`` (default 0) of a listing."""
    return (_whole(request, "pageSize", MAX_PAGE_SIZE, 1, MAX_PAGE_SIZE),
            _whole(request, "skip", 0, 0, None))


def attributes_of(config: EmulatorConfig, created: str) -> list[dict[str, Any]]:
    """Every attribute the emulator knows, as Talon.One's Attribute objects."""
    def item(number: int, name: str, type_: str, title: str, kind: str) -> dict[str, Any]:
        return {"id": number, "created": created, "accountId": 1, "entity": PROFILE_ENTITY,
                "name": name, "title": title, "type": type_, "description": "",
                "suggestions": [], "hasAllowedList": False, "restrictedBySuggestions": False,
                "editable": kind == "custom", "subscribedApplicationsIds": [],
                "subscribedCatalogsIds": [], "allowedSubscriptions": [], "kind": kind}

    types = config.attribute_types
    items = [item(number, name, types.get(name, type_), title, "builtin")
             for number, (name, (type_, title)) in enumerate(BUILTIN_ATTRIBUTES.items(), 1)]
    names = {*(config.attributes or ()), *types} - set(BUILTIN_ATTRIBUTES)
    custom = sorted(name for name in names if "*" not in name)
    items += [item(number, name, types.get(name, UNTYPED), name, "custom")
              for number, name in enumerate(custom, len(items) + 1)]
    return items


class ManagementAPI(Routes):
    """``/v1``: attributes, audiences and their members, with the management key."""

    prefix = "/v1/"
    emulated = True
    rate_field = "management_rate_limit"

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self._created = now()  # when the attributes "were created"

    def rules(self) -> list[Rule]:
        return [
            Rule("/v1/attributes", endpoint=self.attributes, methods=["GET"]),
            Rule("/v1/audiences", endpoint=self.audiences, methods=["GET"]),
            Rule("/v1/audiences/<int:audience_id>/memberships", endpoint=self.members,
                 methods=["GET"]),
        ]

    def authenticate(self, request: Request) -> None:
        """``Authorization: ManagementKey-v1 <key>``, compared in constant time."""
        header = request.headers.get("Authorization", "")
        expected = f"ManagementKey-v1 {self.emulator.config.management_key}"
        if not hmac.compare_digest(header.encode(), expected.encode()):
            log.info("401 for %s %s: missing or wrong management key", request.method,
                     request.path)
            raise Problem(401, "Unauthorized", details="missing or invalid management key: "
                          "send 'Authorization: ManagementKey-v1 <key>' with a Management "
                          "API key (an Application's API key is not one)")

    def attributes(self, request: Request, exchange: Exchange) -> Response:
        size, skip = paging(request)
        kind = request.args.get("kind")
        if kind is not None and kind not in ("builtin", "custom"):
            raise bad_request(f"query parameter kind must be builtin or custom, got {kind!r}",
                              parameter="kind")
        entity = request.args.get("entity")
        items = [a for a in attributes_of(self.emulator.config, self._created)
                 if (kind is None or a["kind"] == kind)
                 and (entity is None or a["entity"] == entity)]
        return json_response({"totalResultSize": len(items), "data": items[skip:skip + size]})

    def audiences(self, request: Request, exchange: Exchange) -> Response:
        size, skip = paging(request)
        page, total = self.emulator.audiences.page(size, skip)
        return json_response({"hasMore": skip + len(page) < total, "totalResultSize": total,
                              "data": page})

    def members(self, request: Request, exchange: Exchange, audience_id: int) -> Response:
        size, skip = paging(request)
        ids = self.emulator.audiences.members(audience_id, size + 1, skip)
        if ids is None:
            raise unknown_audience(audience_id)
        more, ids = len(ids) > size, ids[:size]
        profiles = self.emulator.store.get_many(ids)
        memberships = self.emulator.audiences.memberships(ids)
        stamp = now()
        data = [customer_profile(profiles.get(iid) or {
            "id": 0, "created": stamp, "integrationId": iid, "attributes": {}},
            memberships.get(iid)) for iid in ids]
        return json_response({"hasMore": more, "data": data})
