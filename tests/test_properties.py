"""Property-based tests of flattening (hypothesis)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.transform import Engine

ENGINE = Engine(["*"])
keys = st.text(alphabet="abc_", min_size=1, max_size=3)
scalars = st.one_of(st.text(max_size=5), st.integers(), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.none())
values = st.recursive(
    scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(keys, children, max_size=4)),
    max_leaves=12,
)
traits_strategy = st.dictionaries(keys, values, max_size=6)


def leaf_paths(obj: dict[str, Any], prefix: str = "") -> set[str]:
    """Every name a leaf (non-dict value, non-null) of ``obj`` could flatten to."""
    out: set[str] = set()
    for key, value in obj.items():
        name = prefix + key
        if isinstance(value, dict):
            out |= leaf_paths(value, name + "_")
        elif value is not None:
            out.add(name)
    return out


def run(traits: dict[str, Any]):
    return ENGINE.transform({"type": "identify", "userId": "u", "traits": traits})


@settings(max_examples=300, deadline=None)
@given(traits_strategy)
def test_every_name_comes_from_an_input_path(traits) -> None:
    result = run(traits)
    assert set(result.attributes) <= leaf_paths(traits)
    assert {name for name, _ in result.dropped} <= leaf_paths(traits)


@settings(max_examples=300, deadline=None)
@given(traits_strategy)
def test_no_value_is_an_object_and_lists_hold_scalars(traits) -> None:
    for value in run(traits).attributes.values():
        assert not isinstance(value, dict) and value is not None
        if isinstance(value, list):
            assert all(v is not None and not isinstance(v, (dict, list)) for v in value)


@settings(max_examples=300, deadline=None)
@given(traits_strategy)
def test_every_leaf_is_kept_or_dropped(traits) -> None:
    result = run(traits)
    accounted = set(result.attributes) | {name for name, _ in result.dropped}
    assert leaf_paths(traits) == accounted


@settings(max_examples=300, deadline=None)
@given(traits_strategy)
def test_transforming_the_output_again_is_stable(traits) -> None:
    once = run(traits).attributes
    twice = run(once)
    assert twice.attributes == once
    assert twice.dropped == []


@settings(max_examples=300, deadline=None)
@given(traits_strategy)
def test_fast_flatten_agrees_with_the_full_one(traits) -> None:
    """The collision-free fast path gives exactly what the depth-tracking walk gives."""
    from talon_classic.transform import _flatten, _flatten_simple

    fast_flat: dict = {}
    fast_dropped: list = []
    slow_flat: dict = {}
    slow_dropped: list = []
    _flatten(traits, "", 1, slow_flat, {}, slow_dropped)
    if _flatten_simple(traits, "", fast_flat, fast_dropped):  # else the engine uses the full one
        assert list(fast_flat.items()) == list(slow_flat.items())
        assert fast_dropped == slow_dropped
