"""Which attributes exist: the attributes file and shell patterns."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulator_http import bulk

from talon_classic.emulator import parse_attributes_file
from talon_classic.emulator.attributes import ATTRIBUTE_NAME, attribute_exists


def test_attributes_file(tmp_path: Path) -> None:
    lines = tmp_path / "attrs.txt"
    lines.write_text("# customer profile attributes\nemail\n\n  plan  # the tier\n  # note\n")
    array = tmp_path / "attrs.json"
    array.write_text('["email", "plan"]')
    assert parse_attributes_file(lines) == parse_attributes_file(str(array)) == {"email", "plan"}
    array.write_text('["email", 3]')
    with pytest.raises(ValueError):
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
