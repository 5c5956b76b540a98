"""The pytest plugin: the emulator handle's helpers, over real HTTP."""

from __future__ import annotations

import pytest
from emulator_http import bulk


@pytest.mark.parametrize("iid", [".", "..", "...", "a.b", ".a", "a.", "../x", "a/b", "%2E",
                                 "x..y", "ü ?#"])
def test_profile_reads_any_id(talon_emulator, iid) -> None:
    """Dots used to be sent as dot segments: profile("..") asked for /_emulator/ (None)."""
    assert bulk(talon_emulator, [{"integrationId": iid, "attributes": {"n": 1}}]).status_code == 204
    assert talon_emulator.profile(iid) == {"integrationId": iid, "attributes": {"n": 1}}
    assert talon_emulator.requests()[-1]["path"] == "/v2/customer_profiles"
    other = "." if iid != "." else ".."
    assert talon_emulator.profile(other) is None


def test_configure_keeps_types_and_takes_any_iterable(talon_emulator) -> None:
    public = talon_emulator.configure(attributes={"age": "number", "plan": None},
                                      reject_ids={"x"})
    assert (public["attributes"], public["attribute_types"], public["reject_ids"]) == (
        ["age", "plan"], {"age": "number"}, ["x"])
    public = talon_emulator.configure(attributes=("plan", "age"))  # a set of names keeps types
    assert public["attribute_types"] == {"age": "number"}
    public = talon_emulator.configure(attribute_types={"plan": "string"})
    assert public["attribute_types"] == {"plan": "string"}
    with pytest.raises(ValueError, match="pattern 'c_\\*' cannot have a type"):
        talon_emulator.configure(attributes={"c_*": "boolean"})


def test_factory_takes_typed_attributes_and_a_management_key(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attributes={"age": "number"}, management_key="mk-123456789012")
    assert emu.management_key == "mk-123456789012"
    assert emu.management_headers == {"Authorization": "ManagementKey-v1 mk-123456789012"}
    assert emu.app.config.management_rate_limit == 0 and emu.app.config.rate_limit == 0
    assert bulk(emu, [{"integrationId": "u", "attributes": {"age": "1"}}]).status_code == 400


def test_audience_helpers(talon_emulator) -> None:
    from emulator_http import add, audience_actions, create_audience

    assert talon_emulator.audiences() == [] and talon_emulator.audience_members(1) is None
    aid = create_audience(talon_emulator, name="vip", integrationId="x").json()["id"]
    audience_actions(talon_emulator, [add("b", aid), add("a", aid)])
    assert talon_emulator.audiences() == [{"id": aid, "name": "vip", "integrationId": "x",
                                           "members": 2}]
    assert talon_emulator.audience_members(aid) == ["a", "b"]
    talon_emulator.reset()
    assert talon_emulator.audiences() == []
