"""`talon-classic audience ...` end to end against the emulator, over real loopback HTTP."""

from __future__ import annotations

import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from talon_classic.audience_state import AudienceState
from talon_classic.cli import main
from talon_classic.state import state_file


@pytest.fixture()
def emu(talon_emulator):
    return talon_emulator


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch) -> Path:
    """Every test gets its own state directory."""
    where = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(where))
    monkeypatch.delenv("TALON_MANAGEMENT_KEY", raising=False)
    return where


def settings_for(tmp_path: Path, emu, management: bool = True) -> str:
    path = tmp_path / "settings.json"
    doc = {"apiKey": emu.api_key, "applicationDomain": emu.url}
    if management:
        doc["managementKey"] = emu.management_key
    path.write_text(json.dumps(doc))
    return str(path)


def cli(*args: str, input: bytes | str | None = None):
    return CliRunner().invoke(main, ["audience", *args], input=input, catch_exceptions=False)


def lines(path: Path, ids) -> Path:
    path.write_text("".join(f"{i}\n" for i in ids))
    return path


def create(settings: str, name: str = "VIP", *extra: str) -> int:
    result = cli("create", name, "--settings", settings, *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["id"]


def sync(settings: str, *args: str, input=None):
    return cli("sync", "--settings", settings, "--quiet", "--json", *args, input=input)


def summary(result) -> dict:
    return json.loads(result.stdout)


# -- create, rename, delete, clear, list -------------------------------------------------
def test_create_prints_the_audience_id_first(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    result = cli("create", "VIP customers", "--settings", settings, "--description", "big",
                 "--integration-id", "crm-vip", "--integration", "crm")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith('{"id":1,')
    created = json.loads(result.stdout)
    assert (created["name"], created["description"], created["integrationId"],
            created["integration"]) == ("VIP customers", "big", "crm-vip", "crm")
    assert emu.audiences() == [{"id": 1, "name": "VIP customers", "integrationId": "crm-vip",
                                "members": 0}]


def test_create_409_says_what_talon_one_said_and_finds_the_id(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    create(settings, "a", "--integration-id", "x", "--integration", "crm")
    again = cli("create", "b", "--settings", settings, "--integration-id", "x",
                "--integration", "crm")
    assert again.exit_code == 1
    (line,) = again.stderr.strip().splitlines()
    assert line.startswith("Error: the audience exists (409): ")
    assert "already exists" in line and line.endswith("; it is audience 1")
    plain = settings_for(tmp_path, emu, management=False)
    third = cli("create", "c", "--settings", plain, "--integration-id", "x", "--integration",
                "crm")
    assert third.exit_code == 1 and "talon-classic audience list shows" in third.stderr
    assert len(emu.audiences()) == 1


def test_a_create_whose_answer_was_lost_is_not_sent_again(emu, tmp_path: Path) -> None:
    emu.configure(drop_next=1)
    result = cli("create", "Dup test", "--settings", settings_for(tmp_path, emu))
    assert result.exit_code == 1 and result.stdout == ""
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error: ")]
    assert line.startswith("Error: the audience may have been created: ")
    assert line.endswith("; talon-classic audience list shows whether it exists")
    assert [a["name"] for a in emu.audiences()] == ["Dup test"]  # one, not two


def test_a_dropped_create_with_an_integration_id_prints_the_audience_it_made(
        emu, tmp_path: Path) -> None:
    emu.configure(drop_next=1)
    result = cli("create", "Dup test", "--settings", settings_for(tmp_path, emu),
                 "--integration-id", "aud_dup", "--integration", "segment")
    assert result.exit_code == 0, result.output
    created = json.loads(result.stdout)
    assert (created["id"], created["name"], created["integrationId"]) == (1, "Dup test",
                                                                         "aud_dup")
    assert "Error" not in result.stderr and "exists" not in result.stderr
    assert len(emu.audiences()) == 1
    # without the management key its id cannot be had: said so, calmly, in one line
    emu.configure(drop_next=1)
    plain = cli("create", "Other", "--settings", settings_for(tmp_path, emu, management=False),
                "--integration-id", "aud_other")
    assert plain.exit_code == 1 and plain.stdout == ""
    (line,) = [x for x in plain.stderr.splitlines() if x.startswith("Error: ")]
    assert line.startswith("Error: the audience was created by an attempt whose answer was "
                           "lost") and "set managementKey" in line
    assert [a["integrationId"] for a in emu.audiences()] == ["aud_dup", "aud_other"]


def test_a_delete_whose_answer_was_lost_is_done_and_forgotten(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings, "drop")
    members = lines(tmp_path / "m.txt", ["u1", "u2"])
    assert sync(settings, str(members), "--audience-id", str(audience_id),
                "--mode", "mirror").exit_code == 0
    emu.configure(drop_next=1)
    deleted = cli("delete", str(audience_id), "--settings", settings)
    assert deleted.exit_code == 0, deleted.output
    assert deleted.stdout == f"deleted audience {audience_id}\n"
    assert "Error" not in deleted.stderr and emu.audiences() == []
    with AudienceState(state_file(emu.url)) as recorded:
        assert not recorded.is_known(audience_id)


@pytest.mark.parametrize("args, message", [
    (["create", " "], "NAME must not be empty"),
    (["create", "a", "--integration-id", ""], "--integration-id must be 1 to 1000"),
    (["rename", "1", ""], "NAME must not be empty"),
    (["rename", "0", "x"], "0 is not in the range 1<=x<=9223372036854775807"),
    (["rename", str(2**63), "x"], "9223372036854775808 is not in the range 1<=x<=9223372036854775807"),
    (["delete", "999999999999999999999"], "is not in the range 1<=x<=9223372036854775807"),
    (["clear", "999999999999999999999"], "is not in the range 1<=x<=9223372036854775807"),
    (["sync", "-", "--audience-id", "999999999999999999999", "--mode", "add"],
     "is not in the range 1<=x<=9223372036854775807"),
    (["sync", "-", "--audience-id", "999999999999999999999", "--mode", "add", "--no-state"],
     "is not in the range 1<=x<=9223372036854775807"),
    (["delete", "abc"], "'abc' is not a valid integer"),
])
def test_bad_arguments_exit_2_and_send_nothing(emu, tmp_path: Path, args, message) -> None:
    result = cli(*args, "--settings", settings_for(tmp_path, emu))
    assert result.exit_code == 2 and message in result.stderr
    assert emu.stats()["requests"] == {}


def test_rename(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings, "old")
    result = cli("rename", str(audience_id), "new name", "--settings", settings)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["name"] == "new name"
    assert emu.audiences()[0]["name"] == "new name"


@pytest.mark.parametrize("command", [["rename", "42", "x"], ["delete", "42"], ["clear", "42"],
                                     ["sync", "-", "--audience-id", "42", "--mode", "add"]])
def test_an_unknown_audience_id_is_one_line_exit_2(emu, tmp_path: Path, command) -> None:
    result = cli(*command, "--settings", settings_for(tmp_path, emu), input="u1\n")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: audience 42 does not exist in this Talon.One deployment "
                           "(404: ") and line.endswith("talon-classic audience list shows them)")


def test_delete_and_clear_keep_the_state_database_true(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    keep, drop = create(settings, "keep"), create(settings, "drop")
    members = lines(tmp_path / "m.txt", ["u1", "u2"])
    for audience_id in (keep, drop):
        assert sync(settings, str(members), "--audience-id", str(audience_id),
                    "--mode", "mirror").exit_code == 0
    cleared = cli("clear", str(keep), "--settings", settings)
    assert cleared.exit_code == 0 and cleared.stdout == f"cleared audience {keep}\n"
    assert emu.audience_members(keep) == []
    # the state knows it is empty, so the next mirror adds everyone again
    again = summary(sync(settings, str(members), "--audience-id", str(keep), "--mode", "mirror"))
    assert (again["added"], again["unchanged"], again["first_mirror"]) == (2, 0, False)
    assert emu.audience_members(keep) == ["u1", "u2"]
    deleted = cli("delete", str(drop), "--settings", settings)
    assert deleted.exit_code == 0 and deleted.stdout == f"deleted audience {drop}\n"
    assert [a["id"] for a in emu.audiences()] == [keep]
    with AudienceState(state_file(emu.url)) as recorded:
        assert recorded.member_count(drop) == 0 and not recorded.is_known(drop)
        assert recorded.member_count(keep) == 2


def test_a_clear_whose_state_database_cannot_be_used_sends_nothing(emu, tmp_path: Path) -> None:
    """Found by an adversarial pass: clear emptied the audience first and failed on the state
    afterwards, which still recorded every member, so the next sync added nobody."""
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    members = lines(tmp_path / "m.txt", ["u1", "u2"])
    assert sync(settings, str(members), "--audience-id", str(audience_id),
                "--mode", "add").exit_code == 0
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    result = cli("clear", str(audience_id), "--settings", settings, "--state", str(garbage))
    assert result.exit_code == 2 and "cannot open the state database" in result.stderr
    assert emu.audience_members(audience_id) == ["u1", "u2"]  # nothing was sent


def test_list_needs_the_management_key(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    create(settings, "VIP")
    create(settings, "Churn risk", "--integration", "segment", "--integration-id", "aud_1")
    listed = cli("list", "--settings", settings)
    assert listed.exit_code == 0
    assert listed.stdout.splitlines() == [
        "    id  name                            integration   integrationId",
        "     1  VIP                             -             -",
        "     2  Churn risk                      segment       aud_1"]
    as_json = cli("list", "--settings", settings, "--json")
    assert [json.loads(x)["id"] for x in as_json.stdout.splitlines()] == [1, 2]
    assert as_json.stdout.startswith('{"id":1,"name":"VIP"')
    without = cli("list", "--settings", settings_for(tmp_path, emu, management=False))
    assert without.exit_code == 2
    (line,) = without.stderr.strip().splitlines()
    assert "audience list needs the management key" in line and "TALON_MANAGEMENT_KEY" in line


def test_list_takes_the_management_key_from_the_environment(emu, tmp_path: Path,
                                                            monkeypatch) -> None:
    monkeypatch.setenv("TALON_MANAGEMENT_KEY", emu.management_key)
    result = cli("list", "--settings", settings_for(tmp_path, emu, management=False))
    assert result.exit_code == 0 and emu.management_key not in result.output


def test_a_wrong_key_is_exit_3_without_the_key(emu, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"apiKey": "wrong-key-123456789", "applicationDomain": emu.url,
                                "managementKey": "wrong-mgmt-123456789"}))
    for args in (["create", "x"], ["list"], ["clear", "1"],
                 ["sync", "-", "--audience-id", "1", "--mode", "add", "--quiet"]):
        result = cli(*args, "--settings", str(path), input="u1\n")
        assert result.exit_code == 3, (args, result.output)
        assert "wrong-key-123456789" not in result.output + result.stderr
        assert "wrong-mgmt-123456789" not in result.output + result.stderr


# -- sync -----------------------------------------------------------------------------
def test_mirror_across_three_runs_with_members_joining_and_leaving(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    members = tmp_path / "members.txt"
    runs = [
        ([f"u{i}" for i in range(2500)], 2500, 0, 0),
        ([f"u{i}" for i in range(500, 3000)], 500, 500, 2000),     # 0-499 leave, 2500-2999 join
        ([f"u{i}" for i in range(0, 3000, 2)], 250, 1250, 1250),   # odd ones leave, evens < 500 join
    ]
    for n, (ids, added, removed, unchanged) in enumerate(runs):
        lines(members, ids)
        result = sync(settings, str(members), "--audience-id", audience_id, "--mode", "mirror")
        assert result.exit_code == 0, result.output
        got = summary(result)
        assert (got["added"], got["removed"], got["unchanged"]) == (added, removed, unchanged)
        assert got["first_mirror"] is (n == 0)
        assert got["requests"] == -(-(added + removed) // 1000)
        assert emu.audience_members(int(audience_id)) == sorted(ids)
    # nothing changed: nothing sent
    again = summary(sync(settings, str(members), "--audience-id", audience_id, "--mode", "mirror"))
    assert (again["added"], again["removed"], again["unchanged"], again["requests"]) == (
        0, 0, 1500, 0)


def test_a_first_mirror_can_only_add_and_says_so(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    emu.app.audiences.apply([("add", "elsewhere", audience_id)])  # added by another tool
    result = cli("sync", "--settings", settings, "-", "--audience-id", str(audience_id),
                 "--mode", "mirror", input="u1\nu2\n")
    assert result.exit_code == 0
    assert "first mirror" in result.stderr and "can only add" in result.stderr
    assert emu.audience_members(audience_id) == ["elsewhere", "u1", "u2"]


def test_from_talon_removes_what_was_added_elsewhere(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    emu.app.audiences.apply([("add", x, audience_id) for x in ("elsewhere", "u1")])
    result = sync(settings, "-", "--audience-id", str(audience_id), "--mode", "mirror",
                  "--from-talon", input="u1\nu2\n")
    got = summary(result)
    assert result.exit_code == 0 and "first mirror" not in result.stderr
    assert (got["baseline"], got["added"], got["removed"], got["unchanged"]) == (
        "talon", 1, 1, 1)
    assert emu.audience_members(audience_id) == ["u1", "u2"]
    # what Talon.One had is now the recorded membership: the next mirror diffs against it
    nxt = summary(sync(settings, "-", "--audience-id", str(audience_id), "--mode", "mirror",
                       input="u2\n"))
    assert (nxt["baseline"], nxt["removed"], nxt["unchanged"]) == ("state", 1, 1)
    assert emu.audience_members(audience_id) == ["u2"]
    without = sync(settings_for(tmp_path, emu, management=False), "-", "--audience-id",
                   str(audience_id), "--mode", "mirror", "--from-talon", input="u1\n")
    assert without.exit_code == 2 and "--from-talon needs the management key" in without.stderr


def test_from_talon_with_an_unknown_audience_is_exit_2(emu, tmp_path: Path) -> None:
    result = sync(settings_for(tmp_path, emu), "-", "--audience-id", "9", "--mode", "mirror",
                  "--from-talon", input="u1\n")
    assert result.exit_code == 2 and "audience 9 does not exist" in result.stderr


def test_add_and_remove_send_only_what_is_needed(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    first = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "add",
                         input="u1\nu2\nu3\n"))
    assert (first["added"], first["unchanged"]) == (3, 0)
    second = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "add",
                          input="u3\nu4\n"))
    assert (second["added"], second["unchanged"], second["requests"]) == (1, 1, 1)
    # not known as a whole (never mirrored): remove sends every listed id
    gone = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "remove",
                        input="u1\nu9\n"))
    assert (gone["removed"], gone["unchanged"]) == (2, 0)
    assert emu.audience_members(int(audience_id)) == ["u2", "u3", "u4"]
    # once mirrored, remove sends only the recorded members
    sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror", input="u2\nu3\nu4\n")
    known = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "remove",
                         input="u2\nu9\n"))
    assert (known["removed"], known["unchanged"]) == (1, 1)
    assert emu.audience_members(int(audience_id)) == ["u3", "u4"]
    # --no-state: every listed id is sent, nothing recorded
    before = AudienceState(state_file(emu.url))
    count = before.member_count(int(audience_id))
    before.close()
    free = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "add",
                        "--no-state", input="u3\nu5\n"))
    assert (free["added"], free["unchanged"], free["state"]) == (2, 0, None)
    with AudienceState(state_file(emu.url)) as after:
        assert after.member_count(int(audience_id)) == count


def test_every_bad_input_is_reported_and_skipped(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text('{"userId": "u1"}\n{"userId": "u1"}\nnot json\n[1]\n{"email": "x"}\n'
                     '{"userId": ""}\n\n{"userId": "' + "x" * 1001 + '"}\n{"integrationId": 7}\n')
    csv_gz = tmp_path / "m.csv.gz"
    csv_gz.write_bytes(gzip.compress(b"email,integration_id\na@x.io, u2 \nb@x.io,u1\nc@x.io\n"))
    result = cli("sync", "--settings", settings, str(jsonl), str(csv_gz), "-",
                 "--audience-id", audience_id, "--mode", "add", "--json",
                 input=b"  u3  \n\n" + b"y" * 997 + b"\n")
    assert result.exit_code == 0, result.output
    got = summary(result)
    assert got["invalid_by_reason"] == {"id_too_long": 1, "invalid_json": 1, "no_id": 2,
                                        "not_an_object": 1}
    assert (got["members_read"], got["invalid"], got["duplicates"], got["blank"]) == (
        12, 5, 2, 1)
    assert got["added"] == 5
    assert emu.audience_members(int(audience_id)) == sorted(["u1", "7", "u2", "u3", "y" * 997])
    warned = result.stderr.splitlines()
    assert f"{jsonl}:3: invalid_json: " in warned[0]
    assert f"{jsonl}:8: id_too_long: the id is 1,001 characters long; Talon.One allows at " \
           "most 1000" in warned
    assert any(w.startswith(f"{csv_gz}:4: no_id: the row has 1 field") for w in warned)


def test_id_prefix_counts_in_the_length_and_has_its_own_state(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    result = sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror",
                  "--id-prefix", "crm:", input=("a\n" + "z" * 997 + "\n"))
    got = summary(result)
    assert (got["added"], got["invalid_by_reason"]) == (1, {"id_too_long": 1})
    assert emu.audience_members(int(audience_id)) == ["crm:a"]
    assert got["state"] == os.fspath(state_file(emu.url, "crm:"))
    assert state_file(emu.url, "crm:").exists() and not state_file(emu.url).exists()


def test_csv_without_an_id_column_and_missing_inputs_are_exit_2(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    bad = tmp_path / "bad.csv"
    bad.write_text("email,plan\na@x.io,gold\n")
    cases = [
        ([str(bad)], "has no integration_id, integrationId or userId column"),
        ([str(bad), "--id-column", "crm"], "has no column 'crm'"),
        ([str(tmp_path / "nope.csv")], "no such file"),
        ([str(tmp_path)], "is a directory"),
        (["-", "-"], "'-' (stdin) can be given only once"),
        ([], "give at least one MEMBERS list"),
        (["-", "--output", "x"], "--output is only used with --dry-run"),
        (["-", "--state", str(tmp_path / "s.db"), "--no-state"], "exclude each other"),
        (["-", "--id-column", " "], "--id-column must not be empty"),
    ]
    for args, message in cases:
        result = cli("sync", "--settings", settings, *args, "--audience-id", audience_id,
                     "--mode", "add", input="u1\n")
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
    missing_mode = cli("sync", "--settings", settings, "-", "--audience-id", audience_id)
    assert missing_mode.exit_code == 2 and "--mode" in missing_mode.stderr
    assert emu.audience_members(int(audience_id)) == []


def test_id_column_picks_the_column(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    src = tmp_path / "m.csv"
    src.write_text("userId,crm_id\nu1,c1\nu2,c2\n")
    assert sync(settings, str(src), "--audience-id", audience_id, "--mode", "add",
                "--id-column", "crm_id").exit_code == 0
    assert emu.audience_members(int(audience_id)) == ["c1", "c2"]


def test_a_rejected_action_is_isolated_and_dead_lettered(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    emu.configure(reject_ids=["u7"])
    members = lines(tmp_path / "m.txt", [f"u{i}" for i in range(20)])
    result = sync(settings, str(members), "--audience-id", audience_id, "--mode", "mirror")
    assert result.exit_code == 1
    got = summary(result)
    assert (got["added"], got["rejected"], got["dead_lettered"]) == (19, 1, 1)
    dead = tmp_path / "m.txt.dead.jsonl"
    assert got["dead_letter_file"] == str(dead)
    assert os.stat(dead).st_mode & 0o777 == 0o600
    (letter,) = [json.loads(x) for x in dead.read_text().splitlines()]
    assert letter["event"] == {"action": "add", "profileIntegrationId": "u7",
                               "audienceId": int(audience_id)}
    assert (letter["reason"], letter["input"]) == ("rejected", f"{members}:8")
    assert "u7" in letter["error"] and "/data/" in letter["error"]
    assert len(emu.audience_members(int(audience_id))) == 19
    # a rerun sends only the rejected one again; once fixed it lands
    emu.configure(reject_ids=[])
    again = summary(sync(settings, str(members), "--audience-id", audience_id, "--mode",
                         "mirror"))
    assert (again["added"], again["unchanged"], again["requests"]) == (1, 19, 1)
    assert len(emu.audience_members(int(audience_id))) == 20


def test_the_text_summary(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    result = cli("sync", "--settings", settings, "-", "--audience-id", audience_id,
                 "--mode", "mirror", "--quiet", input="u1\nu1\nu2\n")
    assert result.exit_code == 0
    text = result.stdout.splitlines()
    assert text[0] == f"audience           {audience_id:>12}  (mirror, against the state database)"
    assert text[1:9] == [
        "members read                  3",
        "invalid                       0",
        "duplicates                    1",
        "added                         2",
        "removed                       0",
        "unchanged                     0",
        "requests sent                 1  (retries 0)",
        "rejected                      0  actions",
    ]
    assert text[9].startswith("elapsed ")


def test_dry_run_sends_nothing_records_nothing(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    result = cli("sync", "--settings", settings, "-", "--audience-id", audience_id,
                 "--mode", "mirror", "--dry-run", input="u1\nu2\n")
    assert result.exit_code == 0
    (request,) = [json.loads(x) for x in result.stdout.splitlines()]
    assert request["method"] == "POST" and request["url"].endswith("/v2/customer_audiences")
    assert request["body"]["data"] == [
        {"action": "add", "profileIntegrationId": "u1", "audienceId": int(audience_id)},
        {"action": "add", "profileIntegrationId": "u2", "audienceId": int(audience_id)}]
    assert emu.api_key not in result.stdout
    assert "dry run: nothing was sent, nothing recorded" in result.stderr
    assert emu.audience_members(int(audience_id)) == []
    assert not state_file(emu.url).exists()
    # with a state database, a dry run reads it but changes nothing
    sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror", input="u1\n")
    out = tmp_path / "requests.jsonl"
    plan = cli("sync", "--settings", settings, "-", "--audience-id", audience_id, "--mode",
               "mirror", "--dry-run", "--output", str(out), "--json", input="u2\n")
    assert summary(plan)["added"] == 1 and summary(plan)["removed"] == 1
    assert os.stat(out).st_mode & 0o777 == 0o600
    with AudienceState(state_file(emu.url)) as recorded:
        assert list(recorded.members(int(audience_id))) == ["u1"]


def test_state_file_is_private_and_given_with_state(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    db = tmp_path / "deep" / "dir" / "audiences.db"
    got = summary(sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror",
                       "--state", str(db), input="u1\n"))
    assert got["state"] == str(db)
    assert os.stat(db).st_mode & 0o777 == 0o600
    assert os.stat(db.parent).st_mode & 0o777 == 0o700
    with sqlite3.connect(db) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT * FROM audience_members").fetchall() == [
            (int(audience_id), "u1")]


# -- kill -9 ---------------------------------------------------------------------------
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "talon_classic.cli", "audience", *args]


@pytest.mark.timeout(120)
def _recorded_joins(db: Path, audience_id: int) -> int:
    """Members from u3000 up that the state database holds for the audience (read-only)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return sum(1 for (member,) in conn.execute(
            "SELECT integration_id FROM audience_members WHERE audience_id = ?",
            (audience_id,)) if int(member[1:]) >= 3000)
    finally:
        conn.close()


def test_kill_9_during_a_sync_then_rerun_sends_only_what_is_left(talon_emulator_factory,
                                                                 tmp_path: Path) -> None:
    emu = talon_emulator_factory(rate_limit=0, latency_ms=30)
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    db = tmp_path / "state.db"
    first = lines(tmp_path / "first.txt", [f"u{i}" for i in range(3000)])
    assert sync(settings, str(first), "--audience-id", str(audience_id), "--mode", "mirror",
                "--state", str(db)).exit_code == 0
    wanted = [f"u{i}" for i in range(1000, 41_000)]  # 1,000 leave, 38,000 join
    members = lines(tmp_path / "members.txt", wanted)
    common = [str(members), "--settings", settings, "--audience-id", str(audience_id),
              "--mode", "mirror", "--state", str(db), "--quiet"]
    proc = subprocess.Popen(_cli("sync", *common, "--concurrency", "2", "--rate-limit", "20"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # killed once the state has recorded 5,000 of the joins as acknowledged (what the
    # emulator has taken runs ahead of it by the batches being committed)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _recorded_joins(db, audience_id) < 5000:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)  # requests the killed process had in flight finish on the server side
    with AudienceState(db) as recorded:
        kept = [int(m[1:]) for m in recorded.members(audience_id)]
    joined_acked = sum(1 for i in kept if i >= 3000)
    left_acked = 1000 - sum(1 for i in kept if i < 1000)
    assert 5000 <= joined_acked < 38_000
    before = emu.stats()["audience_actions"]
    finish = subprocess.run(_cli("sync", *common, "--json", "--rate-limit", "0"),
                            capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    report = json.loads(finish.stdout)
    # only what the state had not recorded as acknowledged is sent again
    assert report["added"] == 38_000 - joined_acked
    assert report["removed"] == 1000 - left_acked
    assert emu.stats()["audience_actions"] - before == report["added"] + report["removed"]
    assert report["first_mirror"] is False
    assert emu.audience_members(audience_id) == sorted(wanted)


def test_a_mirror_of_an_empty_list_is_refused(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror", input="u1\n")
    for text in ("", "\n\n", "   \n"):
        result = sync(settings, "-", "--audience-id", audience_id, "--mode", "mirror",
                      input=text)
        assert result.exit_code == 2
        assert "a mirror would remove every member" in result.stderr
        assert "talon-classic audience clear" in result.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    result = sync(settings, str(bad), "--audience-id", audience_id, "--mode", "mirror")
    assert result.exit_code == 2 and "(1 entries read, 1 invalid)" in result.stderr
    assert emu.audience_members(int(audience_id)) == ["u1"]


def test_a_mirror_of_a_cut_short_input_only_adds(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    everyone = [f"user{i}" for i in range(20_000)]
    full = lines(tmp_path / "all.txt", everyone)
    assert sync(settings, str(full), "--audience-id", audience_id, "--mode",
                "mirror").exit_code == 0
    data = gzip.compress(full.read_bytes())
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(data[: len(data) // 2])
    result = cli("sync", "--settings", settings, str(cut), "--audience-id", audience_id,
                 "--mode", "mirror", "--json")
    got = summary(result)
    assert got["removed"] == 0 and got["invalid_by_reason"] == {"truncated_input": 1}
    assert "ends early" in result.stderr and "only adds" in result.stderr
    assert len(emu.audience_members(int(audience_id))) == 20_000


def test_no_state_mirror_says_it_can_only_add(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    result = cli("sync", "--settings", settings, "-", "--audience-id", audience_id, "--mode",
                 "mirror", "--no-state", input="u1\n")
    assert result.exit_code == 0
    assert "nothing is recorded (no state database)" in result.stderr
    assert "no state: nothing was recorded (--no-state)" in result.stdout


def test_dry_run_into_a_closed_pipe_ends_quietly(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    members = lines(tmp_path / "m.txt", [f"u{i}" for i in range(20_000)])
    proc = subprocess.Popen(_cli("sync", str(members), "--settings", settings, "--audience-id",
                                 audience_id, "--mode", "add", "--dry-run"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err and b"unexpected" not in err


def test_from_talon_with_a_prefix_leaves_other_ids_alone(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    emu.app.audiences.apply([("add", x, audience_id) for x in ("crm:old", "shop:7", "plain")])
    got = summary(sync(settings, "-", "--audience-id", str(audience_id), "--mode", "mirror",
                       "--from-talon", "--id-prefix", "crm:", input="new\n"))
    assert (got["added"], got["removed"]) == (1, 1)
    assert emu.audience_members(audience_id) == ["crm:new", "plain", "shop:7"]


def test_an_unclosed_quote_takes_one_row_and_a_mirror_with_bad_rows_only_adds(
        emu, tmp_path: Path) -> None:
    """Found by an adversarial pass: one unclosed quote read the rest of the file as one
    field, and the mirror removed 1,997 of 2,000 members, exit 0, no warning."""
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    rows = ["email,userId,name", *(f"m{i}@x.com,m{i},Name {i}" for i in range(1, 2001))]
    good = tmp_path / "q.csv"
    good.write_text("\n".join(rows) + "\n")
    assert sync(settings, str(good), "--audience-id", audience_id, "--mode",
                "mirror").exit_code == 0
    rows[3] = 'm3@x.com,m3,"Bob'
    bad = tmp_path / "q2.csv"
    bad.write_text("\n".join(rows) + "\n")
    result = cli("sync", "--settings", settings, str(bad), "--audience-id", audience_id,
                 "--mode", "mirror", "--json")
    got = summary(result)
    assert got["invalid_by_reason"] == {"invalid_csv": 1} and got["removed"] == 0
    assert f"{bad}:4: invalid_csv: a quoted field is not closed within 100 lines" in result.stderr
    assert "1 entries of the list could not be read (invalid_csv 1)" in result.stderr
    assert "this mirror only adds" in result.stderr
    assert len(emu.audience_members(int(audience_id))) == 2000


def test_a_dead_letter_file_that_cannot_be_written_is_refused_before_sending(
        emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    members = lines(tmp_path / "m.txt", ["u1"])
    result = sync(settings, str(members), "--audience-id", audience_id, "--mode", "add",
                  "--dead-letter", str(tmp_path / "nowhere" / "d.jsonl"))
    assert result.exit_code == 2 and "no such directory" in result.stderr
    assert emu.audience_members(int(audience_id)) == []


def test_a_delete_whose_state_database_cannot_be_used_sends_nothing(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    result = cli("delete", str(audience_id), "--settings", settings, "--state", str(garbage))
    assert result.exit_code == 2 and "cannot open the state database" in result.stderr
    assert [a["id"] for a in emu.audiences()] == [audience_id]  # nothing was sent


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_dead_letter_file_on_a_full_disk_stops_the_sync_in_one_line(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    emu.configure(reject_ids=["u2"])
    members = lines(tmp_path / "m.txt", ["u1", "u2"])
    result = sync(settings, str(members), "--audience-id", audience_id, "--mode", "add",
                  "--dead-letter", "/dev/full")
    assert result.exit_code == 4 and "Traceback" not in result.output
    got = summary(result)
    assert got["dead_lettered"] == 0
    assert got["stopped"] == ("/dev/full: cannot write dead letters (No space left on device); "
                              "their actions are not recorded, so a rerun sends them again")


def test_a_deeply_nested_settings_file_is_one_line_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "deep.json"
    path.write_text('{"audienceIds": ' + "[" * 100_000 + "]" * 100_000 + "}")
    result = cli("list", "--settings", str(path))
    assert result.exit_code == 2
    assert result.output == ("Error: deep.json: not valid JSON: nested too deeply (more than 512 "
                             "levels)\n")


def hostile_settings(tmp_path: Path, url: str) -> str:
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps({"apiKey": "k" * 24, "applicationDomain": url,
                                "managementKey": "m" * 24}))
    return str(path)


def test_a_management_answer_nested_deeply_is_one_line(tmp_path: Path) -> None:
    from hostile_http import deep, hostile_server

    with hostile_server(lambda *_: (200, deep())) as server:
        settings = hostile_settings(tmp_path, server.url)
        listed = cli("list", "--settings", settings)
        synced = sync(settings, "-", "--audience-id", "7", "--mode", "mirror", "--from-talon",
                      "--no-state", input="u1\n")
    for result in (listed, synced):
        assert result.exit_code == 1, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("Error: GET /v1/audiences") and "nested too deeply" in line
        assert result.stdout == ""


def test_a_list_that_never_ends_is_one_line(tmp_path: Path) -> None:
    from hostile_http import hostile_server

    page = json.dumps({"hasMore": True, "data": [{"id": 1, "name": "a", "created": "x"}]})
    with hostile_server(lambda *_: (200, page.encode())) as server:
        result = cli("list", "--settings", hostile_settings(tmp_path, server.url))
    assert result.exit_code == 1
    assert result.stderr == ("Error: GET /v1/audiences answered the same page again at skip=1 "
                             "(the server ignores skip): stopped reading, the list is not "
                             "complete\n")


FULL_DISK = "Error: cannot write to standard output (No space left on device)\n"


def into(path: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``talon-classic audience ARGS > path`` in a process of its own."""
    with open(path, "w") as stdout:
        return subprocess.run(_cli(*args), stdout=stdout, stderr=subprocess.PIPE, text=True,
                              input=stdin, timeout=60)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full")
def test_a_full_stdout_is_one_line_and_a_non_zero_exit(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    for args in (["list", "--settings", settings], ["list", "--json", "--settings", settings],
                 ["rename", audience_id, "Gold", "--settings", settings],
                 ["create", "Silver", "--settings", settings]):
        result = into("/dev/full", *args)
        assert (result.returncode, result.stderr) == (1, FULL_DISK), args
    synced = into("/dev/full", "sync", "-", "--settings", settings, "--audience-id", audience_id,
                  "--mode", "add", "--quiet", stdin="u1\nu2\n")
    assert (synced.returncode, synced.stderr) == (1, FULL_DISK)
    assert emu.audiences()[0]["members"] == 2  # the sync itself was done


def test_a_closed_stdout_ends_audience_list_quietly(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    create(settings)
    read, write = os.pipe()
    os.close(read)  # the reader went away before anything was written (`| head` done)
    try:
        result = subprocess.run(_cli("list", "--settings", settings), stdout=write,
                                stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert (result.returncode, result.stderr) == (0, "")


def test_no_state_summary_and_a_401_say_nothing_is_recorded(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    result = cli("sync", "-", "--settings", settings, "--audience-id", audience_id, "--mode",
                 "add", "--quiet", "--no-state", input="u1\n")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == (
        f"audience           {audience_id:>12}  (add, against no state database)")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"apiKey": "wrong-key-123456789", "applicationDomain": emu.url}))
    refused = cli("sync", "-", "--settings", str(wrong), "--audience-id", audience_id, "--mode",
                  "add", "--quiet", "--no-state", input="u2\n")
    assert refused.exit_code == 3
    (stopped,) = [line for line in refused.stdout.splitlines() if line.startswith("stopped")]
    assert stopped.endswith("; nothing is recorded (no state)"), stopped
    assert "acknowledged is recorded" not in refused.output


def test_a_redirect_is_not_called_retries_running_out(tmp_path: Path) -> None:
    from hostile_http import hostile_server

    with hostile_server(lambda *_: (301, b"")) as server:
        result = cli("sync", "-", "--settings", hostile_settings(tmp_path, server.url),
                     "--audience-id", "7", "--mode", "add", "--quiet", "--no-state",
                     "--dead-letter", str(tmp_path / "dead.jsonl"), input="u1\n")
    assert result.exit_code == 1
    (failed,) = [line for line in result.stdout.splitlines() if line.startswith("failed")]
    assert failed == ("failed                        1  actions (not delivered; the dead "
                      "letters say why)")
    (dead,) = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert dead["reason"] == "failed" and "redirected (301)" in dead["error"]


def test_a_csv_header_with_a_newline_is_quoted_on_one_line(emu, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, emu)
    audience_id = str(create(settings))
    bad = tmp_path / "bad.csv"
    bad.write_text('"e\nmail",plan\na@x.io,gold\n')
    result = cli("sync", str(bad), "--settings", settings, "--audience-id", audience_id,
                 "--mode", "add", "--quiet")
    assert result.exit_code == 2
    assert result.stderr == (f"Error: {bad}: the CSV header (e\\nmail, plan) has no "
                             "integration_id, integrationId or userId column: name the id "
                             "column with --id-column\n")


def _applied(emu, at_least: int, deadline: float = 60) -> None:
    """Wait until the emulator has applied ``at_least`` audience actions in all."""
    end = time.monotonic() + deadline
    while emu.stats()["audience_actions"] < at_least:
        assert time.monotonic() < end, emu.stats()
        time.sleep(0.02)


@pytest.mark.timeout(120)
def test_kill_9_with_requests_in_flight_then_a_changed_list_ends_exactly_the_list(
        talon_emulator_factory, tmp_path: Path) -> None:
    """Found by an adversarial pass: actions Talon.One applied but whose answer the killed
    process never recorded were taken as never sent (adds: extra members for good) or the
    state's word was trusted (removes: members missing, counted as unchanged), exit 0."""
    emu = talon_emulator_factory(rate_limit=0)
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    db = tmp_path / "state.db"
    everyone = [f"r{i:05d}" for i in range(3000)]
    full = lines(tmp_path / "full.txt", everyone)
    common = ["--settings", settings, "--audience-id", str(audience_id), "--mode", "mirror",
              "--state", str(db), "--quiet"]
    assert subprocess.run(_cli("sync", str(full), *common)).returncode == 0
    # 2,999 leave and 2,000 join, in 5 requests, all in flight at once: Talon.One applies
    # each, then its answer takes 10 s, and the process is killed before any comes back
    emu.configure(latency_ms=10_000)
    changed = lines(tmp_path / "changed.txt", ["r00000", *(f"n{i:05d}" for i in range(2000))])
    proc = subprocess.Popen(_cli("sync", str(changed), *common, "--concurrency", "8"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _applied(emu, 3000 + 2999 + 2000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    emu.configure(latency_ms=0)
    assert sorted(emu.audience_members(audience_id)) == sorted(["r00000", *(f"n{i:05d}" for i
                                                                           in range(2000))])
    with AudienceState(db) as recorded:  # nothing was acknowledged: everyone is recorded
        assert recorded.member_count(audience_id) == 3000
        assert recorded.inflight_count(audience_id) == 5
    # the first list again: the 2,999 removed come back, the 2,000 added leave
    again = subprocess.run(_cli("sync", str(full), *common, "--json"), capture_output=True,
                           text=True)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["added"], report["removed"]) == (2999, 2000)
    assert "Traceback" not in again.stderr
    assert emu.audience_members(audience_id) == everyone
    with AudienceState(db) as recorded:
        assert list(recorded.members(audience_id)) == everyone
        assert recorded.inflight_count() == 0 and recorded.unsure_ids(audience_id) == []
    # and a sync after that trusts the state again: nothing to send
    third = subprocess.run(_cli("sync", str(full), *common, "--json"), capture_output=True,
                           text=True)
    assert json.loads(third.stdout)["requests"] == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig, code, said", [
    (signal.SIGINT, 130, "interrupted (Ctrl-C)"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),  # as Ctrl-C, with its own exit status
])
def test_ctrl_c_and_sigterm_record_what_was_acknowledged(talon_emulator_factory, tmp_path: Path,
                                                         sig: int, code: int, said: str) -> None:
    emu = talon_emulator_factory(rate_limit=0, latency_ms=30)
    settings = settings_for(tmp_path, emu)
    audience_id = create(settings)
    db = tmp_path / "state.db"
    members = lines(tmp_path / "m.txt", [f"u{i}" for i in range(30_000)])
    proc = subprocess.Popen(_cli("sync", str(members), "--settings", settings, "--audience-id",
                                 str(audience_id), "--mode", "add", "--state", str(db),
                                 "--quiet", "--rate-limit", "10", "--concurrency", "2"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _applied(emu, 3000)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert (f"stopped early: {said}: what was acknowledged is recorded; run the "
            "same sync again to send the rest") in out
    assert "Traceback" not in err
    with AudienceState(db) as recorded:
        count = recorded.member_count(audience_id)
        assert recorded.inflight_count() == 0  # every request in flight was answered
    assert 3000 <= count < 30_000
    assert len(emu.audience_members(audience_id)) == count  # nothing delivered unrecorded
