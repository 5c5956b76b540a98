"""Issue 13's end-to-end test: untyped Segment traits into a strict, typed Talon.One.

An emulator started from a typed attribute file (as `talon-classic emulator
--attributes-file` is) receives events whose traits are everyday Segment
values: numbers as strings, Unix times in seconds and milliseconds, "true" /
"false" strings, names Talon.One does not have and values that fit no type.
With `--schema` every batch lands (exit 0, no dead letter) and every profile
is exactly what the contract computes; without it the same run dead-letters.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from talon_classic.bulk import parse_timestamp
from talon_classic.cli import main
from talon_classic.coerce import MISMATCH, coerce
from talon_classic.emulator.attributes import parse_attributes_file
from talon_classic.transform import Engine

ATTRIBUTES = [
    {"name": "email", "type": "string"}, {"name": "zip", "type": "string"},
    {"name": "age", "type": "number"}, {"name": "score", "type": "number"},
    {"name": "newsletter", "type": "boolean"}, {"name": "createdAt", "type": "time"},
    {"name": "lastSeen", "type": "time"}, {"name": "tags", "type": "(list string)"},
    {"name": "lucky", "type": "(list number)"}, {"name": "visits", "type": "(list time)"},
    {"name": "home", "type": "location"}, {"name": "address_city", "type": "string"},
    {"name": "vip_customers", "type": "boolean"},
]
TYPES = {a["name"]: a["type"] for a in ATTRIBUTES}
ALLOW = ["email", "zip", "age", "score", "newsletter", "createdAt", "lastSeen", "tags", "lucky",
         "visits", "home", "favoriteColor", "address_*"]

#: Per trait, values a Segment source really sends; the last ones of some cannot be typed.
POOLS: dict[str, list[Any]] = {
    "email": ["ada@example.com", "  spaced@example.com "],
    "zip": [22201, "22201", 4.5, True],
    "age": [42, "42", " 7 ", "-1.5e3", "36.0", "forty", True, ["1"]],
    "score": [3.5, "3.5", "1e3", 0, "NaN"],
    "newsletter": [True, "true", "FALSE", " True ", False, "yes", 1],
    "createdAt": [1700000000, 1700000000123, "2024-05-01", "2024-05-01T12:30:00+02:00",
                  "2024-05-01 12:30:00.123456Z", 1714566600.5, "yesterday", False],
    "lastSeen": ["2024-02-29T23:59:59Z", 0, -86400, "2024-13-01"],
    "tags": [["beta", 1, True], ["x"], [], "single", [["nested"]]],
    "lucky": [["1", 2, " 3.5 "], [7], ["x"]],
    "visits": [[1700000000, "2024-01-01"], ["bad"]],
    "home": ["52.52,13.40", {"lat": 1}],
    "favoriteColor": ["green"],  # allowlisted, but not in Talon.One: unknown_attribute
    "nope": [1],  # not allowlisted
}


def make_events(n: int, users: int, seed: int = 13) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        traits = {name: rng.choice(pool) for name, pool in POOLS.items() if rng.random() < 0.7}
        traits["address"] = {"city": rng.choice(["Berlin", 10115]), "zip": "10115"}
        event: dict[str, Any] = {
            "type": "identify", "userId": f"user-{rng.randrange(users)}", "messageId": f"m{i}",
            "timestamp": f"2024-05-01T10:{(i * 7) % 60:02d}:{i % 60:02d}Z", "traits": traits}
        if i % 9 == 0:  # an Engage audience (in Talon.One) and a computed trait (not)
            key, cls = (("VIP Customers", "audience") if i % 2 else
                        ("lifetime_value", "computed_trait"))
            traits[key] = rng.choice([True, "false"]) if cls == "audience" else "12.5"
            event["context"] = {"personas": {"computation_class": cls, "computation_key": key}}
        out.append(event)
    return out


def contract_profiles(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the contract says each profile ends up as, computed apart from the typed engine.

    The untyped mapping (the mapping contract), then each attribute: dropped when the schema
    lacks it, coerced by its type's row, dropped when that fails; then merged in timestamp
    order per user.
    """
    plain = Engine(ALLOW)
    per_user: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = {}
    for n, event in enumerate(events):
        result = plain.transform(event)
        attrs = {}
        for name, value in result.attributes.items():
            if name in TYPES and (new := coerce(value, TYPES[name])) is not MISMATCH:
                attrs[name] = new
        ts = parse_timestamp(event.get("timestamp"))
        per_user.setdefault(result.integration_id, []).append(((ts is not None, ts, n), attrs))
    out = {}
    for user, items in per_user.items():
        merged: dict[str, Any] = {}
        for _, attrs in sorted(items, key=lambda item: item[0]):
            merged.update(attrs)
        out[user] = merged
    return out


@pytest.fixture()
def typed_emulator(talon_emulator_factory, tmp_path: Path):
    """An emulator from a typed attribute file, and that file."""
    path = tmp_path / "attributes.json"
    path.write_text(json.dumps(ATTRIBUTES))
    return talon_emulator_factory(attributes=parse_attributes_file(str(path))), path


def identify(emu, tmp_path: Path, events: list[dict[str, Any]], *extra: str):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"apiKey": emu.api_key, "applicationDomain": emu.url,
                                    "customAttributes": ALLOW}))
    src = tmp_path / "events.jsonl"
    src.write_text("".join(json.dumps(e) + "\n" for e in events))
    result = CliRunner().invoke(main, [
        "identify", "--quiet", "--json", str(src), "--settings", str(settings),
        "--dead-letter", str(tmp_path / "dead.jsonl"), "--batch-size", "100", *extra])
    return result, json.loads(result.stdout)


@pytest.mark.timeout(120)
def test_with_the_schema_every_profile_lands_exactly_as_the_contract_says(
        typed_emulator, tmp_path: Path) -> None:
    emu, attributes_file = typed_emulator
    events = make_events(1500, 400)
    result, report = identify(emu, tmp_path, events, "--schema", str(attributes_file))
    assert result.exit_code == 0, result.output
    assert report["dead_lettered"] == 0 and report["rejected"] == 0
    assert not (tmp_path / "dead.jsonl").exists() or (tmp_path / "dead.jsonl").read_text() == ""
    assert "400" not in emu.stats()["requests"]
    assert report["schema"] == {"origin": f"from {attributes_file}", "attributes": len(TYPES)}
    dropped = report["dropped"]
    assert set(dropped["type_mismatch"]["top"]) >= {"age", "newsletter", "createdAt", "tags"}
    assert set(dropped["unknown_attribute"]["top"]) >= {"favoriteColor", "address_zip",
                                                        "lifetime_value"}

    want = contract_profiles(events)
    got = {p["integrationId"]: p["attributes"] for p in emu.profiles()}
    assert got.keys() == want.keys()
    wrong = [u for u in want if json.dumps(got[u], sort_keys=True)
             != json.dumps(want[u], sort_keys=True)]  # as JSON text: 42 is not 42.0
    assert wrong == []
    everything = [value for attrs in got.values() for value in attrs.items()]
    assert ("age", 42) in everything and ("age", -1500.0) in everything
    assert ("newsletter", True) in everything and ("zip", "4.5") in everything
    assert ("createdAt", "2023-11-14T22:13:20.123Z") in everything  # milliseconds
    assert ("createdAt", "2024-05-01T10:30:00.000Z") in everything  # the +02:00 offset
    assert ("lastSeen", "1969-12-31T00:00:00.000Z") in everything
    assert ("tags", ["beta", "1", "true"]) in everything
    assert ("lucky", [1, 2, 3.5]) in everything


@pytest.mark.timeout(120)
def test_the_same_run_without_the_schema_dead_letters(typed_emulator, tmp_path: Path) -> None:
    """Why the schema matters: Talon.One refuses these values, each refusal costs a profile."""
    emu, _ = typed_emulator
    events = make_events(300, 100)  # fewer: finding each refused profile takes requests
    result, report = identify(emu, tmp_path, events)
    assert result.exit_code == 1, result.output
    assert report["schema"] is None
    assert report["dead_lettered"] > 150 and emu.stats()["requests"]["400"] > 0
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == report["dead_lettered"]
    assert len(emu.profiles()) < len(contract_profiles(events))
