"""EmulatorConfig: values checked on construction, shown without the key."""

from __future__ import annotations

import pytest

from talon_classic.emulator import EmulatorConfig


@pytest.mark.parametrize("bad", [
    {"api_key": ""}, {"api_key": 7}, {"rate_limit": "fast"}, {"rate_limit": -1},
    {"latency_ms": float("inf")}, {"latency_ms": float("nan")}, {"fail_rate": 2},
    {"fail_status": 99}, {"fail_status": True}, {"fail_next": 1.5}, {"hang_next": -1},
    {"drop_next": True}, {"attributes": "plan"}, {"attributes": ["plan", 3]},
    {"reject_ids": "x"}, {"db": 3}, {"seed": "42"}, {"seed": True},
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
    config = EmulatorConfig(api_key="secret-key-1", attributes=["b", "a"], reject_ids=["z"])
    public = config.public()
    assert "api_key" not in public and "secret-key-1" not in repr(config)
    assert (public["attributes"], public["reject_ids"]) == (["a", "b"], ["z"])
    assert EmulatorConfig().public()["attributes"] is None
