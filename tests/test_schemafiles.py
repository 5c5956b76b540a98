"""The shipped JSON Schemas as validators: whole numbers read exactly where asked."""

from __future__ import annotations

import pytest

from talon_classic.schemafiles import field_path, first_error

CHECKPOINT = {"fingerprint": {}, "options": {}, "watermark": 0, "done": []}


@pytest.mark.parametrize("value", [50.0, True, "50"])
def test_exact_integers_refuse_what_only_looks_whole(value: object) -> None:
    doc = {**CHECKPOINT, "options": {"batch_size": value}}
    error = first_error("checkpoint", doc, exact_integers=True)
    assert error is not None and error.validator == "type"
    assert list(error.absolute_path) == ["options", "batch_size"]


def test_the_schemas_own_reading_takes_a_whole_float() -> None:
    """Settings convert ``"vip": 7.0`` to 7 after validation, so they keep this reading."""
    assert first_error("settings", {"audienceIds": {"vip": 7.0}}) is None
    assert first_error("settings", {"audienceIds": {"vip": 7.5}}) is not None
    assert first_error("checkpoint", {**CHECKPOINT, "options": {"batch_size": 50}},
                       exact_integers=True) is None


def test_the_first_error_is_the_first_field_in_path_order() -> None:
    doc = {"fingerprint": {"batch_size": "x"}, "options": {"batch_size": "y"},
           "watermark": "z", "done": []}
    error = first_error("checkpoint", doc, exact_integers=True)
    assert error is not None and field_path(error.absolute_path) == "fingerprint.batch_size"


def test_field_path_names_fields_as_messages_do() -> None:
    assert field_path(["fingerprint", "inputs", 0, "path"]) == "fingerprint.inputs[0].path"
    assert field_path([]) == ""
