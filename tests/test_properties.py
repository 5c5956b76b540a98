"""Property-based tests of flattening (hypothesis), allowlist ``["*"]``.

Two shapes of traits are generated: keys matching ``[a-z]{1,3}`` (every path
flattens to its own name) and keys that may hold ``_`` (so ``{"a_b": 1,
"a": {"b": 2}}`` collisions happen and the depth rule is exercised).
"""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from talon_classic.transform import Engine, Result, _flatten, _flatten_simple

ENGINE = Engine(["*"])
EXAMPLES = settings(max_examples=200, deadline=None)

plain_keys = st.from_regex(r"[a-z]{1,3}", fullmatch=True)
colliding_keys = st.text(alphabet="ab_", min_size=1, max_size=3)
scalars = st.one_of(st.text(max_size=5), st.integers(), st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False), st.none())


def traits_of(keys: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON-like trait objects: nested dicts, scalars, lists (of anything) and nulls."""
    values = st.recursive(
        scalars,
        lambda children: st.one_of(st.lists(children, max_size=3),
                                   st.dictionaries(keys, children, max_size=4)),
        max_leaves=12,
    )
    return st.dictionaries(keys, values, max_size=6)


any_traits = st.one_of(traits_of(plain_keys), traits_of(colliding_keys))


def leaves(obj: dict[str, Any], prefix: str = "", depth: int = 1) -> list[tuple[str, int, Any]]:
    """``(flattened name, depth, value)`` of every non-null, non-object leaf, in document order."""
    out: list[tuple[str, int, Any]] = []
    for key, value in obj.items():
        name = prefix + key
        if isinstance(value, dict):
            out += leaves(value, name + "_", depth + 1)
        elif value is not None:
            out.append((name, depth, value))
    return out


def leaf_paths(obj: dict[str, Any]) -> set[str]:
    """Every name a leaf of ``obj`` could flatten to (its path keys joined with ``_``)."""
    return {name for name, _, _ in leaves(obj)}


def sendable(value: Any) -> bool:
    """A scalar Talon.One holds exactly: integers within 2**53 - 1 (float64's exact range).

    (The generated text holds no lone surrogates and the floats are finite.)
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) <= 2**53 - 1
    return True


def expected(traits: dict[str, Any]) -> dict[str, Any]:
    """The contract's flattening, written plainly: the oracle for the engine.

    Lists of scalars lose their nulls; lists holding a container are
    unsupported, and so are integers beyond 2**53 - 1 (alone or in a list);
    on a name clash the shallowest leaf wins, the later one at equal depth.
    """
    winners: dict[str, tuple[int, Any]] = {}
    for name, depth, value in leaves(traits):
        if isinstance(value, list):
            if any(isinstance(v, (dict, list)) or not sendable(v) for v in value):
                continue
            value = [v for v in value if v is not None]
        elif not sendable(value):
            continue
        if name not in winners or depth <= winners[name][0]:
            winners[name] = (depth, value)
    return {name: value for name, (_, value) in winners.items()}


def run(traits: dict[str, Any]) -> Result:
    """Transform one identify carrying ``traits``."""
    return ENGINE.transform({"type": "identify", "userId": "u", "traits": traits})


@EXAMPLES
@given(any_traits)
def test_every_name_comes_from_an_input_path(traits: dict[str, Any]) -> None:
    result = run(traits)
    assert set(result.attributes) <= leaf_paths(traits)
    assert {name for name, _ in result.dropped} <= leaf_paths(traits)


@EXAMPLES
@given(any_traits)
def test_no_value_is_an_object_and_lists_hold_scalars(traits: dict[str, Any]) -> None:
    for value in run(traits).attributes.values():
        assert value is not None and not isinstance(value, dict)
        if isinstance(value, float):
            assert math.isfinite(value)
        if isinstance(value, list):
            assert all(v is not None and not isinstance(v, (dict, list)) for v in value)


@EXAMPLES
@given(any_traits)
def test_every_leaf_is_kept_or_dropped(traits: dict[str, Any]) -> None:
    result = run(traits)
    accounted = set(result.attributes) | {name for name, _ in result.dropped}
    assert leaf_paths(traits) == accounted


@EXAMPLES
@given(any_traits)
def test_each_leaf_gives_one_attribute_or_one_drop(traits: dict[str, Any]) -> None:
    result = run(traits)
    assert len(result.attributes) + len(result.dropped) == len(leaves(traits))


@EXAMPLES
@given(traits_of(plain_keys))
def test_without_underscores_nothing_collides(traits: dict[str, Any]) -> None:
    assert all(reason == "unsupported_value" for _, reason in run(traits).dropped)


@EXAMPLES
@given(any_traits)
def test_values_follow_the_contract(traits: dict[str, Any]) -> None:
    """Attribute values equal a plain reading of the contract, collisions included."""
    assert run(traits).attributes == expected(traits)


@EXAMPLES
@given(any_traits)
def test_transforming_the_output_again_is_stable(traits: dict[str, Any]) -> None:
    once = run(traits).attributes
    twice = run(once)
    assert twice.attributes == once
    assert twice.dropped == []


@EXAMPLES
@given(any_traits)
def test_fast_flatten_agrees_with_the_full_one(traits: dict[str, Any]) -> None:
    """The collision-free fast path gives exactly what the depth-tracking walk gives."""
    fast_flat: dict[str, Any] = {}
    fast_dropped: list[tuple[str, str]] = []
    slow_flat: dict[str, Any] = {}
    slow_dropped: list[tuple[str, str]] = []
    _flatten(traits, "", 1, slow_flat, {}, slow_dropped)
    if _flatten_simple(traits, "", fast_flat, fast_dropped):  # else the engine uses the full one
        assert list(fast_flat.items()) == list(slow_flat.items())
        assert fast_dropped == slow_dropped


# -- whatever the engine keeps can be sent, exactly (issue 11, item 7) -------------------------

hostile_scalars = st.one_of(
    scalars,
    st.text(alphabet=st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([2**53 - 1, 2**53, -(2**53)]),
    st.sampled_from([400, 5000]).map(lambda digits: -(10**digits)),  # 5000: over str()'s limit
    st.floats(),
)
hostile_keys = st.one_of(plain_keys, st.text(alphabet=st.sampled_from("a_\ud800\udfff"),
                                             min_size=1, max_size=3))


@EXAMPLES
@given(st.dictionaries(hostile_keys, st.recursive(
    hostile_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(hostile_keys, children, max_size=3)),
    max_leaves=12), max_size=6))
def test_whatever_is_kept_is_sent_exactly(traits: dict[str, Any]) -> None:
    """Kept values encode as UTF-8 JSON and read back equal, as Talon.One's float64 reads them."""
    from talon_classic import jsonio

    result = run(traits)
    body = jsonio.dumps_bytes({"attributes": result.attributes})
    body.decode("utf-8")
    assert jsonio.loads(body)["attributes"] == result.attributes
    for name, value in result.attributes.items():
        name.encode("utf-8")
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                assert math.isfinite(item) and float(item) == item  # float64 holds it exactly
    for name, _ in result.dropped:
        name.encode("utf-8")  # reports are printable
    assert len(result.attributes) + len(result.dropped) <= len(leaves(traits))
