"""Every kind of bad input is reported with file and line, and reading goes on."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talon_classic.exceptions import InputError
from talon_classic.jsonio import BadLine, dumps, loads
from talon_classic.reader import read_records, split_lines


def records(*paths, **kw):
    return list(read_records([str(p) for p in paths], **kw))


def test_plain_file_blank_lines_and_bom(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n\n   \n{"b": 2}')
    got = records(path)
    assert [(r.line, r.event) for r in got] == [(1, {"a": 1}), (4, {"b": 2})]


def test_invalid_json_message_and_raw(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text('not json\n{"a": \n{"ok": true}\n')
    got = records(path)
    assert [(r.line, r.skipped, r.error) for r in got[:2]] == [
        (1, "invalid_json", "Expecting value: column 1"),
        (2, "invalid_json", "Expecting value: column 7"),
    ]
    assert got[0].raw == b"not json"
    assert got[0].where == f"{path}:1"
    assert got[2].event == {"ok": True}


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": "\xff"}\n{"a": 2}\n')
    got = records(path)
    assert (got[0].skipped, got[0].error) == ("invalid_json", "not valid UTF-8 (byte 8)")
    assert got[1].event == {"a": 2}


def test_line_too_long_is_skipped_without_losing_the_next(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": "' + b"x" * 5000 + b'"}\n{"b": 1}\n')
    got = records(path, max_line_bytes=1000)
    assert got[0].skipped == "line_too_long"
    assert "longer than 1000 bytes" in got[0].error
    assert (got[1].line, got[1].event) == (2, {"b": 1})


def test_gzip_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "events.data"
    path.write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    assert [r.event for r in records(path)] == [{"a": 1}, {"a": 2}]


def test_truncated_gzip_reports_and_next_file_is_read(tmp_path: Path) -> None:
    body = b"".join(b'{"n": %d, "pad": "%s"}\n' % (i, b"y" * 50) for i in range(2000))
    whole = gzip.compress(body)
    bad = tmp_path / "bad.jsonl.gz"
    bad.write_bytes(whole[: len(whole) // 2])
    good = tmp_path / "good.jsonl"
    good.write_text('{"z": 1}\n')
    got = records(bad, good)
    truncated = [r for r in got if r.skipped]
    assert len(truncated) == 1
    assert truncated[0].skipped == "truncated_input"
    assert truncated[0].input == str(bad)
    assert truncated[0].line == len(got) - 1  # the line after the last good one
    assert got[-1].event == {"z": 1}


def test_stdin_plain_and_gzip() -> None:
    plain = io.BufferedReader(io.BytesIO(b'{"a": 1}\n'))
    assert [r.input for r in read_records(["-"], stdin=plain)] == ["<stdin>"]
    packed = io.BufferedReader(io.BytesIO(gzip.compress(b'{"a": 2}\n')))
    assert [r.event for r in read_records(["-"], stdin=packed)] == [{"a": 2}]


def test_resume_start_skips_done_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(f'{{"n": {i}}}\n' for i in range(1, 6)))
    got = records(path, start={str(path): 3})
    assert [r.line for r in got] == [4, 5]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        records(tmp_path / "nope.jsonl")


def test_loads_and_dumps_round_trip() -> None:
    obj = {"a": [1, 2.5, "ü"], "b": None}
    assert loads(dumps(obj)) == obj
    with pytest.raises(BadLine):
        loads(b"{")
    # NaN is accepted on input (the engine drops it) even when orjson refuses it
    assert loads(b'{"x": NaN}')["x"] != loads(b'{"x": NaN}')["x"]


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_lines_split_across_read_chunks(tmp_path: Path, monkeypatch, chunk: int) -> None:
    """Line boundaries, over-long lines and a missing final newline, whatever the chunk size."""
    import talon_classic.reader as reader

    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    path = tmp_path / "a.jsonl"
    long_value = "x" * 300
    path.write_bytes(
        b'{"a": 1}\r\n\n'
        + f'{{"long": "{long_value}"}}\n'.encode()
        + b'{"b": "' + b"y" * 2000 + b'"}\n'
        + b'{"c": 3}'
    )
    got = records(path, max_line_bytes=1024)
    assert [(r.line, r.event, r.skipped) for r in got] == [
        (1, {"a": 1}, None),
        (3, {"long": long_value}, None),
        (4, None, "line_too_long"),
        (5, {"c": 3}, None),
    ]


def test_hostile_lines_are_read_exactly_or_skipped_never_raised(tmp_path: Path) -> None:
    """Lone surrogates, integers of any size, nesting: read as written, or skipped with a message."""
    import hostile

    path = tmp_path / "a.jsonl"
    path.write_text("\n".join([
        '{"s": "\\ud800", "pair": "\\ud834\\udd1e"}',
        '{"n": 18446744073709551616, "m": -9223372036854775809}',  # just past 64 bits
        '{"n": ' + "1" + "0" * 400 + "}",
        '{"n": ' + hostile.DIGITS_5000 + "}",
        hostile.nested(300),
        hostile.nested(600),
        hostile.nested(1000),
        hostile.nested(100_000),
        "[" * 100_000,
    ]) + "\n")
    got = records(path)
    assert got[0].event == {"s": "\ud800", "pair": "𝄞"}
    assert got[1].event == {"n": 2**64, "m": -(2**63) - 1}
    assert type(got[1].event["n"]) is int
    assert got[2].event == {"n": 10**400}
    assert got[3].event == {"n": 10**5000 - 1}
    assert got[4].skipped is None
    for record in got[5:]:
        assert (record.skipped, record.error) == (
            "invalid_json", "nested too deeply (more than 512 levels)"), record.line


def line_blocks(data: bytes, cut, max_line_bytes: int, chunk: int) -> list:
    from talon_classic.reader import InputFile, read_line_blocks

    source = InputFile("-", stdin=io.BufferedReader(io.BytesIO(data)))
    return [(first, (block.reason, str(block)) if isinstance(block, BadLine) else block)
            for first, block in read_line_blocks(source, cut, max_line_bytes, chunk)]


def test_line_blocks_are_whole_lines_numbered_by_their_first() -> None:
    from talon_classic.reader import split_lines, whole_lines

    data = b"a\nbb\n\nccc\n" + b"x" * 20 + b"\nd"
    assert line_blocks(data, whole_lines, 10, 4) == [
        (1, b"a\n"), (2, b"bb\n\n"), (4, b"ccc\n"),
        (5, ("line_too_long", "line is longer than 10 bytes (20 bytes)")), (6, b"d"),
    ]
    assert line_blocks(data, split_lines, 10, 4) == [
        (1, [b"a"]), (2, [b"bb", b""]), (4, [b"ccc"]),
        (5, ("line_too_long", "line is longer than 10 bytes (20 bytes)")), (6, [b"d"]),
    ]
    # in one read an over-long line stays in its block, for the caller to measure
    assert line_blocks(data, whole_lines, 10, 1 << 20) == [(1, data[:-1]), (6, b"d")]
    assert line_blocks(b"", whole_lines, 10, 4) == []
    assert line_blocks(b"x" * 30, split_lines, 10, 4) == [
        (1, ("line_too_long", "line is longer than 10 bytes (30 bytes)"))]


def test_line_blocks_of_a_truncated_gzip_end_with_one_truncated_input() -> None:
    from talon_classic.reader import InputFile, split_lines

    whole = gzip.compress(b"".join(b'{"n": %d}\n' % i for i in range(2000)))
    source = InputFile("-", stdin=io.BufferedReader(io.BytesIO(whole[:len(whole) // 2])))
    got = line_blocks(whole[:len(whole) // 2], split_lines, 1024, 256)
    assert source.compressed
    lines = [line for _, block in got[:-1] for line in block]
    assert lines and lines == [b'{"n": %d}' % i for i in range(len(lines))]
    last_line, (reason, message) = got[-1]
    assert reason == "truncated_input" and "rest of file skipped" in message
    assert last_line == len(lines) + 1


@given(st.binary(max_size=64).map(lambda b: b.replace(b"\x00", b"\n")), st.booleans())
def test_split_lines_cuts_as_bytes_split_does(buffer: bytes, final: bool) -> None:
    """Whole lines without their newlines, and the partial line left over (none when
    ``final``): what ``bytes.split`` gives, found another way (``memchr``)."""
    lines = buffer.split(b"\n")
    rest = b"" if final else lines.pop()
    assert split_lines(buffer, final) == (lines, len(lines), rest)
