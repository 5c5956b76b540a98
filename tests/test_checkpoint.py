"""The checkpoint file: what it records, and what it refuses to resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from talon_classic.checkpoint import (
    BATCH_OPTIONS,
    Checkpoint,
    differences,
    fingerprint,
    input_identity,
)
from talon_classic.exceptions import CheckpointError

OPTIONS = {"batch_size": 1000, "id_prefix": "", "single": False, "max_line_bytes": 8 << 20,
           "replay_dead_letters": False, "dry_run": False}


def test_fingerprint_covers_content_options_and_target(tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_text('{"userId": "u1"}\n')
    base = fingerprint(input_identity([str(src)]), OPTIONS, "https://x.talon.one")
    assert set(BATCH_OPTIONS) <= set(base) and base["inputs"][0]["size"] == 17
    src.write_text('{"userId": "u2"}\n')  # same size, other content
    edited = fingerprint(input_identity([str(src)]), OPTIONS, "https://x.talon.one")
    assert differences(base, edited) == [f"{src} (its content changed)"]
    other = fingerprint(base["inputs"], {**OPTIONS, "dry_run": True, "max_line_bytes": 4096},
                        "https://y.talon.one")
    assert differences(base, other) == [
        "the deployment (https://y.talon.one instead of https://x.talon.one)",
        f"--max-line-bytes (4096 instead of {8 << 20})",
        "--dry-run (True instead of False)",
    ]


def test_marks_survive_a_reread_and_compress_to_a_watermark(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    ckpt = Checkpoint(path, {"inputs": []}, {"concurrency": 8})
    for seq in (0, 1, 3):
        ckpt.mark(seq)
    again = Checkpoint.read(path)
    assert (again.watermark, again.done, again.options) == (1, {3}, {"concurrency": 8})
    assert again.is_done(1) and not again.is_done(2) and again.is_done(3)
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("content, why", [
    ("[]", "an array, not an object"),
    ("null", "null, not an object"),
    ("{}", "no version"),
    ('{"version": 2}', "fingerprint: missing"),
    ('{"version": 2, "fingerprint": {}, "options": {}, "watermark": "3", "done": []}',
     "watermark: expected a whole number"),
    ('{"version": 2, "fingerprint": {}, "options": {}, "watermark": 3, "done": [true]}',
     "done[0]: expected a whole number"),
    ('{"version": 2, "fingerprint": {}, "options": {}, "watermark": 3, "done": [], '
     '"skips_logged": {"in.jsonl": 2.5}}', "skips_logged.in.jsonl: expected a whole number"),
    # JSON Schema's "integer" takes 50.0; used as a batch size, it was a TypeError traceback
    ('{"version": 2, "fingerprint": {}, "options": {"batch_size": 50.0}, "watermark": 3, '
     '"done": []}', "options.batch_size: expected a whole number"),
    ('{"version": 2, "fingerprint": {}, "options": {"concurrency": 0}, "watermark": 3, '
     '"done": []}', "options.concurrency: expected 1 or more"),
    ('{"version": 2, "fingerprint": {"batch_size": 5000}, "options": {}, "watermark": 3, '
     '"done": []}', "fingerprint.batch_size: expected 1000 at most"),
    ('{"version": 2, "fingerprint": {}, "options": {"read_timeout": 0}, "watermark": 3, '
     '"done": []}', "options.read_timeout: expected 0.1 or more"),
])
def test_wrong_shapes_are_one_line(tmp_path: Path, content: str, why: str) -> None:
    path = tmp_path / "c.json"
    path.write_text(content)
    with pytest.raises(CheckpointError) as err:
        Checkpoint.read(path)
    assert str(err.value) == f"{path}: not a talon-classic checkpoint ({why}); delete it to start over"


def test_other_version_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"version": 1}))
    with pytest.raises(CheckpointError, match="another talon-classic version"):
        Checkpoint.read(path)
    with pytest.raises(CheckpointError, match="no checkpoint to resume"):
        Checkpoint.read(tmp_path / "absent.json")


def test_engage_audiences_mode_is_part_of_the_fingerprint() -> None:
    base = fingerprint([], {**OPTIONS, "engage_audiences": "attributes"}, "https://x.talon.one")
    other = fingerprint([], {**OPTIONS, "engage_audiences": "memberships"}, "https://x.talon.one")
    assert differences(base, other) == ["engageAudiences ('memberships' instead of 'attributes')"]
