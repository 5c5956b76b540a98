"""--engage-audiences on identify, serve and transform, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from talon_classic.cli import main
from talon_classic.client import Client

PERSONAS = {"computation_class": "audience", "computation_key": "vip_users",
            "computation_id": "aud_1", "space_id": "spa_1"}


def track(user: str, entered: bool, ts: str) -> dict[str, Any]:
    return {"type": "track", "userId": user, "timestamp": ts,
            "event": "Audience Entered" if entered else "Audience Exited",
            "properties": {"audience_key": "vip_users"}, "context": {"personas": PERSONAS}}


def identify(user: str, value: bool, ts: str) -> dict[str, Any]:
    return {"type": "identify", "userId": user, "timestamp": ts,
            "traits": {"vip_users": value, "email": f"{user}@x"},
            "context": {"personas": PERSONAS}}


def write(path: Path, events: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


@pytest.fixture()
def env(tmp_path: Path, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("TALON_API_KEY", "TALON_APPLICATION_DOMAIN", "TALON_ENGAGE_AUDIENCES",
                 "TALON_MANAGEMENT_KEY", "TALON_CUSTOM_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    return {}


def test_transform_shows_the_memberships(tmp_path: Path, env) -> None:
    src = write(tmp_path / "in.jsonl", [identify("u1", True, "2024-05-03T10:00:00Z"),
                                        track("u2", False, "2024-05-03T10:00:00Z")])
    result = CliRunner().invoke(main, ["transform", "--custom-attribute", "email",
                                       "--engage-audiences", "memberships", src])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert lines[0] == {"line": 1, "input": src, "integrationId": "u1",
                        "attributes": {"email": "u1@x"}, "dropped": [],
                        "memberships": [{"action": "add", "audience": "vip_users",
                                         "computation_id": "aud_1"}]}
    assert lines[1]["memberships"] == [{"action": "delete", "audience": "vip_users",
                                        "computation_id": "aud_1"}]
    classic = CliRunner().invoke(main, ["transform", "--custom-attribute", "email", src])
    first = json.loads(classic.stdout.splitlines()[0])
    assert first["attributes"] == {"email": "u1@x", "vip_users": True}
    assert "memberships" not in first
    assert json.loads(classic.stdout.splitlines()[1])["skipped"] == "not_identify"


def test_the_environment_variable_and_a_bad_value(tmp_path: Path, env, monkeypatch) -> None:
    src = write(tmp_path / "in.jsonl", [identify("u1", True, "2024-05-03T10:00:00Z")])
    monkeypatch.setenv("TALON_ENGAGE_AUDIENCES", "both")
    result = CliRunner().invoke(main, ["transform", src])
    line = json.loads(result.stdout.splitlines()[0])
    assert line["attributes"] == {"vip_users": True} and line["memberships"]
    monkeypatch.setenv("TALON_ENGAGE_AUDIENCES", "maybe")
    bad = CliRunner().invoke(main, ["transform", src])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1] == (
        "Error: TALON_ENGAGE_AUDIENCES: engageAudiences: expected one of attributes, "
        "memberships, both")
    flag = CliRunner().invoke(main, ["transform", "--engage-audiences", "nope", src])
    assert flag.exit_code == 2 and "'nope' is not one of" in flag.output


def test_identify_counts_memberships_and_a_rerun_keeps_newer_ones(
        talon_emulator, tmp_path: Path, env) -> None:
    args = ["identify", "--application-domain", talon_emulator.url, "--custom-attribute", "email",
            "--engage-audiences", "memberships", "--rate-limit", "0", "--json"]
    cli_env = {"TALON_API_KEY": talon_emulator.api_key}
    first = CliRunner().invoke(main, [*args, write(tmp_path / "a.jsonl", [
        identify("u1", True, "2024-05-03T10:00:00Z"), track("u2", True, "2024-05-03T10:00:00Z"),
        track("u2", False, "2024-05-03T09:00:00Z")])], env=cli_env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["memberships"] == {"added": 2, "removed": 0,
                                                       "superseded": 1}
    second = CliRunner().invoke(main, [*args, write(tmp_path / "b.jsonl", [
        track("u1", False, "2024-05-03T09:00:00Z"), identify("u2", False, "2024-05-03T11:00:00Z"),
    ])], env=cli_env)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["memberships"] == {"added": 0, "removed": 1,
                                                        "superseded": 1}
    [audience] = talon_emulator.audiences()
    assert audience["name"] == "vip_users" and audience["integrationId"] == "aud_1"
    assert talon_emulator.audience_members(audience["id"]) == ["u1"]
    assert list((tmp_path / "state" / "talon-classic").glob("*.db"))  # the deployment's state


def test_identify_409_through_the_management_key(talon_emulator_factory, tmp_path, env) -> None:
    emu = talon_emulator_factory(management_key="mk-0123456789abcdef")
    with Client(emu.url, emu.api_key, rate_limit=0) as client:  # made elsewhere, earlier
        existing = client.create_audience("VIP", integration="segment",
                                          integration_id="aud_1").id
    args = ["identify", "--application-domain", emu.url, "--engage-audiences", "memberships",
            "--rate-limit", "0", "-q", write(tmp_path / "a.jsonl", [
                track("u1", True, "2024-05-03T10:00:00Z")])]
    without = CliRunner().invoke(main, args, env={"TALON_API_KEY": emu.api_key})
    assert without.exit_code == 1  # dead-lettered, with the reason: nothing lost
    letter = json.loads((tmp_path / "a.jsonl.dead.jsonl").read_text().splitlines()[0])
    assert "managementKey" in letter["error"] and "audienceIds" in letter["error"]
    with_key = CliRunner().invoke(main, args, env={"TALON_API_KEY": emu.api_key,
                                                   "TALON_MANAGEMENT_KEY": emu.management_key})
    assert with_key.exit_code == 0, with_key.output
    assert emu.audience_members(existing) == ["u1"]


def test_identify_emulator_without_db_keeps_no_state(tmp_path: Path, env) -> None:
    src = write(tmp_path / "a.jsonl", [identify("u1", True, "2024-05-03T10:00:00Z")])
    for _ in range(2):  # each run's emulator is new: nothing remembered, nothing refused
        result = CliRunner().invoke(main, ["identify", "--emulator", "--engage-audiences",
                                           "both", "--json", src])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["memberships"]["added"] == 1
    assert not (tmp_path / "state").exists()


def test_identify_dry_run_says_memberships_are_not_shown(tmp_path: Path, env) -> None:
    src = write(tmp_path / "a.jsonl", [identify("u1", True, "2024-05-03T10:00:00Z")])
    result = CliRunner().invoke(main, ["identify", "--dry-run", "--api-key", "k" * 16,
                                       "--application-domain", "https://x.talon.one",
                                       "--engage-audiences", "memberships", src])
    assert result.exit_code == 0, result.output
    assert "dry run: Engage audience memberships are not shown" in result.stderr
