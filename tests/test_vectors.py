"""The shared worked cases, through the library and through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from talon_classic import Engine, transform

DATA = Path(__file__).parent / "data" / "identify.jsonl"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "vectors" / "identify.jsonl"
CASES = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]


def _matches(got: dict, expect: dict) -> bool:
    if "skipped" in expect:
        return got.get("skipped") == expect["skipped"]
    return (got.get("integrationId"), got.get("attributes")) == (
        expect["integrationId"],
        expect["attributes"],
    )


def test_copy_is_current() -> None:
    """tests/data is a copy so a plain clone can test; it must not drift."""
    if not SHARED.exists():
        pytest.skip("../shared is not present next to this checkout")
    assert DATA.read_bytes() == SHARED.read_bytes(), (
        "tests/data/identify.jsonl differs from ../shared/vectors/identify.jsonl: copy it again"
    )


def test_there_are_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_library(case: dict) -> None:
    result = Engine(case["settings"]["customAttributes"]).transform(case["event"])
    assert _matches(result.as_dict(), case["expect"]), result
    # the one-off helper gives the same answer
    assert transform(case["event"], case["settings"]["customAttributes"]) == result


def test_cli(tmp_path: Path) -> None:
    """All cases through `talon-classic transform` in one subprocess."""
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(CASES[0]["settings"]))
    events = tmp_path / "events.jsonl"
    events.write_text("".join(json.dumps(c["event"]) + "\n" for c in CASES))
    proc = subprocess.run(
        [sys.executable, "-m", "talon_classic.cli", "transform", "--settings", str(settings),
         str(events)],
        capture_output=True, text=True, check=True,
    )
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [o["line"] for o in out] == list(range(1, len(CASES) + 1))
    failing = [c["name"] for c, o in zip(CASES, out, strict=True) if not _matches(o, c["expect"])]
    assert failing == []
