"""docs/mapping.rst is exact: its examples are real output, and it covers every reference case.

The examples run through ``talon-classic transform`` (``docs/readme_check.py``
compares them); here we also check that every case of
``tests/data/identify.jsonl`` is among them with the result the case
expects, that the examples use the cases' allowlist, and that every reason
code the code can produce is explained.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from talon_classic.bulk import INPUT_REASONS
from talon_classic.transform import DROP_REASONS, SKIP_REASONS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))
import readme_check  # noqa: E402

MAPPING = ROOT / "docs" / "mapping.rst"
DOCUMENT = readme_check.load(MAPPING)
VECTORS = [json.loads(line) for line in
           (ROOT / "tests" / "data" / "identify.jsonl").read_text().splitlines() if line.strip()]


def _cases() -> list[tuple[Any, dict[str, Any]]]:
    """(event, shown output) of every example case, parsed."""
    out = []
    for block in DOCUMENT.blocks:
        if block.kind != "cases":
            continue
        for step in block.steps:
            try:
                event = json.loads(step.run)
            except ValueError:
                continue  # the invalid_json example
            out.append((event, json.loads(step.expected[0])))
    return out


def test_examples_run_as_shown() -> None:
    found = readme_check.sessions(DOCUMENT)
    readme_check.run_sessions(found)
    report = "\n".join(s.report() for s in found if s.error or s.failures())
    assert report == "", report + "\nIf intended: python docs/readme_check.py --update"


@pytest.mark.parametrize("case", VECTORS, ids=[c["name"] for c in VECTORS])
def test_every_reference_case_is_shown(case: dict[str, Any]) -> None:
    shown = [out for event, out in _cases() if event == case["event"]]
    assert shown, f"docs/mapping.rst has no example for {case['name']!r}"
    expect = case["expect"]
    for out in shown:
        if "skipped" in expect:
            assert out.get("skipped") == expect["skipped"]
        else:
            assert (out.get("integrationId"), out.get("attributes")) == (
                expect["integrationId"], expect["attributes"])


def test_examples_use_the_reference_allowlist() -> None:
    (settings,) = [b for b in DOCUMENT.blocks if b.kind == "file"]
    shown = json.loads("\n".join(settings.lines))
    assert {json.dumps(c["settings"], sort_keys=True) for c in VECTORS} == {
        json.dumps(shown, sort_keys=True)}


def test_every_reason_code_is_explained() -> None:
    text = MAPPING.read_text()
    codes = set(SKIP_REASONS) | set(DROP_REASONS) | set(INPUT_REASONS)
    table = text.split("Reason codes\n------------", 1)[1]
    explained = set(re.findall(r"^``(\w+)``\s", table, re.MULTILINE))
    assert codes <= explained, sorted(codes - explained)


def test_every_literal_block_is_seen_by_the_checker() -> None:
    docutils_core = pytest.importorskip("docutils.core")
    from docutils import nodes

    tree = docutils_core.publish_doctree(MAPPING.read_text(), settings_overrides={
        "report_level": 5})
    found = [n.astext().splitlines() for n in tree.findall(nodes.literal_block)]
    assert [[x.rstrip() for x in lines] for lines in found] == [b.lines for b in DOCUMENT.blocks]
