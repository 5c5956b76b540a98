"""The schema loader (both shapes, every error in one line), writing it back, allowlist checks."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from talon_classic.exceptions import SchemaError, TalonClassicError
from talon_classic.schema import (
    NOTE,
    OK,
    WARNING,
    Schema,
    check_allowlist,
    read_schema_file,
    write_schema_file,
)

API_ANSWER = {
    "totalResultSize": 4,
    "data": [
        {"id": 1, "entity": "CustomerProfile", "name": "age", "type": "number", "title": "Age",
         "kind": "custom"},
        {"id": 2, "entity": "Event", "name": "orderTotal", "type": "number"},
        {"id": 3, "entity": "CustomerProfile", "name": "Name", "type": "string", "kind": "builtin"},
        {"id": 4, "name": "signedUp", "type": "time"},
    ],
}


def write(tmp_path: Path, doc: Any, name: str = "schema.json") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def message(tmp_path: Path, doc: Any) -> str:
    with pytest.raises(SchemaError) as info:
        read_schema_file(write(tmp_path, doc))
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_api_answer_keeps_customer_profile_items(tmp_path: Path) -> None:
    schema = read_schema_file(write(tmp_path, API_ANSWER))
    assert dict(schema) == {"age": "number", "Name": "string", "signedUp": "time"}
    assert schema.source == "schema.json"
    assert repr(schema) == "Schema(3 attributes from schema.json)"


def test_plain_list_ignores_extra_keys(tmp_path: Path) -> None:
    doc = [{"name": "age", "type": "number", "title": "x"},
           {"name": "e", "type": "string", "entity": "Event"}]
    assert dict(read_schema_file(write(tmp_path, doc))) == {"age": "number", "e": "string"}


def test_empty_shapes_are_empty_schemas(tmp_path: Path) -> None:
    assert len(read_schema_file(write(tmp_path, []))) == 0
    assert len(read_schema_file(write(tmp_path, {"totalResultSize": 0, "data": []}))) == 0


@pytest.mark.parametrize(("doc", "expected"), [
    ({"data": [{"name": "a", "type": "string"}, {"name": "b", "type": "number"},
               {"name": "c", "type": "time"}, {"name": "d"}]},
     'schema.json: data[3]: missing "type"'),
    ([{"type": "string"}], 'schema.json: [0]: missing "name"'),
    ([{"name": "", "type": "string"}], "schema.json: [0]: name: expected a non-empty string"),
    ([{"name": 7, "type": "string"}], "schema.json: [0]: name: expected a non-empty string"),
    ([{"name": "a", "type": None}], "schema.json: [0]: type: expected a non-empty string"),
    (["age"], "schema.json: [0]: expected an object with name and type"),
    ({"data": {}}, "schema.json: data: expected an array"),
    ({"totalResultSize": 1}, "schema.json: data: missing (expected a saved GET /v1/attributes "
     'answer ({"totalResultSize": n, "data": [...]}) or a list of {"name", "type"} objects)'),
    ("42", 'schema.json: expected a saved GET /v1/attributes answer ({"totalResultSize": n, '
     '"data": [...]}) or a list of {"name", "type"} objects'),
    ({"totalResultSize": "3", "data": []}, "schema.json: totalResultSize: expected a whole number"),
    ({"totalResultSize": 1500, "data": [{"name": "a", "type": "string"}]},
     "schema.json: holds 1 of the 1500 attributes its totalResultSize counts (one page only?): "
     "save every page, e.g. with talon-classic schema pull"),
    ([{"name": "a", "type": "string"}, {"name": "a", "type": "number"}],
     'schema.json: [1]: "a" is listed twice with different types ("string" at [0], "number" here)'),
    ("{", "schema.json: not valid JSON: Expecting property name enclosed in double quotes at "
     "line 1 column 2"),
])
def test_errors_are_one_line(tmp_path: Path, doc: Any, expected: str) -> None:
    assert message(tmp_path, doc) == expected


def test_an_item_of_another_entity_is_not_checked(tmp_path: Path) -> None:
    doc = {"data": [{"entity": "Event", "name": "x"}, {"name": "a", "type": "string"}]}
    assert dict(read_schema_file(write(tmp_path, doc))) == {"a": "string"}


def test_same_name_twice_with_one_type_is_fine(tmp_path: Path) -> None:
    doc = [{"name": "a", "type": "string"}, {"name": "a", "type": "string"}]
    assert dict(read_schema_file(write(tmp_path, doc))) == {"a": "string"}


def test_file_problems(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"^nope.json: file not found \(.*nope.json\)$"):
        read_schema_file(tmp_path / "nope.json")
    with pytest.raises(SchemaError, match=r"is a directory, not a schema file"):
        read_schema_file(tmp_path)
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'[{"name": "\xe9", "type": "string"}]')
    with pytest.raises(SchemaError, match=r"^latin1.json: not valid JSON: not UTF-8 text$"):
        read_schema_file(bad)
    assert issubclass(SchemaError, TalonClassicError)


def test_written_back_in_the_api_shape_and_read_again(tmp_path: Path) -> None:
    schema = read_schema_file(write(tmp_path, API_ANSWER))
    out = tmp_path / "pulled.json"
    write_schema_file(schema, out)
    doc = json.loads(out.read_text())
    assert doc["totalResultSize"] == 3 and len(doc["data"]) == 3
    assert doc["data"][0]["title"] == "Age"  # Talon.One's own fields survive
    again = read_schema_file(out)
    assert dict(again) == dict(schema)
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_built_from_pairs() -> None:
    schema = Schema({"age": "number"}.items(), source="test")
    assert schema.to_document() == {
        "totalResultSize": 1, "data": [{"name": "age", "type": "number",
                                        "entity": "CustomerProfile"}]}
    assert schema == {"age": "number"}
    assert schema.compiled is schema.compiled


def test_write_failure_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SchemaError, match=r"cannot write"):
        write_schema_file(Schema({}), tmp_path / "missing-dir" / "s.json")


# -- allowlist checks (for check-config) ----------------------------------------------
SCHEMA = Schema({"email": "string", "age": "number", "consent_email": "boolean",
                 "consent_sms": "boolean", "vip_customers": "boolean"})


def test_check_allowlist() -> None:
    found = check_allowlist(SCHEMA, ["email", "Age", "shoeSize", "consent_*", "address_*"],
                            engage_names=["vip_customers", "high_value"])
    assert found == [
        (OK, "email: string"),
        (WARNING, "Age: no such customer-profile attribute in Talon.One (did you mean age?); it "
                  "is dropped as unknown_attribute until it is created (Campaign Manager > "
                  "Attributes)"),
        (WARNING, "shoeSize: no such customer-profile attribute in Talon.One; it is dropped as "
                  "unknown_attribute until it is created (Campaign Manager > Attributes)"),
        (OK, "consent_*: matches 2 attributes (consent_email: boolean, consent_sms: boolean)"),
        (WARNING, "address_*: matches no Talon.One attribute; every trait it lets through is "
                  "dropped as unknown_attribute"),
        (OK, "vip_customers (Engage): boolean"),
        (WARNING, "high_value: no such customer-profile attribute in Talon.One; this Engage "
                  "attribute is dropped as unknown_attribute until it is created (Campaign "
                  "Manager > Attributes)"),
        (NOTE, "Engage audiences and computed traits bypass the allowlist but not the schema: "
               "each must exist as a customer-profile attribute (an audience as a boolean) or "
               "it is dropped as unknown_attribute"),
    ]


def test_check_allowlist_long_match_list_is_cut() -> None:
    many = Schema({f"x{i}": "string" for i in range(8)})
    (level, text), _note = check_allowlist(many, ["x*"])
    assert level == OK and text.endswith(", and 3 more)") and text.startswith("x*: matches 8 ")
