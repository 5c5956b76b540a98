"""The Integration API's profile endpoints talon-classic uses, under ``/v2``.

``GET /v2/authping``, ``PUT /v2/customer_profiles/{integrationId}`` and the
bulk ``PUT /v2/customer_profiles``, with Talon.One's request checks, status
codes and error bodies: 401 without the key, 400 naming the item and its
JSON pointer (an unknown attribute, a value of the wrong type), 409 for
concurrent updates of one profile. The single update applies
``audiencesChanges``; profiles show their ``audienceMemberships``. The
audience endpoints are :mod:`~talon_classic.emulator.audiences`, under the
same prefix and key (:class:`IntegrationRoutes`).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Container
from typing import TYPE_CHECKING, Any

from werkzeug.routing import Rule
from werkzeug.wrappers import Request, Response

from talon_classic.emulator.attributes import ATTRIBUTE_NAME, attribute_type
from talon_classic.emulator.audience_store import Action
from talon_classic.emulator.problems import Problem, bad_request, json_response
from talon_classic.emulator.routes import Exchange, Routes, flag, json_body
from talon_classic.emulator.store import Items, now
from talon_classic.emulator.types import Check, checker, expectation

if TYPE_CHECKING:
    from talon_classic.emulator.app import Emulator
    from talon_classic.emulator.config import EmulatorConfig

log = logging.getLogger(__package__)  # one logger for the emulator: talon_classic.emulator

#: Profiles one bulk request may carry.
MAX_PROFILES = 1000
#: Longest integrationId Talon.One accepts.
MAX_ID_LENGTH = 1000

#: What a request found out about one attribute name: may it be written (well-formed
#: and existing), its type, and the check of its values (None: any value).
Verdict = tuple[bool, "str | None", "Check | None"]


def check_integration_id(iid: Any, field: str, pointer: str, reject_ids: Container[str]) -> str:
    """``iid`` if Talon.One would take it as the profile id in ``field``; else a 400.

    A non-empty string of at most :data:`MAX_ID_LENGTH` characters, and not
    one the emulator is told to refuse (``reject_ids``). ``pointer`` is the
    item's JSON pointer; the error points at its ``field``.
    """
    if not isinstance(iid, str) or not iid:
        raise bad_request(f"{field} must be a non-empty string", f"{pointer}/{field}")
    if len(iid) > MAX_ID_LENGTH:
        raise bad_request(f"{field} is longer than {MAX_ID_LENGTH} characters ({len(iid)})",
                          f"{pointer}/{field}")
    if iid in reject_ids:
        raise bad_request(f"profile {iid!r} was rejected (reject_ids)", f"{pointer}/{field}",
                          details=f"the emulator is told to refuse integrationId {iid!r}")
    return iid


def customer_profile(profile: dict[str, Any],
                     memberships: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A stored profile as Talon.One's CustomerProfile object; ``memberships`` are the
    ``{"id", "name"}`` of the audiences it belongs to."""
    return {
        "id": profile["id"],
        "created": profile["created"],
        "integrationId": profile["integrationId"],
        "attributes": profile["attributes"],
        "accountId": 1,
        "closedSessions": 0,
        "totalSales": 0.0,
        "loyaltyMemberships": [],
        "audienceMemberships": memberships or [],
        "lastActivity": profile.get("lastActivity", profile["created"]),
    }


class IntegrationRoutes(Routes):
    """A group of Integration API endpoints: under ``/v2``, with the Application's key."""

    prefix = "/v2/"
    emulated = True

    def authenticate(self, request: Request) -> None:
        """``Authorization: ApiKey-v1 <key>`` with the configured key, compared in constant time."""
        header = request.headers.get("Authorization", "")
        expected = f"ApiKey-v1 {self.emulator.config.api_key}"
        if not hmac.compare_digest(header.encode(), expected.encode()):
            log.info("401 for %s %s: missing or wrong API key", request.method, request.path)
            raise Problem(401, "Unauthorized", details="missing or invalid API key: send "
                          "'Authorization: ApiKey-v1 <key>' with the Application's key")



class IntegrationAPI(IntegrationRoutes):
    """``/v2``: authping and the customer-profile upserts."""

    def __init__(self, emulator: Emulator) -> None:
        super().__init__(emulator)
        self._lock = threading.Lock()
        self._busy: set[str] = set()  # integrationIds being written right now

    def rules(self) -> list[Rule]:
        return [
            Rule("/v2/authping", endpoint=self.authping, methods=["GET"]),
            Rule("/v2/customer_profiles", endpoint=self.bulk, methods=["PUT"]),
            Rule("/v2/customer_profiles/<path:iid>", endpoint=self.single, methods=["PUT"]),
        ]

    # -- endpoints -------------------------------------------------------------
    def authping(self, request: Request, exchange: Exchange) -> Response:
        return Response(status=204)

    def single(self, request: Request, exchange: Exchange, iid: str) -> Response:
        flag(request, "runRuleEngine", ("true", "false"), "false")
        dry = flag(request, "dry", ("true", "false"), "false")
        exchange.profiles = 1
        body = json_body(request)
        attributes = self._check(iid, body.get("attributes", {}), "")[1]
        actions = self._audience_changes(iid, body)
        self._check_extras(body)
        if dry:  # what the update would give, nothing stored
            stamp = now()
            current = self.emulator.store.get(iid) or {
                "id": 0, "created": stamp, "integrationId": iid, "attributes": {}}
            current["attributes"].update(attributes)
            stored = {**current, "lastActivity": stamp}
        else:
            stored = self._write([(iid, attributes)], exchange, True)[0]
            if actions:
                self.emulator.audiences.apply(actions)
                self.emulator.traffic.count_audience_actions(len(actions))
        memberships = self.emulator.audiences.memberships([iid]).get(iid)
        profile = customer_profile(stored, memberships)
        return json_response({"customerProfile": profile, "effects": [], "createdCoupons": [],
                              "createdReferrals": [], "ruleFailureReasons": [],
                              "triggeredCampaigns": [], "awardedGiveaways": []})

    def bulk(self, request: Request, exchange: Exchange) -> Response:
        silent = flag(request, "silent", ("yes", "no"), "yes")
        body = json_body(request)
        items = body.get("customerProfiles")
        if not isinstance(items, list):
            raise bad_request("customerProfiles must be an array", "/customerProfiles")
        exchange.profiles = len(items)  # what arrived, in the request log even when refused
        if len(items) > MAX_PROFILES:
            raise bad_request(f"at most {MAX_PROFILES} profiles per request, got {len(items)}",
                              "/customerProfiles")
        batch: Items = []
        names: dict[str, Verdict] = {}
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad_request(f"customerProfiles[{i}] must be an object",
                                  f"/customerProfiles/{i}")
            batch.append(self._check(item.get("integrationId"), item.get("attributes", {}),
                                     f"/customerProfiles/{i}", names))
        stored = self._write(batch, exchange, snapshot=not silent)
        if silent:
            return Response(status=204)
        memberships = self.emulator.audiences.memberships([p["integrationId"] for p in stored])
        return json_response({"integrationStates": [
            {"customerProfile": customer_profile(p, memberships.get(p["integrationId"]))}
            for p in stored]})

    # -- checks and the write --------------------------------------------------
    @staticmethod
    def _verdict(name: str, cfg: EmulatorConfig) -> Verdict:
        """Whether ``name`` may be written (well-formed and existing), its type and check."""
        if not ATTRIBUTE_NAME.fullmatch(name):
            return False, None, None
        exists, expected = attribute_type(name, cfg.attributes, cfg.attribute_types)
        return exists, expected, checker(expected)

    def _check(self, iid: Any, attributes: Any, pointer: str,
               names: dict[str, Verdict] | None = None) -> tuple[str, dict[str, Any]]:
        """One profile's id and attributes, checked against Talon.One's rules and the
        config; returned as they are when they pass (``pointer`` locates them for a 400).

        ``names`` keeps what was found out about each name over one request, so
        a bulk request looks each name up once, not once per profile.
        """
        cfg = self.emulator.config
        names = {} if names is None else names
        iid = check_integration_id(iid, "integrationId", pointer, cfg.reject_ids)
        if not isinstance(attributes, dict):
            raise bad_request(f"attributes of profile {iid!r} must be an object",
                              f"{pointer}/attributes")
        for name, value in attributes.items():
            verdict = names.get(name)
            if verdict is None:
                verdict = names[name] = self._verdict(name, cfg)
            known, expected, check = verdict
            if known and (check is None or (problem := check(value)) is None):
                continue
            where = f"{pointer}/attributes/{name.replace('~', '~0').replace('/', '~1')}"
            if not ATTRIBUTE_NAME.fullmatch(name):
                raise bad_request(f"attribute {name!r} is not a valid name (profile {iid!r})",
                                  where, details=r"attribute names match ^[A-Za-z]\w*$")
            if not known:
                raise bad_request(f"attribute {name!r} does not exist (profile {iid!r})", where,
                                  details="create it in the Campaign Manager (Attributes, "
                                  "entity Customer Profile) or remove it from customAttributes")
            raise bad_request(f"attribute {name!r} has type {expected!r}: {problem} "
                              f"(profile {iid!r})", where,
                              details=f"a {expected} attribute takes "
                              f"{expectation(expected or '')}")
        return iid, attributes

    def _audience_changes(self, iid: str, body: dict[str, Any]) -> list[Action]:
        """The membership actions of a single update's ``audiencesChanges``, checked: a
        400 for a bad shape, a 404 for an audience that does not exist."""
        changes = body.get("audiencesChanges")
        if changes is None:
            return []
        if not isinstance(changes, dict) or set(changes) != {"adds", "deletes"}:
            raise bad_request("audiencesChanges must be {\"adds\": [...], \"deletes\": [...]}",
                              "/audiencesChanges")
        actions: list[Action] = []
        for key, action in (("adds", "add"), ("deletes", "delete")):
            ids = changes[key]
            if not isinstance(ids, list) or not all(
                    isinstance(i, int) and not isinstance(i, bool) for i in ids):
                raise bad_request(f"audiencesChanges.{key} must be a list of audience ids",
                                  f"/audiencesChanges/{key}")
            for index, audience_id in enumerate(ids):
                if self.emulator.audiences.get(audience_id) is None:
                    raise Problem(404, f"audience {audience_id} does not exist",
                                  title="Not found", pointer=f"/audiencesChanges/{key}/{index}")
                actions.append((action, iid, audience_id))
        return actions

    @staticmethod
    def _check_extras(body: dict[str, Any]) -> None:
        """``responseContent`` of a single update, when present."""
        content = body.get("responseContent")
        if content is not None and (
                not isinstance(content, list) or not all(isinstance(c, str) for c in content)):
            raise bad_request("responseContent must be a list of strings", "/responseContent")

    def _write(self, items: Items, exchange: Exchange, snapshot: bool) -> list[dict[str, Any]]:
        """Store ``items``, holding their ids (and the latency) so a concurrent write gets 409."""
        ids = {iid for iid, _ in items}
        with self._lock:
            clash = ids & self._busy
            if clash:
                shown = ", ".join(repr(i) for i in sorted(clash)[:3])
                raise Problem(409, "Too many requests are updating this profile at the same "
                              "time", title="Conflict", details=f"profile {shown} is being "
                              "updated by another request; retry after a pause")
            self._busy |= ids
        try:
            self.emulator.pause(exchange)
            stored = self.emulator.store.upsert(items, snapshot)
            self.emulator.traffic.count_updates(len(items))
            return stored
        finally:
            with self._lock:
                self._busy -= ids
