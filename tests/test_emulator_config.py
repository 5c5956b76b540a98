"""EmulatorConfig: values checked on construction, shown without the key."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from talon_classic.emulator import EmulatorConfig


@pytest.mark.parametrize("bad", [
    {"api_key": ""}, {"api_key": 7}, {"rate_limit": "fast"}, {"rate_limit": -1},
    {"latency_ms": float("inf")}, {"latency_ms": float("nan")}, {"fail_rate": 2},
    {"fail_status": 99}, {"fail_status": True}, {"fail_next": 1.5}, {"hang_next": -1},
    {"drop_next": True}, {"attributes": "plan"}, {"attributes": ["plan", 3]},
    {"reject_ids": "x"}, {"db": 3}, {"seed": "42"}, {"seed": True},
    {"management_key": ""}, {"management_key": None}, {"management_rate_limit": -1},
    {"attributes": {"age": 3}}, {"attributes": {"consent_*": "boolean"}},
    {"attribute_types": ["age"]}, {"attribute_types": {"age": ""}}, {"hang_apply": 1},
])
def test_bad_values_are_refused(bad) -> None:
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        EmulatorConfig(**bad)


def test_lists_become_frozensets_and_numbers_their_kind() -> None:
    config = EmulatorConfig(attributes=["plan", "email"], reject_ids={"x"}, rate_limit=2,
                            fail_next=3.0)
    assert config.attributes == frozenset({"plan", "email"})
    assert config.reject_ids == frozenset({"x"})
    assert isinstance(config.rate_limit, float) and config.fail_next == 3
    assert isinstance(config.fail_next, int)


def test_public_is_json_ready_and_keyless() -> None:
    config = EmulatorConfig(api_key="secret-key-1", management_key="secret-key-2",
                            attributes=["b", "a"], reject_ids=["z"])
    public = config.public()
    assert "api_key" not in public and "secret-key-1" not in repr(config)
    assert "management_key" not in public and "secret-key-2" not in repr(config)
    assert (public["attributes"], public["reject_ids"]) == (["a", "b"], ["z"])
    assert EmulatorConfig().public()["attributes"] is None
    assert json.loads(json.dumps(public)) == public


def test_a_mapping_of_attributes_gives_names_and_types() -> None:
    config = EmulatorConfig(attributes={"age": "number", "note": None, "consent_*": None})
    assert config.attributes == frozenset({"age", "note", "consent_*"})
    assert dict(config.attribute_types) == {"age": "number"}
    assert config.public()["attribute_types"] == {"age": "number"}
    # names given as a set keep the types (what identify --emulator does as Engage names appear)
    grown = replace(config, attributes=config.attributes | {"vip"})
    assert dict(grown.attribute_types) == {"age": "number"} and "vip" in grown.attributes
    # a mapping replaces the types whole
    retyped = replace(config, attributes={"age": None})
    assert dict(retyped.attribute_types) == {}
    with pytest.raises(TypeError):
        config.attribute_types["age"] = "string"  # type: ignore[index]


def test_defaults_for_the_management_api_and_hangs() -> None:
    config = EmulatorConfig()
    assert (config.management_key, config.management_rate_limit) == (
        "emulator-management-key", 3.0)
    assert config.hang_apply is True and dict(config.attribute_types) == {}
