"""Engage audience events as memberships: which events say "u entered/left X", and the engine."""

from __future__ import annotations

from typing import Any

import pytest

from talon_classic.engage import EngageMembership, membership_of
from talon_classic.transform import Engine

PERSONAS = {"computation_class": "audience", "computation_key": "vip_users",
            "computation_id": "aud_1", "space_id": "spa_1"}


def identify(user: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "traits": {"vip_users": value, **extra},
            "context": {"personas": dict(PERSONAS)}}


def track(user: str, name: str, personas: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "track", "event": name, "userId": user,
            "properties": {"audience_key": "vip_users", "vip_users": name.endswith("Entered")},
            "context": {"personas": dict(PERSONAS) if personas is None else personas}}


ADD = EngageMembership("add", "aud_1", "vip_users")
DELETE = EngageMembership("delete", "aud_1", "vip_users")


@pytest.mark.parametrize(("event", "expected"), [
    (identify("u1", True), ADD),
    (identify("u1", False), DELETE),
    (identify("u1", "TRUE"), ADD),
    (identify("u1", "false"), DELETE),
    (identify("u1", 1), None),  # not a boolean: the engine drops it as invalid_audience_value
    (track("u1", "Audience Entered"), ADD),
    (track("u1", "Audience Exited"), DELETE),
    (track("u1", "Order Completed"), None),
    (track("u1", "Audience Entered", {**PERSONAS, "computation_class": "trait"}), None),
    (track("u1", "Audience Entered", {k: v for k, v in PERSONAS.items()
                                      if k != "computation_id"}), None),
    (track("u1", "Audience Entered", {k: v for k, v in PERSONAS.items()
                                      if k != "computation_key"}), ADD),  # properties name it
    ({**identify("u1", True), "context": {"personas": {**PERSONAS, "computation_id": ""}}}, None),
    ({"type": "identify", "userId": "u1", "context": {"traits": {"vip_users": True},
                                                      "personas": PERSONAS}}, ADD),
    ({"type": "page", "userId": "u1", "context": {"personas": PERSONAS}}, None),
    ("not an event", None),
])
def test_membership_of(event: Any, expected: EngageMembership | None) -> None:
    assert membership_of(event) == expected


def test_attributes_mode_is_the_classic_destination() -> None:
    engine = Engine(["email"])
    result = engine.transform(identify("u1", True, email="a@x"))
    assert result.attributes == {"email": "a@x", "vip_users": True} and not result.memberships
    assert "memberships" not in result.as_dict()
    assert engine.transform(track("u1", "Audience Entered")).skipped == "not_identify"


def test_memberships_mode_sends_the_membership_instead_of_the_attribute() -> None:
    engine = Engine(["email"], engage_audiences="memberships")
    result = engine.transform(identify("u1", True, email="a@x"))
    assert result.attributes == {"email": "a@x"} and result.dropped == []
    assert result.as_dict()["memberships"] == [
        {"action": "add", "audience": "vip_users", "computation_id": "aud_1"}]
    assert "vip_users" not in engine.engage_names
    bad = engine.transform(identify("u1", 3))  # no membership: the attribute's own rules
    assert bad.dropped == [("vip_users", "invalid_audience_value")] and not bad.memberships


def test_both_mode_sends_attribute_and_membership() -> None:
    result = Engine([], engage_audiences="both").transform(identify("u1", False))
    assert result.attributes == {"vip_users": False}
    assert result.memberships == (DELETE,)


def test_audience_tracks_are_kept_as_an_empty_upsert_and_a_membership() -> None:
    engine = Engine(["email"], engage_audiences="memberships")
    result = engine.transform(track("u1", "Audience Exited"))
    assert result.kept and result.integration_id == "u1" and result.attributes == {}
    assert result.as_dict() == {"integrationId": "u1", "attributes": {}, "dropped": [],
                                "memberships": [{"action": "delete", "audience": "vip_users",
                                                 "computation_id": "aud_1"}]}
    # what every event must pass still applies
    assert engine.transform({**track("u1", "Audience Entered"),
                             "integrations": {"Talon.One": False}}).skipped == (
        "disabled_by_integrations")
    assert engine.transform({**track("", "Audience Entered")}).skipped == "no_user_id"
    assert engine.transform(track("u1", "Order Completed")).skipped == "not_identify"
    assert repr(result).endswith("memberships=(EngageMembership(action='delete', "
                                 "computation_id='aud_1', computation_key='vip_users'),))")


def test_an_engine_built_from_settings_takes_their_engage_audiences() -> None:
    from talon_classic.settings import Settings

    engine = Engine(Settings(custom_attributes=("email",), engage_audiences="memberships"))
    assert engine.engage_audiences == "memberships"
    assert Engine(Settings(), engage_audiences="both").engage_audiences == "both"
    assert Engine(["email"]).engage_audiences == "attributes"
