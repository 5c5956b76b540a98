"""Engine rules beyond the shared vectors: the decisions the contract leaves open."""

from __future__ import annotations

import math

import pytest

from talon_classic.coerce import MISMATCH
from talon_classic.transform import Engine, snake_case

ENGINE = Engine(["email", "a_b", "tags", "address_*", "x"])


def ev(traits=None, **extra):
    event = {"type": "identify", "userId": "u1", **extra}
    if traits is not None:
        event["traits"] = traits
    return event


@pytest.mark.parametrize(
    "key, name",
    [
        ("Order Completed Last 30days", "order_completed_last_30days"),
        ("VIPCustomers", "vip_customers"),
        ("High-Value Customers (EU)", "high_value_customers_eu"),
        ("Käufer Berlin", "kaufer_berlin"),
        ("j_o_first_purchase__opened_email", "j_o_first_purchase__opened_email"),
    ],
)
def test_snake_case(key: str, name: str) -> None:
    assert snake_case(key) == name


def test_not_an_object_is_invalid_event() -> None:
    assert ENGINE.transform([1, 2]).skipped == "invalid_event"
    assert ENGINE.transform("x").skipped == "invalid_event"


def test_null_type_counts_as_absent() -> None:
    assert ENGINE.transform({"type": None, "userId": "u"}).kept


def test_non_string_type_is_not_identify() -> None:
    assert ENGINE.transform({"type": 5, "userId": "u"}).skipped == "not_identify"


@pytest.mark.parametrize(
    "user_id, expect",
    [(42.0, "42"), (4.5, "4.5"), (-7, "-7"), (" a b ", "a b")],
)
def test_numeric_and_trimmed_ids(user_id, expect) -> None:
    assert ENGINE.transform(ev(userId=user_id)).integration_id == expect


@pytest.mark.parametrize(
    "user_id, reason",
    [
        (math.nan, "invalid_user_id"),
        (math.inf, "invalid_user_id"),
        ({"id": 1}, "invalid_user_id"),
        (["u"], "invalid_user_id"),
        (False, "invalid_user_id"),
        ("x" * 1001, "invalid_user_id"),
        (None, "no_user_id"),
        ("", "no_user_id"),
    ],
)
def test_bad_ids(user_id, reason) -> None:
    result = ENGINE.transform(ev(userId=user_id))
    assert result.skipped == reason
    assert result.error


def test_id_of_exactly_1000_characters_is_kept() -> None:
    assert ENGINE.transform(ev(userId="x" * 1000)).kept


def test_context_traits_not_object_is_invalid() -> None:
    assert ENGINE.transform(ev(context={"traits": "x"})).skipped == "invalid_event"


def test_null_traits_means_none_and_context_is_not_used() -> None:
    event = {"userId": "u1", "traits": None, "context": {"traits": {"email": "c"}}}
    result = ENGINE.transform(event)
    assert result.attributes == {}


@pytest.mark.parametrize(
    "integrations, kept",
    [
        ({"All": False}, False),
        ({"All": False, "Talon_One": True}, True),
        ({"All": False, "Talon.One": {}}, True),  # an options object keeps it on
        ({"Talon.One": False}, False),
        ({"Talon_One": 0}, False),
        ({"All": True, "Talon.One": None}, False),
        ({"All": True}, True),
        ("nonsense", True),
    ],
)
def test_integrations(integrations, kept) -> None:
    result = ENGINE.transform(ev({"email": "e"}, integrations=integrations))
    assert result.kept is kept
    if not kept:
        assert result.skipped == "disabled_by_integrations"


def test_collision_equal_depth_later_wins() -> None:
    result = ENGINE.transform(ev({"a": {"b": 1}, "a_b": 2, "x": 0}))
    assert result.attributes["a_b"] == 2
    # literal a_b at depth 1 beats a.b at depth 2 whatever the order
    result = ENGINE.transform(ev({"a_b": 1, "a": {"b": 2}}))
    assert result.attributes["a_b"] == 1
    assert ("a_b", "collision") in result.dropped


def test_collision_same_depth() -> None:
    result = Engine(["a_b_c"]).transform(ev({"a": {"b_c": 1}, "a_b": {"c": 2}}))
    assert result.attributes == {"a_b_c": 2}
    assert result.dropped == [("a_b_c", "collision")]


def test_lists_and_unsupported_values() -> None:
    result = ENGINE.transform(
        ev({"tags": [None, None], "email": math.inf, "address": {"x": [[1]], "y": 1}})
    )
    assert result.attributes == {"tags": [], "address_y": 1}
    assert ("email", "unsupported_value") in result.dropped
    assert ("address_x", "unsupported_value") in result.dropped


def test_empty_object_contributes_nothing() -> None:
    assert ENGINE.transform(ev({"address": {}})).attributes == {}


def persona(cls, key="VIP Customers", **extra):
    return {"personas": {"computation_class": cls, "computation_key": key, **extra}}


@pytest.mark.parametrize("value, expect", [("TRUE", True), ("False", False), (True, True)])
def test_audience_values(value, expect) -> None:
    result = ENGINE.transform(ev({"VIP Customers": value}, context=persona("audience")))
    assert result.attributes == {"vip_customers": expect}


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_audience_invalid_value(value) -> None:
    result = ENGINE.transform(ev({"VIP Customers": value}, context=persona("journey_step")))
    assert result.attributes == {}
    assert result.dropped == [("vip_customers", "invalid_audience_value")]


def test_computed_trait_object_is_flattened_under_its_name() -> None:
    result = ENGINE.transform(
        ev({"Top Items": {"first": "a", "n": 2}}, context=persona("computed_trait", "Top Items"))
    )
    assert result.attributes == {"top_items_first": "a", "top_items_n": 2}


def test_engage_attribute_wins_over_ordinary_trait() -> None:
    engine = Engine(["vip_customers"])
    result = engine.transform(
        ev({"vip_customers": "no", "VIPCustomers": True}, context=persona("audience", "VIPCustomers"))
    )
    assert result.attributes == {"vip_customers": True}
    assert ("vip_customers", "collision") in result.dropped


def test_engage_key_missing_from_traits_adds_nothing() -> None:
    assert ENGINE.transform(ev({"email": "e"}, context=persona("audience"))).attributes == {
        "email": "e"
    }


def test_unknown_computation_class_is_ordinary() -> None:
    result = ENGINE.transform(ev({"VIP Customers": True}, context=persona("something")))
    assert result.dropped == [("VIP Customers", "not_allowlisted")]


def test_allowlist_pattern_is_case_sensitive() -> None:
    result = ENGINE.transform(ev({"Address": {"city": "B"}, "address": {"city": "C"}}))
    assert result.attributes == {"address_city": "C"}


def test_as_dict_shapes() -> None:
    assert ENGINE.transform({"userId": None}).as_dict() == {
        "skipped": "no_user_id",
        "error": ENGINE.transform({"userId": None}).error,
    }
    assert ENGINE.transform(ev({"zz": 1})).as_dict() == {
        "integrationId": "u1",
        "attributes": {},
        "dropped": [{"name": "zz", "reason": "not_allowlisted"}],
    }


def test_reason_codes_are_exactly_the_contracts() -> None:
    from talon_classic.transform import DROP_REASONS, SKIP_REASONS

    assert set(SKIP_REASONS) == {"invalid_json", "invalid_event", "not_identify",
                                 "disabled_by_integrations", "no_user_id", "invalid_user_id"}
    # the contract's, and the two decided at delivery against the ledger (never by the engine)
    assert set(DROP_REASONS) == {"not_allowlisted", "unsupported_value", "collision",
                                 "invalid_audience_value", "unknown_attribute", "type_mismatch",
                                 "superseded", "unchanged"}


# -- values JSON can carry but Talon.One cannot take (issue 11, item 7) ------------------------

ALL = Engine(["*"])


def deep(levels: int, leaf=1, key: str = "a"):
    """``{key: {key: ... leaf}}`` with ``levels`` keys on the path to ``leaf``."""
    value = leaf
    for _ in range(levels):
        value = {key: value}
    return value


def test_lone_surrogates_in_values_are_dropped() -> None:
    result = ALL.transform(ev({"a": "\ud800", "b": ["x", "\udfff"], "c": "ok é 𝄞",
                               "d": {"e": "x\udc80y"}}))
    assert result.attributes == {"c": "ok é 𝄞"}
    assert sorted(result.dropped) == [("a", "unsupported_value"), ("b", "unsupported_value"),
                                      ("d_e", "unsupported_value")]


def test_lone_surrogates_in_names_drop_the_attribute_and_are_reported_escaped() -> None:
    result = ALL.transform(ev({"n\ud800me": "x", "o": {"k\udc80": {"z": 1}}, "ok": 1}))
    assert result.attributes == {"ok": 1}
    assert sorted(result.dropped) == [("n\\ud800me", "unsupported_value"),
                                      ("o_k\\udc80_z", "unsupported_value")]
    # reported names are printable text
    for name, _ in result.dropped:
        name.encode("utf-8")
    # an allowlist that would not take them reports them as unsupported just the same
    assert ENGINE.transform(ev({"x\ud800": 1})).dropped == [("x\\ud800", "unsupported_value")]


@pytest.mark.parametrize("user_id", ["\ud800", "a\udfffb", " \udc80 "])
def test_a_user_id_with_a_lone_surrogate_is_invalid(user_id: str) -> None:
    result = ENGINE.transform(ev(userId=user_id))
    assert result.skipped == "invalid_user_id"
    assert "lone surrogate" in result.error
    result.error.encode("utf-8")


def test_non_ascii_user_ids_are_still_fine() -> None:
    assert ENGINE.transform(ev(userId="Jürgen 𝄞")).integration_id == "Jürgen 𝄞"


def test_integers_a_float64_cannot_hold_exactly_are_dropped() -> None:
    safe = 2**53 - 1
    result = ALL.transform(ev({
        "ok": safe, "neg": -safe, "zero": 0, "flag": True, "f": 1e300,
        "big": safe + 1, "nbig": -safe - 1, "huge": 10**400, "list": [1, 2**64], "okl": [safe],
    }))
    assert result.attributes == {"ok": safe, "neg": -safe, "zero": 0, "flag": True, "f": 1e300,
                                 "okl": [safe]}
    assert sorted(n for n, r in result.dropped if r == "unsupported_value") == [
        "big", "huge", "list", "nbig"]


def test_an_integer_too_long_for_python_text_is_dropped_without_error() -> None:
    beyond_the_str_limit = 10**5000  # str() of it raises ValueError (4300-digit limit)
    assert ALL.transform(ev({"n": beyond_the_str_limit})).dropped == [("n", "unsupported_value")]


@pytest.mark.parametrize("user_id, expect", [
    (10**400, "1" + "0" * 400), (-(10**998), "-1" + "0" * 998), (10**999, "1" + "0" * 999)],
    ids=["1e400", "-1e998", "1e999"])
def test_large_integer_user_ids_are_their_digits(user_id: int, expect: str) -> None:
    assert ENGINE.transform(ev(userId=user_id)).integration_id == expect


@pytest.mark.parametrize("user_id", [10**1000, -(10**999), 10**5000, -(10**100_000)],
                         ids=["1e1000", "-1e999", "1e5000", "-1e100000"])
def test_integer_user_ids_over_1000_characters_are_invalid(user_id: int) -> None:
    result = ENGINE.transform(ev(userId=user_id))
    assert (result.skipped, "1000" in result.error) == ("invalid_user_id", True)


def test_nesting_is_cut_at_the_limit_without_recursion() -> None:
    from talon_classic.transform import MAX_TRAIT_DEPTH

    assert MAX_TRAIT_DEPTH == 64
    at_limit = "_".join(["k"] * MAX_TRAIT_DEPTH)
    result = ALL.transform(ev({"k": deep(MAX_TRAIT_DEPTH - 1, key="k"), "x": 1}))
    assert result.attributes == {at_limit: 1, "x": 1}
    for levels in (MAX_TRAIT_DEPTH, 1000, 100_000):
        result = ALL.transform(ev({"k": deep(levels, key="k"), "x": 1}))
        assert result.attributes == {"x": 1}
        assert result.dropped == [(at_limit, "unsupported_value")]
    # an empty object at the limit holds nothing to drop, as anywhere else
    assert ALL.transform(ev({"k": deep(MAX_TRAIT_DEPTH - 1, {}, key="k")})).dropped == []


def test_nesting_limit_holds_when_names_collide_and_for_engage() -> None:
    from talon_classic.transform import MAX_TRAIT_DEPTH

    at_limit = "_".join(["a"] * MAX_TRAIT_DEPTH)
    result = ALL.transform(ev({"a_b": 1, "a": {"b": 2, "a": deep(5000)}}))  # the collision walk
    assert result.attributes == {"a_b": 1}
    assert set(result.dropped) == {("a_b", "collision"), (at_limit, "unsupported_value")}
    engage = ALL.transform(ev({"Score": {"a": deep(5000)}}, context={
        "personas": {"computation_class": "trait", "computation_key": "Score"}}))
    assert engage.attributes == {}
    assert engage.dropped == [("score_" + "_".join(["a"] * (MAX_TRAIT_DEPTH - 1)),
                               "unsupported_value")]


def test_engage_values_follow_the_same_rules() -> None:
    context = {"personas": {"computation_class": "computed_trait", "computation_key": "ltv"}}
    result = ENGINE.transform(ev({"ltv": {"a": 10**400, "b": "\ud800", "c\ud800": 1, "d": 2}},
                                 context=context))
    assert result.attributes == {"ltv_d": 2}
    assert sorted(result.dropped) == [("ltv_a", "unsupported_value"),
                                      ("ltv_b", "unsupported_value"),
                                      ("ltv_c\\ud800", "unsupported_value")]


# -- with a schema (typed-attributes contract; the worked cases are in test_typed_vectors) --
def typed_engine(allowlist, types):
    from talon_classic.schema import Schema

    return Engine(allowlist, Schema(types))


def test_without_a_schema_nothing_is_typed() -> None:
    result = Engine(["age", "x"]).transform(ev({"age": "42", "x": [1]}))
    assert result.attributes == {"age": "42", "x": [1]} and result.dropped == []


def test_values_of_the_right_type_are_kept_as_they_are() -> None:
    name = "Ada Lovelace"
    result = typed_engine(["name", "age"], {"name": "string", "age": "number"}).transform(
        ev({"name": name, "age": 36}))
    assert result.attributes == {"name": name, "age": 36} and result.dropped == []
    assert result.attributes["name"] is name


def test_typing_keeps_the_order_and_the_other_drops() -> None:
    engine = typed_engine(["a", "b", "c", "d"], {"a": "number", "b": "boolean", "d": "string"})
    result = engine.transform(ev({"a": "1", "zz": 1, "b": "nope", "c": 3, "d": 4}))
    assert list(result.attributes.items()) == [("a", 1), ("d", "4")]
    assert result.dropped == [("zz", "not_allowlisted"), ("b", "type_mismatch"),
                              ("c", "unknown_attribute")]


def test_engage_attributes_are_typed_too() -> None:
    engine = typed_engine([], {"ltv": "number"})
    result = engine.transform(ev({"ltv": {"eur": "3"}}, context=persona("trait", "ltv")))
    assert result.attributes == {} and result.dropped == [("ltv_eur", "unknown_attribute")]
    assert engine.engage_names == {"ltv_eur"}
    bad = engine.transform(ev({"VIP": "maybe"}, context=persona("audience", "VIP")))
    assert bad.dropped == [("vip", "invalid_audience_value")]  # never typed on top


def test_a_typed_engine_for_settings() -> None:
    from talon_classic.schema import Schema
    from talon_classic.settings import Settings

    engine = Engine(Settings(custom_attributes=("age",)), schema=Schema({"age": "number"}))
    assert engine.transform(ev({"age": " 7 "})).attributes == {"age": 7}
    assert engine.schema is not None and engine.schema["age"] == "number"


def test_one_name_set_with_changing_value_types() -> None:
    """Plans are cached per names and value types: every combination stays right."""
    engine = typed_engine(["age", "tags"], {"age": "number", "tags": "(list string)"})
    for _ in range(2):
        assert engine.transform(ev({"age": "42", "tags": ["a"]})).attributes == {
            "age": 42, "tags": ["a"]}
        assert engine.transform(ev({"age": 41, "tags": [1]})).attributes == {
            "age": 41, "tags": ["1"]}
        bad = engine.transform(ev({"age": "x", "tags": "a"}))
        assert bad.attributes == {} and sorted(bad.dropped) == [
            ("age", "type_mismatch"), ("tags", "type_mismatch")]
        assert engine.transform(ev({"age": True, "tags": []})).dropped == [("age", "type_mismatch")]


def test_string_lists_are_checked_item_by_item_every_time() -> None:
    """The same value types each time (a list): whether its items are strings is looked at
    per event, whatever the last event's items were."""
    engine = typed_engine(["tags", "more", "age"], {"tags": "(list string)",
                                                    "more": "(list string)", "age": "number"})
    for _ in range(2):
        assert engine.transform(ev({"tags": ["a"], "more": []})).attributes == {
            "tags": ["a"], "more": []}
        assert engine.transform(ev({"tags": ["a"], "more": [1, True]})).attributes == {
            "tags": ["a"], "more": ["1", "true"]}
        assert engine.transform(ev({"tags": [2.5], "more": ["b"]})).attributes == {
            "tags": ["2.5"], "more": ["b"]}
        got = engine.transform(ev({"tags": "ab", "more": ["b"]}))
        assert got.attributes == {"more": ["b"]} and got.dropped == [("tags", "type_mismatch")]
        assert engine.transform(ev({"tags": ["a"], "more": ["b"], "age": "3"})).attributes == {
            "tags": ["a"], "more": ["b"], "age": 3}


def test_typing_decided_with_the_allowlist_stays_right_with_engage_in_between() -> None:
    """One cache entry per set of flattened names holds the allowlist's and typing's decisions;
    an Engage attribute joining the same names is typed on its own."""
    engine = typed_engine(["age", "plan"], {"age": "number", "vip": "boolean"})
    plain = {"age": "7", "plan": "gold", "x": 1}
    for _ in range(2):
        got = engine.transform(ev(plain))
        assert got.attributes == {"age": 7}
        assert got.dropped == [("x", "not_allowlisted"), ("plan", "unknown_attribute")]
        engaged = engine.transform(ev({**plain, "VIP": "true"}, context=persona("audience", "VIP")))
        assert engaged.attributes == {"age": 7, "vip": True}
        assert engine.transform(ev({**plain, "age": 8})).attributes == {"age": 8}


def test_typed_engine_matches_its_definition() -> None:
    """Property: typed output = untyped output, then each attribute coerced or dropped."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from talon_classic.coerce import KNOWN_TYPES, coerce

    names = st.sampled_from(["a", "b", "c", "d", "e"])
    scalars = st.one_of(st.text(max_size=4), st.sampled_from(["1", " 2.5", "true", "2024-05-01"]),
                        st.integers(-10**13, 10**13), st.booleans(), st.none(),
                        st.floats(allow_nan=False, allow_infinity=False))
    values = st.one_of(scalars, st.lists(scalars, max_size=3))
    schemas = st.dictionaries(names, st.sampled_from(KNOWN_TYPES + ("other",)), max_size=5)

    @settings(max_examples=150, deadline=None)
    @given(schemas, st.lists(st.dictionaries(names, values, max_size=5), min_size=1, max_size=6))
    def check(types: dict, traits_list: list) -> None:
        plain = Engine(["*"])
        typed = typed_engine(["*"], types)
        for traits in traits_list:  # several events through one engine: its caches are used
            base = plain.transform(ev(traits))
            got = typed.transform(ev(traits))
            want, dropped = {}, list(base.dropped)
            for name, value in base.attributes.items():
                if name not in types:
                    dropped.append((name, "unknown_attribute"))
                    continue
                new = coerce(value, types[name])
                if new is MISMATCH:
                    dropped.append((name, "type_mismatch"))
                else:
                    want[name] = new
            assert repr(got.attributes) == repr(want)
            assert sorted(got.dropped) == sorted(dropped)

    check()


@pytest.mark.parametrize("event", [
    {"userId": 2.0**63, "traits": {}},
    {"userId": -1e30, "type": "track", "event": "Audience Entered", "context": {"personas": {
        "computation_class": "audience", "computation_key": "vip", "computation_id": "a1"}}},
    {"userId": "u", "traits": {"a": 1e19}},
    {"userId": "u", "traits": {"a": {"b": -2.0**63}}},
    {"userId": "u", "traits": {"a": [1, 2.5, 1e300]}},
    {"userId": "u", "traits": {"zzz": 1e30}},  # not allowlisted: its drop reason depends on it
    {"userId": "u", "traits": {"a": 1e30, "a_": 1}, "context": {}},
    {"userId": "u", "traits": {"score": {"x": 9.3e18}}, "context": {"personas": {
        "computation_class": "computed_trait", "computation_key": "score"}}},
])
def test_a_float_that_may_stand_for_a_long_integer_makes_the_result_approximate(
        event: dict) -> None:
    result = Engine(["a*"], engage_audiences="both").transform(event)
    assert result.approximate
    assert all(reason != "approximate" for _, reason in result.dropped)  # no marks left


def test_a_result_with_ordinary_floats_is_exact_and_approximate_is_not_compared() -> None:
    engine = Engine(["a", "b"])
    plain = engine.transform({"userId": 9.2e18, "traits": {"a": [9.2e18, 1.5], "b": math.inf}})
    assert not plain.approximate and plain.dropped == [("b", "unsupported_value")]
    big = engine.transform({"userId": "u", "traits": {"a": 1e30}})
    assert big.approximate and big.attributes == {"a": 1e30}
    same = engine.transform({"userId": "u", "traits": {"a": 1e30}})
    same.approximate = False
    assert same == big and repr(same) == repr(big) and same.as_dict() == big.as_dict()
