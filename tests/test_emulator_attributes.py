"""Which attributes exist: the attributes file and shell patterns."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from emulator_http import bulk

from talon_classic.emulator import parse_attributes_file
from talon_classic.emulator.attributes import (
    ATTRIBUTE_NAME,
    BUILTIN_ATTRIBUTES,
    attribute_exists,
    attribute_type,
    parse_attribute_spec,
)


def test_attributes_file(tmp_path: Path) -> None:
    lines = tmp_path / "attrs.txt"
    lines.write_text("# customer profile attributes\nemail\n\n  plan  # the tier\n  # note\n")
    array = tmp_path / "attrs.json"
    array.write_text('["email", "plan"]')
    # untyped names: name -> None (the file's names used to come back as a set)
    assert parse_attributes_file(lines) == parse_attributes_file(str(array)) == {
        "email": None, "plan": None}
    array.write_text('["email", 3]')
    with pytest.raises(ValueError, match=r"attrs.json: item\[1\]"):
        parse_attributes_file(array)


def test_attribute_patterns(talon_emulator) -> None:
    talon_emulator.configure(attributes=["email", "consent_*"])
    ok = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consent_sms": True,
                                                                    "email": "e"}}])
    assert ok.status_code == 204
    bad = bulk(talon_emulator, [{"integrationId": "u", "attributes": {"consentsms": True}}])
    assert bad.status_code == 400


def test_exact_names_and_patterns() -> None:
    known = frozenset({"email", "consent_*"})
    assert attribute_exists("email", known) and attribute_exists("consent_sms", known)
    assert not attribute_exists("consentsms", known) and not attribute_exists("emails", known)
    assert not attribute_exists("x", frozenset())


@pytest.mark.parametrize("name, ok", [("plan", True), ("Plan_2", True), ("1st", False),
                                      ("é", False), ("a-b", False), ("_x", False)])
def test_talon_one_name_rule(name, ok) -> None:
    assert bool(ATTRIBUTE_NAME.fullmatch(name)) is ok


def test_attributes_file_with_types_per_line(tmp_path: Path) -> None:
    lines = tmp_path / "attrs.txt"
    lines.write_text("age:number\ntags : (list string)  # the tags\nconsent_*\nplan:\n")
    assert parse_attributes_file(lines) == {"age": "number", "tags": "(list string)",
                                            "consent_*": None, "plan": None}


def test_attributes_file_from_the_management_api(tmp_path: Path) -> None:
    """A saved GET /v1/attributes answer: what `schema pull` writes, replayed locally."""
    saved = tmp_path / "schema.json"
    saved.write_text(json.dumps({"totalResultSize": 4, "data": [
        {"id": 1, "name": "age", "type": "number", "entity": "CustomerProfile", "kind": "custom"},
        {"id": 2, "name": "Name", "type": "string", "entity": "CustomerProfile",
         "kind": "builtin"},
        {"id": 3, "name": "basket", "type": "string", "entity": "CustomerSession"},
        {"id": 4, "name": "since", "type": "time", "title": "no entity: kept"},
    ]}))
    assert parse_attributes_file(saved) == {"age": "number", "Name": "string", "since": "time"}


def test_attributes_file_as_name_type_objects(tmp_path: Path) -> None:
    listed = tmp_path / "schema.json"
    listed.write_text('[{"name": "age", "type": "number"}, {"name": "note"}, '
                      '{"name": "x", "type": null}, "plain", {"name": "age", "type": "number"}]')
    assert parse_attributes_file(listed) == {"age": "number", "note": None, "x": None,
                                             "plain": None}


@pytest.mark.parametrize("text, where", [
    ('{"data": {}}', "expected a Management API answer"),
    ('{"totalResultSize": 1}', "expected a Management API answer"),
    ('{"data": ["age"]}', r"data\[0\]: expected an attribute name or an object"),
    ('{"data": [{"type": "number"}]}', r"data\[0\]: \"name\" must be a non-empty string"),
    ('[{"name": "a", "type": 3}]', r"item\[0\]: attribute 'a': \"type\" must be"),
    ('[{"name": "a", "type": "number"}, {"name": "a", "type": "string"}]',
     r"item\[1\]: attribute 'a' is listed twice, as 'number' and 'string'"),
    ('[{"name": "a", "entity": 7}]', r"item\[0\]: attribute 'a': \"entity\" must be a string"),
    ('[1]', r"item\[0\]: expected an attribute name"),
    ('[{"name": "c_*", "type": "boolean"}]', r"item\[0\]: pattern 'c_\*' cannot have a type"),
    ('{"data": [', "not valid JSON"),
    ("age\n:number\n", r"line 2: ':number': expected NAME or NAME:TYPE"),
])
def test_bad_attributes_files_name_the_file_and_the_item(tmp_path: Path, text, where) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(text)
    with pytest.raises(ValueError, match=f"^{re.escape(str(bad))}: {where}") as caught:
        parse_attributes_file(bad)
    assert "\n" not in str(caught.value)


def test_unreadable_attributes_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read it"):
        parse_attributes_file(tmp_path / "missing.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ValueError, match="binary.txt: not UTF-8 text"):
        parse_attributes_file(binary)


def test_attribute_specs() -> None:
    assert parse_attribute_spec("age") == ("age", None)
    assert parse_attribute_spec("age:number") == ("age", "number")
    assert parse_attribute_spec("tags:(list string)") == ("tags", "(list string)")
    with pytest.raises(ValueError):
        parse_attribute_spec(" :number")


def test_attribute_type_lookup() -> None:
    types = {"age": "number"}
    assert attribute_type("age", None, types) == (True, "number")
    assert attribute_type("Name", None, types) == (True, None)  # no list: built-ins untyped
    assert attribute_type("Name", frozenset(), types) == (True, "string")
    assert attribute_type("BirthDate", frozenset(), {}) == (True, "time")
    assert attribute_type("zzz", frozenset({"z*"}), {}) == (True, None)
    assert attribute_type("age", frozenset({"plan"}), types) == (False, "number")
    assert set(BUILTIN_ATTRIBUTES) == {"Name", "Email", "PhoneNumber", "BirthDate",
                                       "SignupDate", "BillingCountry"}
