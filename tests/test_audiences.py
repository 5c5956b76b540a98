"""The audience values: Audience from Talon.One's object, membership actions, outcomes."""

from __future__ import annotations

import pytest

from talon_classic.audiences import Audience, MembershipAction, MembershipOutcome
from talon_classic.exceptions import AudienceNotFound, DeliveryError, RejectedError


def test_audience_from_talon_ones_object_keeps_everything_and_shows_id_first() -> None:
    raw = {"accountId": 1, "created": "2024-01-01T00:00:00Z", "name": "VIP", "id": 7,
           "integration": "segment", "integrationId": "aud_1", "sandbox": False}
    audience = Audience.from_api(raw)
    assert (audience.id, audience.name, audience.integration, audience.integration_id) == (
        7, "VIP", "segment", "aud_1")
    assert audience.description is None
    shown = audience.as_dict()
    assert list(shown)[:2] == ["id", "name"] and shown == raw
    assert "raw" not in repr(audience)


@pytest.mark.parametrize("data", [None, [], {"name": "x"}, {"id": "1", "name": "x"},
                                  {"id": True, "name": "x"}, {"id": 1, "name": None}])
def test_something_else_is_a_delivery_error(data) -> None:
    with pytest.raises(DeliveryError, match="audience"):
        Audience.from_api(data)


def test_actions_are_talon_ones_items() -> None:
    assert MembershipAction.add("u1", 3).as_json() == {
        "action": "add", "profileIntegrationId": "u1", "audienceId": 3}
    assert MembershipAction.delete("u1", 3) == ("delete", "u1", 3)


def test_outcome_names_the_unknown_audiences() -> None:
    outcome = MembershipOutcome()
    outcome.rejected += [(MembershipAction.add("a", 1), RejectedError("bad", 400)),
                         (MembershipAction.add("b", 2), AudienceNotFound("gone", 2))]
    assert outcome.unknown_audiences == {2}
