"""The attribute schema on the command line: `schema pull`, --schema, the pull and its cache,
check-config's findings, and the management key. Real HTTP against the emulator throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from talon_classic.cli import main
from talon_classic.emulator.attributes import BUILTIN_ATTRIBUTES, parse_attributes_file
from talon_classic.schema import Schema, read_schema_file

TYPES = {"email": "string", "age": "number", "newsletter": "boolean", "createdAt": "time",
         "tags": "(list string)", "address_city": "string"}
ALLOW = ["email", "age", "newsletter", "createdAt", "tags", "favoriteColor", "address_*",
         "consent_*"]
WRONG = "wrong-management-key-XYZZY-0000"


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path: Path) -> Path:
    """No management key from the developer's shell; a state directory of this test's own."""
    for name in ("TALON_MANAGEMENT_KEY", "TALON_API_KEY", "TALON_APPLICATION_DOMAIN",
                 "TALON_CUSTOM_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    state = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def settings_file(tmp_path: Path, emu, allow=ALLOW, management_key: str | None = None) -> Path:
    doc = {"apiKey": emu.api_key, "applicationDomain": emu.url, "customAttributes": allow}
    if management_key:
        doc["managementKey"] = management_key
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(doc))
    return path


def management_requests(emu) -> list[dict]:
    return [r for r in emu.requests() if r["path"].startswith("/v1/")]


def write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


# -- schema pull ---------------------------------------------------------------------------
def test_schema_pull_writes_every_attribute_custom_and_built_in(talon_emulator_factory,
                                                                 tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    out = tmp_path / "schema.json"
    env = {"TALON_MANAGEMENT_KEY": emu.management_key, "TALON_APPLICATION_DOMAIN": emu.url}
    result = invoke("schema", "pull", "-o", str(out), env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr == (f"pulled {len(TYPES) + len(BUILTIN_ATTRIBUTES)} attributes from "
                             f"{emu.url}/v1/attributes into {out}\n")
    schema = read_schema_file(out)
    assert {n: schema[n] for n in TYPES} == TYPES
    assert {n: schema[n] for n in BUILTIN_ATTRIBUTES} == {
        n: t for n, (t, _) in BUILTIN_ATTRIBUTES.items()}
    doc = json.loads(out.read_text())
    assert doc["totalResultSize"] == len(doc["data"]) == len(schema)
    assert {a["kind"] for a in doc["data"]} == {"builtin", "custom"}  # Talon.One's objects, kept
    assert out.stat().st_mode & 0o777 == 0o644  # names and types only, no user's data
    out.chmod(0o600)
    assert invoke("schema", "pull", "-o", str(out), env=env).exit_code == 0
    assert out.stat().st_mode & 0o777 == 0o600  # an existing file keeps its owner's mode
    assert [r["path"] for r in management_requests(emu)] == ["/v1/attributes"] * 2


def test_schema_pull_to_stdout(talon_emulator_factory, tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    result = invoke("schema", "pull", "--settings",
                    str(settings_file(tmp_path, emu, management_key=emu.management_key)))
    assert result.exit_code == 0, result.output
    assert Schema.from_document(json.loads(result.stdout))["tags"] == "(list string)"
    assert result.stderr.startswith("pulled 12 attributes from ")


@pytest.mark.timeout(60)
def test_schema_pull_pages_past_1000_at_most_3_requests_per_second(talon_emulator_factory,
                                                                   tmp_path: Path) -> None:
    """3,506 attributes: four pages of 1000, against an emulator that answers 429 beyond 3/s."""
    names = {f"attr{i:04d}": ("number", "string", "time")[i % 3] for i in range(3500)}
    emu = talon_emulator_factory(attributes=names, management_rate_limit=3)
    out = tmp_path / "schema.json"
    env = {"TALON_MANAGEMENT_KEY": emu.management_key, "TALON_APPLICATION_DOMAIN": emu.url}
    result = invoke("schema", "pull", "-o", str(out), env=env)
    assert result.exit_code == 0, result.output
    assert "pulled 3,506 attributes" in result.stderr
    schema = read_schema_file(out)
    assert len(schema) == 3506 and {n: schema[n] for n in names} == names
    log = management_requests(emu)
    assert [r["status"] for r in log] == [200] * 4  # never a 429, so never a retry
    # Paced, not a burst: the times are the emulator's, taken when each request is
    # handled, so a loaded machine can move one by a scheduling delay. A client sending
    # at once would show gaps of milliseconds; one paced at 3/s, 1/3 s less that delay.
    times = [r["t"] for r in log]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.2 and times[-1] - times[0] >= 0.8, gaps


def test_pulled_schema_replays_into_the_emulator_command(talon_emulator_factory,
                                                         tmp_path: Path) -> None:
    """`schema pull -o FILE` then `talon-classic emulator --attributes-file FILE`: the same
    attributes, as strict."""
    emu = talon_emulator_factory(attributes=TYPES)
    out = tmp_path / "schema.json"
    env = {"TALON_MANAGEMENT_KEY": emu.management_key, "TALON_APPLICATION_DOMAIN": emu.url}
    assert invoke("schema", "pull", "-o", str(out), env=env).exit_code == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "talon_classic.cli", "emulator", "--port", "0",
         "--attributes-file", str(out)],
        env={**os.environ, "TALON_EMULATOR_API_KEY": "replay-api-key-123456",
             "TALON_EMULATOR_MANAGEMENT_KEY": "replay-management-key-123456"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        listed = requests.get(f"{url}/v1/attributes", timeout=10, headers={
            "Authorization": "ManagementKey-v1 replay-management-key-123456"}).json()
        original = requests.get(f"{emu.url}/v1/attributes", headers=emu.management_headers,
                                timeout=10).json()
        assert ({(a["name"], a["type"]) for a in listed["data"]}
                == {(a["name"], a["type"]) for a in original["data"]})
        put = lambda attrs: requests.put(  # noqa: E731
            f"{url}/v2/customer_profiles/u1", json={"attributes": attrs}, timeout=10,
            headers={"Authorization": "ApiKey-v1 replay-api-key-123456"})
        assert put({"age": 42, "createdAt": "2024-05-01T00:00:00.000Z"}).status_code == 200
        assert put({"age": "42"}).status_code == 400
        assert put({"favoriteColor": "green"}).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert parse_attributes_file(str(out))["age"] == "number"


@pytest.mark.parametrize("command", [
    ["schema", "pull"],
    ["identify", "--quiet", "{events}"],
    ["identify", "--quiet", "--emulator", "{events}"],
    ["serve", "--spool", "{tmp}/spool.db", "--write-key", "wk", "--port", "0"],
])
def test_a_wrong_management_key_is_one_line_exit_3_never_shown(talon_emulator_factory,
                                                               tmp_path: Path, command) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"age": "1"}}])
    args = [a.replace("{events}", str(events)).replace("{tmp}", str(tmp_path)) for a in command]
    result = invoke(*args, "--settings", str(settings_file(tmp_path, emu)),
                    env={"TALON_MANAGEMENT_KEY": WRONG})
    assert result.exit_code == 3, result.output
    assert result.output.splitlines() == [
        "Error: the management key was refused (401): create one in Campaign Manager > Account "
        "> Tools > Management API keys with read access to attributes, and check the "
        "application domain"]
    assert "XYZZY" not in result.output
    assert emu.stats()["profiles"] == 0
    assert not (tmp_path / "spool.db").exists()
    assert not list(tmp_path.glob("state/talon-classic/schemas/*"))


def test_schema_pull_needs_a_key_and_a_reachable_deployment(talon_emulator_factory) -> None:
    result = invoke("schema", "pull", "--application-domain", "http://127.0.0.1:9")
    assert result.exit_code == 2
    assert "managementKey: missing" in result.output and "TALON_MANAGEMENT_KEY" in result.output
    result = invoke("schema", "pull", "--management-key", "k\nXYZZY")
    assert result.exit_code == 2
    assert result.output.startswith("Error: --management-key: managementKey: ")
    assert "XYZZY" not in result.output


def test_a_management_key_from_the_environment_stays_out_of_ps(talon_emulator_factory,
                                                               tmp_path: Path) -> None:
    """The flag says to prefer the variable; the variable works and is never echoed."""
    emu = talon_emulator_factory(attributes=TYPES, management_key="env-management-key-123456")
    proc = subprocess.run(
        [sys.executable, "-m", "talon_classic.cli", "schema", "pull", "--application-domain",
         emu.url], capture_output=True, text=True,
        env={**os.environ, "TALON_MANAGEMENT_KEY": "env-management-key-123456"})
    assert proc.returncode == 0, proc.stderr
    assert "env-management-key" not in proc.stdout + proc.stderr
    out = invoke("schema", "pull", "--help").output
    assert "--management-key" in out and "TALON_MANAGEMENT_KEY" in out and "Never printed" in out


# -- --schema, the pull at start and its cache ------------------------------------------------
def test_identify_pulls_once_then_uses_the_cache_and_refreshes_on_demand(
        talon_emulator_factory, tmp_path: Path, isolated: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    settings = settings_file(tmp_path, emu, management_key=emu.management_key)
    events = write_events(tmp_path / "in.jsonl",
                          [{"userId": "u1", "traits": {"age": "42", "createdAt": 1714566600}}])

    def run(*extra: str) -> str:
        result = invoke("identify", "--quiet", str(events), "--settings", str(settings), *extra)
        assert result.exit_code == 0, result.output
        return result.output.splitlines()[0]

    count = len(TYPES) + len(BUILTIN_ATTRIBUTES)
    assert run() == f"schema: pulled from {emu.url} ({count} attributes)"
    assert emu.profile("u1")["attributes"] == {"age": 42,
                                               "createdAt": "2024-05-01T12:30:00.000Z"}
    cached = list((isolated / "talon-classic" / "schemas").iterdir())
    assert len(cached) == 1 and cached[0].stat().st_mode & 0o777 == 0o600
    assert re.fullmatch(rf"schema: cached \d+ seconds? ago in {re.escape(str(cached[0]))} "
                        rf"\({count} attributes\)", run())
    assert len(management_requests(emu)) == 1  # the second run did not ask

    emu.configure(attributes={**TYPES, "plan": "string"})  # created in Talon.One meanwhile
    assert run().endswith(f"({count} attributes)")  # the hour is not over: the cache
    assert run("--refresh-schema") == f"schema: pulled from {emu.url} ({count + 1} attributes)"
    assert len(management_requests(emu)) == 2

    doc = json.loads(cached[0].read_text())  # pulled 61 minutes ago: stale, pulled again
    doc["pulledAt"] -= 61 * 60
    cached[0].write_text(json.dumps(doc))
    assert run().startswith("schema: pulled from")
    assert len(management_requests(emu)) == 3

    as_json = invoke("identify", "--quiet", "--json", str(events), "--settings", str(settings))
    assert json.loads(as_json.stdout)["schema"] == {
        "origin": json.loads(as_json.stdout)["schema"]["origin"], "attributes": count + 1}
    assert json.loads(as_json.stdout)["schema"]["origin"].startswith("cached ")


def test_a_schema_file_wins_over_the_pull(talon_emulator_factory, tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    schema = tmp_path / "typed.json"
    schema.write_text(json.dumps([{"name": n, "type": t} for n, t in TYPES.items()]))
    settings = settings_file(tmp_path, emu, management_key=emu.management_key)
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"age": "7"}}])
    result = invoke("identify", "--quiet", str(events), "--settings", str(settings),
                    "--schema", str(schema))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == f"schema: from {schema} (6 attributes)"
    assert management_requests(emu) == []
    refused = invoke("identify", "--quiet", str(events), "--settings", str(settings),
                     "--schema", str(schema), "--refresh-schema")
    assert refused.exit_code == 2 and "--refresh-schema" in refused.output


def test_without_a_schema_the_summary_says_nothing_of_one(talon_emulator, tmp_path: Path) -> None:
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"age": "7"}}])
    result = invoke("identify", "--quiet", str(events), "--settings",
                    str(settings_file(tmp_path, talon_emulator)))
    assert result.exit_code == 0
    assert not any(line.startswith("schema") for line in result.output.splitlines())
    assert talon_emulator.profile("u1")["attributes"] == {"age": "7"}
    refresh = invoke("identify", "--quiet", str(events), "--settings",
                     str(settings_file(tmp_path, talon_emulator)), "--refresh-schema")
    assert refresh.exit_code == 2
    assert "--refresh-schema needs a management key" in refresh.output


@pytest.mark.parametrize("content, message", [
    (None, "typed.json: file not found"),
    ("{oops", "typed.json: not valid JSON: Expecting property name enclosed in double quotes"),
    ('[{"name": "age"}]', 'typed.json: [0]: missing "type"'),
    ('{"totalResultSize": 3, "data": []}', "typed.json: holds 0 of the 3 attributes"),
])
@pytest.mark.parametrize("command", ["transform", "identify", "serve"])
def test_a_bad_schema_file_is_one_line_exit_2_nothing_sent(talon_emulator, tmp_path: Path,
                                                           content, message, command) -> None:
    schema = tmp_path / "typed.json"
    if content is not None:
        schema.write_text(content)
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"age": "7"}}])
    extra = {"transform": [str(events)], "identify": ["--quiet", str(events)],
             "serve": ["--spool", str(tmp_path / "s.db"), "--write-key", "wk", "--port", "0"]}
    result = invoke(command, *extra[command], "--settings",
                    str(settings_file(tmp_path, talon_emulator)), "--schema", str(schema))
    assert result.exit_code == 2, result.output
    assert len(result.output.splitlines()) == 1
    assert result.output.startswith(f"Error: {message}")
    assert talon_emulator.stats()["requests"] == {}


@pytest.mark.timeout(60)
def test_an_unreachable_management_api_is_one_line_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the client's retries, one line; a --schema FILE is the way out.

    The retries are real (six refused connections); only their backoff is
    shortened, from about 8 s in all to milliseconds.
    """
    from talon_classic.management import ManagementClient

    pulled = ManagementClient.from_settings.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(ManagementClient, "from_settings", classmethod(
        lambda cls, settings, **kw: pulled(cls, settings, **{"backoff_base": 0.001, **kw})))
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1"}])
    result = invoke("identify", "--quiet", "--dry-run", str(events), "--application-domain",
                    "http://127.0.0.1:9", "--api-key", "some-api-key-1234",
                    "--management-key", "some-management-key-1234")
    assert result.exit_code == 2
    last = result.output.splitlines()[-1]
    assert last.startswith("Error: cannot read the attribute schema from http://127.0.0.1:9: ")
    assert last.endswith("give --schema FILE (written by `talon-classic schema pull`)")
    assert "Traceback" not in result.output and "some-management-key" not in result.output


def test_serve_pulls_at_start_and_says_so(talon_emulator_factory, tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    settings = settings_file(tmp_path, emu)
    proc = subprocess.Popen(
        [sys.executable, "-m", "talon_classic.cli", "serve", "--settings", str(settings),
         "--spool", str(tmp_path / "s.db"), "--write-key", "wk", "--port", "0"],
        env={**os.environ, "TALON_MANAGEMENT_KEY": emu.management_key,
             "XDG_STATE_HOME": str(tmp_path / "state")},
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        first, second = proc.stdout.readline(), proc.stdout.readline()
        assert first == f"schema: pulled from {emu.url} (12 attributes)\n"
        url = re.search(r"http://\S+", second).group(0).rstrip(",")
        sent = requests.post(f"{url}/v1/identify", auth=("wk", ""), timeout=10, json={
            "type": "identify", "userId": "s1", "traits": {"age": " 5 ", "favoriteColor": "x"}})
        assert sent.status_code == 200
        deadline = time.monotonic() + 20
        while emu.profile("s1") is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert emu.profile("s1")["attributes"] == {"age": 5}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# -- check-config -----------------------------------------------------------------------------
def test_check_config_with_a_schema_lists_each_entry(talon_emulator, tmp_path: Path) -> None:
    schema = tmp_path / "typed.json"
    schema.write_text(json.dumps([{"name": n, "type": t} for n, t in TYPES.items()]
                                 + [{"name": "Age", "type": "number"}]))
    result = invoke("check-config", "--settings", str(settings_file(tmp_path, talon_emulator)),
                    "--schema", str(schema), "--custom-attribute", "email",
                    "--custom-attribute", "age", "--custom-attribute", "Email",
                    "--custom-attribute", "address_*", "--custom-attribute", "consent_*")
    assert result.exit_code == 0, result.output  # warnings do not fail it
    lines = result.output.splitlines()
    assert lines[2:9] == [
        f"ok   schema: from {schema} (7 attributes)",
        "ok   email: string",
        "ok   age: number",
        "warn Email: no such customer-profile attribute in Talon.One (did you mean email?); it "
        "is dropped as unknown_attribute until it is created (Campaign Manager > Attributes)",
        "ok   address_*: matches 1 attribute (address_city: string)",
        "warn consent_*: matches no Talon.One attribute; every trait it lets through is "
        "dropped as unknown_attribute",
        "note Engage audiences and computed traits bypass the allowlist but not the schema: "
        "each must exist as a customer-profile attribute (an audience as a boolean) or it is "
        "dropped as unknown_attribute",
    ]
    assert lines[-1].startswith("ok   apiKey")
    bad = invoke("check-config", "--settings", str(settings_file(tmp_path, talon_emulator)),
                 "--schema", str(tmp_path / "missing.json"))
    assert bad.exit_code == 1
    assert bad.output.splitlines()[-1].startswith("FAIL schema: missing.json: file not found")


def test_check_config_tests_the_management_key_and_checks_the_pulled_schema(
        talon_emulator_factory, tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    settings = settings_file(tmp_path, emu, allow=["age", "plan"],
                             management_key=emu.management_key)
    result = invoke("check-config", "--settings", str(settings))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, x in enumerate(lines) if "managementKey" in x)
    assert lines[start:start + 3] == [
        f"ok   managementKey ****{emu.management_key[-4:]}: read 12 customer-profile "
        f"attributes from {emu.url}/v1/attributes",
        "ok   age: number",
        "warn plan: no such customer-profile attribute in Talon.One; it is dropped as "
        "unknown_attribute until it is created (Campaign Manager > Attributes)",
    ]
    assert not (tmp_path / "state").exists()  # a check writes no cache
    wrong = invoke("check-config", "--settings", str(settings), "--management-key", WRONG)
    assert wrong.exit_code == 1
    assert wrong.output.splitlines()[-1] == (
        "FAIL managementKey ****0000: the management key was refused (401): create one in "
        "Campaign Manager > Account > Tools > Management API keys with read access to "
        "attributes, and check the application domain")
    assert "XYZZY" not in wrong.output


# -- identify --emulator: as strict as Talon.One ---------------------------------------------
def test_the_in_process_emulator_is_typed_from_the_schema(tmp_path: Path) -> None:
    from talon_classic.cli.identify import emulator_for
    from talon_classic.settings import Settings

    settings = Settings(custom_attributes=("age", "tags", "address_*", "nope"))
    schema = Schema({**TYPES, "address_zip": "number", "plan": "string"})
    with emulator_for(settings, 0, None, schema=schema) as server:
        config = server.app.config
        assert config.attributes == {"age", "tags", "address_city", "address_zip"}
        assert dict(config.attribute_types) == dict(schema)
        put = lambda attrs: requests.put(  # noqa: E731
            f"{server.url}/v2/customer_profiles/u1", json={"attributes": attrs}, timeout=10,
            headers={"Authorization": f"ApiKey-v1 {config.api_key}"})
        assert put({"age": 1, "address_zip": 22201}).status_code == 200
        assert put({"age": "1"}).status_code == 400  # typed
        assert put({"plan": "gold"}).status_code == 400  # in Talon.One, but not allowlisted
        assert put({"nope": 1}).status_code == 400  # allowlisted, not in Talon.One
    with emulator_for(settings, 0, None, strict=False, schema=schema) as server:  # serve's
        assert server.app.config.attributes == set(schema)


def test_identify_emulator_with_a_schema_delivers_typed_values(tmp_path: Path) -> None:
    schema = tmp_path / "typed.json"
    schema.write_text(json.dumps([{"name": n, "type": t} for n, t in TYPES.items()]
                                 + [{"name": "vip", "type": "boolean"}]))
    events = write_events(tmp_path / "in.jsonl", [
        {"userId": "u1", "traits": {"age": "42", "newsletter": "TRUE", "tags": ["a", 1],
                                    "favoriteColor": "green", "VIP": "true"},
         "context": {"personas": {"computation_class": "audience", "computation_key": "VIP"}}},
        {"userId": "u2", "traits": {"age": "old", "createdAt": 1714566600123}},
    ])
    result = CliRunner().invoke(main, [
        "identify", "--quiet", "--json", "--emulator", str(events), "--schema", str(schema),
        "--custom-attribute", "age", "--custom-attribute", "newsletter", "--custom-attribute",
        "tags", "--custom-attribute", "createdAt", "--custom-attribute", "favoriteColor",
        "--dead-letter", str(tmp_path / "dead.jsonl")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dead_lettered"] == 0 and report["profiles_upserted"] == 2
    assert report["dropped"]["type_mismatch"] == {"count": 1, "top": {"age": 1}}
    assert report["dropped"]["unknown_attribute"] == {"count": 1, "top": {"favoriteColor": 1}}
    assert report["schema"] == {"origin": f"from {schema}", "attributes": 7}


def test_a_resumed_run_types_with_the_recorded_schema(talon_emulator, tmp_path: Path) -> None:
    schema = tmp_path / "typed.json"
    schema.write_text(json.dumps([{"name": n, "type": t} for n, t in TYPES.items()]))
    events = write_events(tmp_path / "in.jsonl", [{"userId": "u1", "traits": {"age": "7"}}])
    checkpoint = tmp_path / "run.checkpoint.json"
    first = invoke("identify", "--quiet", str(events), "--settings",
                   str(settings_file(tmp_path, talon_emulator)), "--schema", str(schema),
                   "--checkpoint", str(checkpoint))
    assert first.exit_code == 0, first.output
    assert json.loads(checkpoint.read_text())["options"]["schema"] == str(schema)
    resumed = invoke("identify", "--quiet", str(events), "--checkpoint", str(checkpoint),
                     "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.splitlines()[0] == f"schema: from {schema} (6 attributes)"



def test_a_refused_read_names_the_deployment(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(attributes=TYPES)
    emu.configure(fail_next=1, fail_status=404)
    result = invoke("schema", "pull", "--application-domain", emu.url,
                    env={"TALON_MANAGEMENT_KEY": emu.management_key})
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: cannot read the attribute schema from {emu.url}: ")
    assert len(result.output.splitlines()) == 1


def test_schema_pull_of_an_answer_nested_deeply_is_one_line(tmp_path: Path) -> None:
    from hostile_http import deep, hostile_server

    with hostile_server(lambda *_: (200, deep())) as server:
        result = invoke("schema", "pull", "--application-domain", server.url,
                        "--management-key", "some-management-key-1234")
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: cannot read the attribute schema from {server.url}: ")
    assert "nested too deeply" in line


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_schema_pull_to_a_full_stdout_is_one_line_exit_1(talon_emulator_factory,
                                                         tmp_path: Path) -> None:
    emu = talon_emulator_factory(attributes=TYPES, management_key="pull-key-0123456789")
    settings = settings_file(tmp_path, emu, management_key="pull-key-0123456789")
    with open("/dev/full", "w") as full:
        result = subprocess.run([sys.executable, "-m", "talon_classic.cli", "schema", "pull",
                                 "--settings", str(settings)], stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == "Error: cannot write to standard output (No space left on device)\n"
