"""The emulator's type check (typed-attributes.md §5), unit by unit and over real HTTP."""

from __future__ import annotations

import pytest
from emulator_http import bulk, error_of, single

from talon_classic.emulator.types import TYPES, is_rfc3339, type_problem

ACCEPTED = [
    ("string", ""), ("string", "42"),
    ("number", 0), ("number", -1.5e3), ("number", 10**30),
    ("boolean", True), ("boolean", False),
    ("time", "2024-05-01T12:30:00Z"), ("time", "2024-05-01T12:30:00.123Z"),
    ("time", "2024-05-01T12:30:00.123456789+02:00"), ("time", "2024-02-29T23:59:59-23:59"),
    ("time", "0001-01-01T00:00:00Z"),
    ("(list string)", []), ("(list string)", ["a", ""]), ("(list number)", [1, 2.5]),
    ("(list time)", ["2024-05-01T00:00:00Z"]),
    ("location", "52.5,13.4"), ("location", {"lat": 1}), ("location", None),
    ("(list location)", "anything"), ("(list location)", [1, "x"]),
    ("map", 3), ("(list whatever)", "x"), (None, {"any": ["thing"]}),
]

REFUSED = [
    ("string", 42, "got a number"), ("string", True, "got a boolean"),
    ("string", None, "got null"), ("string", ["a"], "got an array"),
    ("string", {"a": 1}, "got an object"),
    ("number", True, "got a boolean"), ("number", False, "got a boolean"),
    ("number", "42", "got a string"), ("number", None, "got null"), ("number", [1], "got an array"),
    ("boolean", "true", "got a string"), ("boolean", 1, "got a number"),
    ("boolean", 0, "got a number"), ("boolean", None, "got null"),
    ("time", 1714566600, "got a number"), ("time", True, "got a boolean"),
    ("time", "2024-05-01", "not an RFC 3339"), ("time", "2024-05-01 12:30:00Z", "not an RFC 3339"),
    ("time", "2024-05-01T12:30:00", "not an RFC 3339"),
    ("(list string)", "a", "got a string"), ("(list string)", ["a", 1], "item 1 got a number"),
    ("(list number)", [1, True], "item 1 got a boolean"),
    ("(list number)", ["1"], "item 0 got a string"),
    ("(list time)", ["2024-05-01"], "item 0 got a string that is not"),
    ("(list time)", "2024-05-01T00:00:00Z", "got a string"),
    ("(list string)", None, "got null"),
]


@pytest.mark.parametrize("attribute_type, value", ACCEPTED)
def test_accepted_values(attribute_type, value) -> None:
    assert type_problem(attribute_type, value) is None


@pytest.mark.parametrize("attribute_type, value, reason", REFUSED)
def test_refused_values(attribute_type, value, reason) -> None:
    problem = type_problem(attribute_type, value)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("text", [
    "2024-05-01T12:30:00Z", "2024-05-01T12:30:00+00:00", "2024-05-01T12:30:00.5-07:30",
    "2000-02-29T00:00:00Z", "2024-12-31T23:59:59.999999999999Z",
])
def test_rfc3339_accepts_full_date_times_with_an_offset(text) -> None:
    assert is_rfc3339(text)


@pytest.mark.parametrize("text", [
    "2024-05-01",  # a bare date
    "2024-05-01T12:30Z",  # no seconds
    "2024-05-01T12:30:00",  # no offset
    "2024-05-01 12:30:00Z",  # a space, not T
    "2024-05-01t12:30:00z", "2024-05-01T12:30:00z",  # lower case (Go refuses them)
    " 2024-05-01T12:30:00Z", "2024-05-01T12:30:00Z ",  # not trimmed
    "2024-05-01T12:30:00.Z",  # a dot with no digits
    "2024-05-01T12:30:00+0200", "2024-05-01T12:30:00+02",  # offsets need HH:MM
    "2024-13-01T00:00:00Z", "2024-00-01T00:00:00Z", "2024-04-31T00:00:00Z",
    "2023-02-29T00:00:00Z", "1900-02-29T00:00:00Z", "2024-05-00T00:00:00Z",
    "2024-05-01T24:00:00Z", "2024-05-01T12:60:00Z", "2024-05-01T12:30:60Z",
    "2024-05-01T12:30:00+24:00", "2024-05-01T12:30:00+02:60",
    "２０２４-05-01T12:30:00Z",  # non-ASCII digits
    "24-05-01T12:30:00Z", "1714566600", "",
])
def test_rfc3339_refuses_everything_else(text) -> None:
    assert not is_rfc3339(text)


def test_every_talon_one_type_is_checked_or_open() -> None:
    assert len(TYPES) == 9
    assert [t for t in TYPES if type_problem(t, object()) is None] == [
        "location", "(list location)"]


@pytest.mark.parametrize("attribute_type, value, _reason", REFUSED[:12])
def test_a_wrong_type_fails_the_whole_bulk_request(talon_emulator, attribute_type, value,
                                                   _reason) -> None:
    talon_emulator.configure(attributes={"a": attribute_type, "plan": "string"})
    r = bulk(talon_emulator, [{"integrationId": "ok", "attributes": {"plan": "x"}},
                              {"integrationId": "bad", "attributes": {"plan": "y", "a": value}}])
    assert r.status_code == 400
    error = error_of(r)
    assert error["source"]["pointer"] == "/customerProfiles/1/attributes/a"
    assert f"attribute 'a' has type '{attribute_type}'" in error["message"]
    assert "'bad'" in error["message"]
    assert talon_emulator.profiles() == []


def test_single_update_names_the_attribute_type_and_pointer(talon_emulator) -> None:
    talon_emulator.configure(attributes={"signup": "time", "tags": "(list string)"})
    r = single(talon_emulator, "u1", {"signup": "2024-05-01"})
    assert r.status_code == 400
    error = error_of(r)
    assert error == {
        "message": "attribute 'signup' has type 'time': got a string that is not an RFC 3339 "
                   "date-time (profile 'u1')",
        "title": "Bad request",
        "details": "a time attribute takes an RFC 3339 date-time string with an offset, e.g. "
                   "2024-05-01T12:30:00.000Z",
        "source": {"pointer": "/attributes/signup"},
    }
    bad_item = error_of(single(talon_emulator, "u1", {"tags": ["a", 2]}))
    assert bad_item["message"].startswith("attribute 'tags' has type '(list string)': item 1 "
                                          "got a number")
    assert "a list whose items are each a JSON string" in bad_item["details"]
    ok = single(talon_emulator, "u1", {"signup": "2024-05-01T00:00:00.000Z", "tags": ["a"]})
    assert ok.status_code == 200
    assert talon_emulator.profile("u1")["attributes"] == {
        "signup": "2024-05-01T00:00:00.000Z", "tags": ["a"]}


def test_typed_and_untyped_names_and_patterns_together(talon_emulator) -> None:
    talon_emulator.configure(attributes={"age": "number", "note": None, "consent_*": None,
                                         "pos": "location", "odd": "somethingnew"})
    anything = {"note": [1, {"x": None}], "consent_sms": "yes", "pos": [1, 2], "odd": True,
                "age": 42}
    assert bulk(talon_emulator, [{"integrationId": "u", "attributes": anything}]).status_code == 204
    refused = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"age": "42"}}])
    assert error_of(refused)["source"]["pointer"] == "/customerProfiles/0/attributes/age"
    unknown = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"other": 1}}])
    assert "attribute 'other' does not exist" in error_of(unknown)["message"]


def test_built_in_attributes_exist_and_are_typed_when_a_list_is_given(talon_emulator) -> None:
    assert single(talon_emulator, "u", {"BirthDate": "soon"}).status_code == 200  # no list
    talon_emulator.configure(attributes=["plan"])
    assert single(talon_emulator, "u", {"Name": "Ada", "BirthDate": "1990-01-01T00:00:00Z"}
                  ).status_code == 200
    wrong = error_of(single(talon_emulator, "u", {"BirthDate": "1990-01-01"}))
    assert wrong["message"].startswith("attribute 'BirthDate' has type 'time'")
    # a configured type wins over the built-in one
    talon_emulator.configure(attributes={"Name": "number"})
    assert single(talon_emulator, "u", {"Name": 7}).status_code == 200


def test_types_without_a_list_check_only_typed_names(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attribute_types={"age": "number"})
    assert single(emu, "u", {"age": 1, "anything": "goes"}).status_code == 200
    assert single(emu, "u", {"age": "1"}).status_code == 400


def test_nan_and_infinity_are_not_json(talon_emulator) -> None:
    from emulator_http import api

    url = f"{talon_emulator.url}/v2/customer_profiles"
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"customerProfiles": [{"integrationId": "u", "attributes": {"n": %s}}]}' % constant
        r = api(talon_emulator).put(url, data=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and error_of(r)["message"] == "the request body is not valid JSON"
    assert talon_emulator.profiles() == []
