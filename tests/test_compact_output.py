"""Writing compacted profiles: whole files or none, the user's alone, one-line failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from talon_classic.compact.output import ProfileWriter
from talon_classic.exceptions import CompactError


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path: Path) -> None:
    """Found by an adversarial pass: ENOSPC while writing was an OSError traceback."""
    writer = ProfileWriter(str(tmp_path / "out.jsonl"))
    writer._raw.close()
    writer._raw = writer._out = open("/dev/full", "wb", buffering=0)  # the disk is full
    with pytest.raises(CompactError) as caught:
        writer.write("u1", {"plan": "pro"}, {"plan": [1.0, 1]})
    assert str(caught.value) == (f"{tmp_path / 'out.jsonl'}: cannot write: No space left on "
                                 "device; nothing was written")
    assert os.listdir(tmp_path) == []  # the staged file went with it


def test_parquet_is_staged_where_only_its_user_can_read_it(tmp_path: Path, monkeypatch) -> None:
    """Found by an adversarial pass: DuckDB created the staged Parquet file 0644 (the umask)
    and it held every profile until it was renamed."""
    pytest.importorskip("duckdb")
    seen: list[int] = []
    copy = ProfileWriter._copy_to_parquet

    def watched(self: ProfileWriter, duckdb: object, staged: str) -> None:
        copy(self, duckdb, staged)
        seen.append(os.stat(os.path.dirname(staged)).st_mode & 0o777)
        seen.append(os.stat(staged).st_mode & 0o077)

    monkeypatch.setattr(ProfileWriter, "_copy_to_parquet", watched)
    old = os.umask(0o022)
    try:
        writer = ProfileWriter(str(tmp_path / "out.parquet"))
        writer.write("u1", {"plan": "pro"}, {"plan": [1.0, 1]})
        writer.close()
    finally:
        os.umask(old)
    assert seen[0] == 0o700  # whatever DuckDB's mode, nobody else can reach it
    assert os.listdir(tmp_path) == ["out.parquet"]
    assert (tmp_path / "out.parquet").stat().st_mode & 0o777 == 0o600
