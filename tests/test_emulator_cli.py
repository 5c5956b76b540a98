"""``talon-classic emulator``: typed attributes, the management key and its rate limit."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from talon_classic.cli import main

KEY = "cli-emulator-key-1234567"
MANAGEMENT_KEY = "cli-management-key-7654321"


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator:
    """Start ``talon-classic emulator --port 0 ARGS...``; yields (url, first line, stderr file)."""
    procs: list[subprocess.Popen] = []

    def start(*args: str, env: dict[str, str] | None = None) -> tuple[str, str, Path]:
        err = tmp_path / f"stderr{len(procs)}.txt"
        proc = subprocess.Popen([sys.executable, "-m", "talon_classic", "emulator", "--port",
                                 "0", "--api-key", KEY, *args],
                                env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                                stderr=err.open("w"), text=True)
        procs.append(proc)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        found = re.search(r"http://\S+", first)
        assert found, (first, err.read_text())
        return found.group(0), first, err

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def put(url: str, attributes: dict) -> requests.Response:
    return requests.put(f"{url}/v2/customer_profiles/u1", json={"attributes": attributes},
                        headers={"Authorization": f"ApiKey-v1 {KEY}"}, timeout=5)


def test_typed_attributes_from_flags_and_a_schema_file(serve, tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"  # what `schema pull` writes
    schema.write_text(json.dumps({"totalResultSize": 3, "data": [
        {"name": "age", "type": "number", "entity": "CustomerProfile"},
        {"name": "since", "type": "time", "entity": "CustomerProfile"},
        {"name": "basket", "type": "number", "entity": "CustomerSession"}]}))
    url, first, err = serve("--attributes-file", str(schema), "--attribute", "tags:(list string)",
                            "--attribute", "since:string", "--attribute", "note",
                            env={"TALON_EMULATOR_MANAGEMENT_KEY": MANAGEMENT_KEY})
    assert MANAGEMENT_KEY not in first and "management key ****4321" in first
    ok = put(url, {"age": 42, "since": "soon", "tags": ["a"], "note": {"any": 1}})
    assert ok.status_code == 200, ok.text
    for bad in ({"age": "42"}, {"tags": "a"}, {"since": 5}, {"basket": 1}):
        assert put(url, bad).status_code == 400, bad
    listed = requests.get(f"{url}/v1/attributes", params={"kind": "custom"}, timeout=5,
                          headers={"Authorization": f"ManagementKey-v1 {MANAGEMENT_KEY}"})
    assert [(a["name"], a["type"]) for a in listed.json()["data"]] == [
        ("age", "number"), ("note", "any"), ("since", "string"), ("tags", "(list string)")]
    assert err.read_text() == ""


def test_management_rate_limit_and_key_flags(serve) -> None:
    url, _, _ = serve("--management-key", MANAGEMENT_KEY, "--management-rate-limit", "1")
    auth = {"Authorization": f"ManagementKey-v1 {MANAGEMENT_KEY}"}
    statuses = [requests.get(f"{url}/v1/audiences", headers=auth, timeout=5).status_code
                for _ in range(2)]
    assert statuses == [200, 429]
    assert requests.get(f"{url}/v1/audiences", timeout=5,
                        headers={"Authorization": "ManagementKey-v1 emulator-management-key"}
                        ).status_code == 401


def test_an_unknown_type_is_accepted_with_a_warning(serve) -> None:
    url, _, err = serve("--attribute", "odd:numbr")
    assert put(url, {"odd": "anything"}).status_code == 200
    assert err.read_text() == ("warning: attribute 'odd' has type 'numbr', which Talon.One does "
                               "not have: any value is accepted for it\n")


@pytest.mark.parametrize("args, message", [
    (["--attribute", ":number"], "Error: --attribute ':number': expected NAME or NAME:TYPE"),
    (["--attribute", "c_*:boolean"], "Error: --attribute 'c_*:boolean': pattern 'c_*' cannot have a type"),
    (["--attributes-file", "{bad}"], "Error: {bad}: item[1]: \"name\" must be a non-empty string"),
    (["--management-key", "k\nXYZZY"], "Error: --management-key: managementKey: "),
])
def test_bad_options_are_one_line_exit_2(tmp_path: Path, args, message) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "a", "type": "number"}, {"type": "string"}]')
    args = [a.replace("{bad}", str(bad)) for a in args]
    result = CliRunner().invoke(main, ["emulator", "--port", "0", *args])
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[-1].startswith(message.replace("{bad}", str(bad))), lines
    assert "Traceback" not in result.output and "XYZZY" not in result.output


def test_a_bad_management_key_in_the_environment_names_the_variable() -> None:
    result = CliRunner().invoke(main, ["emulator", "--port", "0"],
                                env={"TALON_EMULATOR_MANAGEMENT_KEY": "k\x7fXYZZY"})
    assert result.exit_code == 2
    assert result.output.startswith("Error: TALON_EMULATOR_MANAGEMENT_KEY: managementKey: ")
    assert "control character" in result.output and "XYZZY" not in result.output


def test_help_documents_the_new_flags() -> None:
    out = CliRunner().invoke(main, ["emulator", "--help"], terminal_width=200).output
    for flag in ("--attribute NAME[:TYPE]", "--attributes-file", "--management-key",
                 "TALON_EMULATOR_MANAGEMENT_KEY", "--management-rate-limit"):
        assert flag in out
