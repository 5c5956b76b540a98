"""The state directory's location, and atomic private writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from talon_classic.state import ensure_dir, state_dir, write_atomic


def test_xdg_state_home_when_absolute(tmp_path: Path) -> None:
    assert state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "talon-classic"


@pytest.mark.parametrize("value", ["", "relative/dir"])
def test_default_under_home(tmp_path: Path, value: str) -> None:
    env = {"XDG_STATE_HOME": value} if value else {}
    assert state_dir(env, home=tmp_path) == tmp_path / ".local" / "state" / "talon-classic"


def test_ensure_dir_is_private(tmp_path: Path) -> None:
    where = ensure_dir(tmp_path / "a" / "b")
    assert where.is_dir() and os.stat(where).st_mode & 0o777 == 0o700
    assert ensure_dir(where) == where  # already there: fine


def test_write_atomic_replaces_and_is_0600(tmp_path: Path) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")
    os.chmod(path, 0o644)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # no temporary file left


def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "f.json"
    path.write_text("old")

    def boom(src: str, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        write_atomic(path, b"new")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_state_file_per_deployment_and_prefix(tmp_path: Path) -> None:
    from talon_classic.state import state_file

    a = state_file("https://acme.talon.one", state=tmp_path)
    assert a.parent == tmp_path and a.name.startswith("acme.talon.one-") and a.suffix == ".db"
    assert state_file("https://acme.talon.one", state=tmp_path) == a
    assert state_file("https://acme.talon.one", "eu-", state=tmp_path) != a
    assert state_file("https://other.talon.one", state=tmp_path) != a
    assert state_file("http://127.0.0.1:8321", state=tmp_path).name.startswith("127.0.0.1_8321-")
