"""The typed-attributes worked cases (tests/data/typed.jsonl) through the library and the CLI.

Every line shares one settings + schema object. ``expect.dropped`` lists
only the ``unknown_attribute`` and ``type_mismatch`` entries and is compared
as a set; attributes are compared as JSON text, so ``42`` is not ``42.0``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from talon_classic import Engine, transform
from talon_classic.schema import Schema

DATA = Path(__file__).parent / "data" / "typed.jsonl"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "typed.jsonl"
CASES = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
TYPED_REASONS = frozenset({"unknown_attribute", "type_mismatch"})


def test_copy_is_current() -> None:
    """tests/data is a copy so a plain clone can test; it must not drift."""
    if not SHARED.exists():
        pytest.skip("../shared is not present next to this checkout")
    assert DATA.read_bytes() == SHARED.read_bytes(), (
        "tests/data/typed.jsonl differs from ../shared/vectors/typed.jsonl: copy it again"
    )


def test_there_are_cases() -> None:
    assert len(CASES) >= 30
    assert len({json.dumps(c["settings"], sort_keys=True) for c in CASES}) == 1


def matches(got: dict, expect: dict) -> bool:
    """Does a ``Result.as_dict()`` (or a transform output line) meet one case's expectation?"""
    if "skipped" in expect:
        return got.get("skipped") == expect["skipped"]
    typed = {(d["name"], d["reason"]) for d in got["dropped"] if d["reason"] in TYPED_REASONS}
    return (
        got["integrationId"] == expect["integrationId"]
        and json.dumps(got["attributes"], sort_keys=True)
        == json.dumps(expect["attributes"], sort_keys=True)
        and typed == {(d["name"], d["reason"]) for d in expect["dropped"]}
    )


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_library(case: dict) -> None:
    settings = case["settings"]
    schema = Schema.from_document(settings["schema"], "vectors")
    engine = Engine(settings["customAttributes"], schema)
    result = engine.transform(case["event"])
    assert matches(result.as_dict(), case["expect"]), result
    assert transform(case["event"], settings["customAttributes"], schema) == result


def test_one_engine_for_all_cases() -> None:
    """Caches filled by earlier events never change a later answer."""
    settings = CASES[0]["settings"]
    engine = Engine(settings["customAttributes"], Schema.from_document(settings["schema"]))
    failing = [c["name"] for c in CASES * 2
               if not matches(engine.transform(c["event"]).as_dict(), c["expect"])]
    assert failing == []


def test_cli(tmp_path: Path) -> None:
    """Every case through `talon-classic transform --schema` in one subprocess."""
    settings = CASES[0]["settings"]
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"customAttributes": settings["customAttributes"]}))
    schema_file = tmp_path / "schema.json"
    schema_file.write_text(json.dumps(settings["schema"]))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(c["event"]) + "\n" for c in CASES))
    proc = subprocess.run(
        [sys.executable, "-m", "talon_classic.cli", "transform", "--settings", str(settings_file),
         "--schema", str(schema_file), str(events)],
        capture_output=True, text=True, check=True,
    )
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["line"] for o in out] == list(range(1, len(CASES) + 1))
    failing = [c["name"] for c, o in zip(CASES, out, strict=True) if not matches(o, c["expect"])]
    assert failing == []
    assert proc.stderr == ""


def test_cli_without_the_schema_types_nothing(tmp_path: Path) -> None:
    """The same events without --schema: values as they came, nothing dropped for its type."""
    settings_file = tmp_path / "settings.json"
    settings_file.write_text(json.dumps({"customAttributes": ["age"]}))
    proc = subprocess.run(
        [sys.executable, "-m", "talon_classic.cli", "transform", "--settings", str(settings_file)],
        input='{"userId": "u", "traits": {"age": "42"}}\n', capture_output=True, text=True,
        check=True)
    assert json.loads(proc.stdout)["attributes"] == {"age": "42"}
