"""Which schema a run uses: a file, the hour-long cache, or a fresh pull."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from talon_classic.exceptions import AuthError, RetriesExhausted, SchemaError
from talon_classic.schema import Schema
from talon_classic.schemacache import (
    MAX_AGE,
    SchemaSource,
    cache_file,
    cached_schema,
    describe_age,
    resolve_schema,
)

DEPLOYMENT = "https://acme.europe-west1.talon.one"


class Puller:
    """A stand-in for ``ManagementClient(...).attributes``, counting its calls."""

    def __init__(self, schema: Schema | None = None, error: Exception | None = None) -> None:
        self.schema = schema if schema is not None else Schema({"age": "number"})
        self.error = error
        self.calls = 0

    def __call__(self) -> Schema:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.schema


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def load(tmp_path: Path, pull: Puller, clock: Clock, warnings: list[str] | None = None,
         **kw) -> SchemaSource:
    sink = warnings if warnings is not None else []
    return cached_schema(DEPLOYMENT, pull, state=tmp_path, clock=clock, warn=sink.append, **kw)


def test_first_run_pulls_and_caches_privately(tmp_path: Path) -> None:
    pull, clock = Puller(), Clock()
    got = load(tmp_path, pull, clock)
    assert got.origin == f"pulled from {DEPLOYMENT}" and dict(got.schema) == {"age": "number"}
    path = cache_file(DEPLOYMENT, tmp_path)
    assert got.path == path and path.parent == tmp_path / "schemas"
    assert path.name.startswith("acme.europe-west1.talon.one-")
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(path.parent).st_mode & 0o777 == 0o700
    doc = json.loads(path.read_text())
    assert doc["deployment"] == DEPLOYMENT and doc["pulledAt"] == clock.now
    assert doc["totalResultSize"] == 1  # the /v1/attributes shape: usable as --schema too
    assert dict(resolve_schema(path).schema) == {"age": "number"}


def test_within_the_hour_the_cache_is_used(tmp_path: Path) -> None:
    pull, clock = Puller(), Clock()
    load(tmp_path, pull, clock)
    clock.now += 12 * 60
    got = load(tmp_path, Puller(Schema({"other": "string"})), clock)
    assert got.origin == f"cached 12 minutes ago in {cache_file(DEPLOYMENT, tmp_path)}"
    assert dict(got.schema) == {"age": "number"} and pull.calls == 1


def test_after_an_hour_it_is_pulled_again(tmp_path: Path) -> None:
    clock = Clock()
    load(tmp_path, Puller(), clock)
    clock.now += MAX_AGE
    newer = Puller(Schema({"age": "number", "plan": "string"}))
    got = load(tmp_path, newer, clock)
    assert newer.calls == 1 and got.origin.startswith("pulled from")
    assert "plan" in json.loads(cache_file(DEPLOYMENT, tmp_path).read_text())["data"][1]["name"]


def test_refresh_pulls_whatever_the_cache_holds(tmp_path: Path) -> None:
    clock = Clock()
    load(tmp_path, Puller(), clock)
    again = Puller()
    assert load(tmp_path, again, clock, refresh=True).origin.startswith("pulled from")
    assert again.calls == 1


def test_a_cache_from_the_future_is_pulled_again(tmp_path: Path) -> None:
    clock = Clock()
    load(tmp_path, Puller(), clock)
    clock.now -= 600
    again = Puller()
    load(tmp_path, again, clock)
    assert again.calls == 1


@pytest.mark.parametrize(("content", "why"), [
    ("{not json", "unreadable (JSONDecodeError)"),
    ("[]", "not a schema cache"),
    ('{"deployment": "https://other.talon.one", "pulledAt": 1, "data": []}',
     "holds another deployment's schema"),
    (f'{{"deployment": "{DEPLOYMENT}", "data": []}}', "pulledAt: missing"),
    (f'{{"deployment": "{DEPLOYMENT}", "pulledAt": 1700000000, "data": [{{"name": "a"}}]}}',
     'data[0]: missing "type"'),
])
def test_a_corrupt_cache_is_pulled_again_with_a_warning(tmp_path: Path, content: str,
                                                        why: str) -> None:
    path = cache_file(DEPLOYMENT, tmp_path)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    warnings: list[str] = []
    pull = Puller()
    got = load(tmp_path, pull, Clock(), warnings)
    assert pull.calls == 1 and got.origin.startswith("pulled from")
    assert warnings == [f"schema cache {path}: {why}; pulling the schema again"]
    assert json.loads(path.read_text())["deployment"] == DEPLOYMENT  # repaired


def test_an_unanswered_pull_falls_back_to_an_old_cache(tmp_path: Path) -> None:
    clock = Clock()
    load(tmp_path, Puller(), clock)
    clock.now += 3 * 3600
    warnings: list[str] = []
    got = load(tmp_path, Puller(error=RetriesExhausted("gave up after 6 attempts: last 503")),
               clock, warnings)
    assert got.origin.endswith("(a new pull failed)") and "cached 3 hours ago" in got.origin
    assert warnings == ["could not pull the schema (gave up after 6 attempts: last 503); "
                        "using the one cached 3 hours ago"]


def test_an_unanswered_pull_without_a_cache_fails(tmp_path: Path) -> None:
    with pytest.raises(RetriesExhausted):
        load(tmp_path, Puller(error=RetriesExhausted("down")), Clock())


def test_a_refused_key_always_fails(tmp_path: Path) -> None:
    clock = Clock()
    load(tmp_path, Puller(), clock)
    clock.now += 2 * 3600
    with pytest.raises(AuthError):
        load(tmp_path, Puller(error=AuthError("the management key was refused (401)")), clock)


def test_an_unwritable_state_dir_warns_and_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the directory should be")
    warnings: list[str] = []
    got = cached_schema(DEPLOYMENT, Puller(), state=blocker, clock=Clock(), warn=warnings.append)
    assert got.origin.startswith("pulled from")
    assert len(warnings) == 1 and warnings[0].startswith("cannot write the schema cache")


def test_resolve_schema(tmp_path: Path) -> None:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps([{"name": "age", "type": "number"}]))
    pull = Puller()
    got = resolve_schema(path, deployment=DEPLOYMENT, pull=pull, state=tmp_path)
    assert got is not None and got.origin == f"from {path}" and pull.calls == 0
    assert resolve_schema(None, deployment=DEPLOYMENT, pull=None) is None
    via_cache = resolve_schema(None, deployment=DEPLOYMENT, pull=pull, state=tmp_path,
                               warn=lambda m: None)
    assert via_cache is not None and via_cache.origin.startswith("pulled from")
    with pytest.raises(SchemaError, match="file not found"):
        resolve_schema(tmp_path / "missing.json")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0 seconds"), (1, "1 second"), (45, "45 seconds"), (90, "2 minutes"),
    (12 * 60, "12 minutes"), (3 * 3600, "3 hours"), (3 * 86400, "3 days"),
])
def test_describe_age(seconds: float, text: str) -> None:
    assert describe_age(seconds) == text


def test_cache_files_differ_per_deployment(tmp_path: Path) -> None:
    a = cache_file("https://a.talon.one", tmp_path)
    b = cache_file("http://127.0.0.1:8080", tmp_path)
    assert a != b and b.name.startswith("127.0.0.1_8080-")
