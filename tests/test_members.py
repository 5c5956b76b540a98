"""Member lists: CSV, JSONL and plain text, compressed or not, and every bad entry named."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from talon_classic.exceptions import InputError
from talon_classic.members import MAX_LINE_BYTES, Member, format_of, read_members


def ids(entries: list[Member]) -> list[str | None]:
    return [m.integration_id for m in entries if m.reason is None]


def problems(entries: list[Member]) -> list[tuple[int, str | None]]:
    return [(m.line, m.reason) for m in entries if m.reason is not None]


def read(path: Path, **kw) -> list[Member]:
    return list(read_members([str(path)], **kw))


@pytest.mark.parametrize("column", ["integration_id", "integrationId", "userId"])
def test_csv_takes_any_known_id_column(tmp_path: Path, column: str) -> None:
    src = tmp_path / "m.csv"
    src.write_text(f"email,{column},plan\na@x.io, u1 ,gold\nb@x.io,u2,\n")
    assert ids(read(src)) == ["u1", "u2"]


def test_csv_prefers_integration_id_and_honours_id_column(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_text("userId,integration_id,crm\nU1,I1,C1\n")
    assert ids(read(src)) == ["I1"]
    assert ids(read(src, id_column="crm")) == ["C1"]


def test_csv_without_the_id_column_is_one_input_error(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_text("email,plan\na@x.io,gold\n")
    with pytest.raises(InputError, match=r"m.csv: the CSV header \(email, plan\) has no "
                       r"integration_id, integrationId or userId column: name the id column "
                       r"with --id-column"):
        read(src)
    with pytest.raises(InputError, match="no column 'crm'"):
        read(src, id_column="crm")


def test_csv_rows_quotes_crlf_bom_and_bad_rows(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_bytes(b'\xef\xbb\xbfuserId,note\r\n"a,b",x\r\n"multi\nline",y\r\n,blank\r\n'
                    b'short\r\n\r\nc\xffd,z\r\n' + b"e," + b"f" * 200_000 + b"\r\ng,h\r\n")
    entries = read(src)
    assert ids(entries) == ["a,b", "multi\nline", "short", "g"]
    assert problems(entries) == [(5, "blank"), (8, "invalid_utf8"), (9, "invalid_csv")]


def test_csv_short_row_is_no_id(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_text("email,userId\na@x.io\nb@x.io,u2\n")
    entries = read(src)
    assert ids(entries) == ["u2"]
    assert problems(entries) == [(2, "no_id")]
    assert "the row has 1 field; the id is field 2 (userId)" in entries[0].message


def test_jsonl_objects_with_any_key(tmp_path: Path) -> None:
    src = tmp_path / "m.jsonl"
    src.write_text('{"userId": "u1"}\n{"integrationId": 42}\n{"integration_id": " u3 "}\n'
                   '{"userId": null, "integrationId": "u4"}\n\n'
                   '[1]\nnot json\n{"email": "x"}\n{"userId": ["u"]}\n{"userId": true}\n'
                   '{"userId": "\\ud800"}\n{"userId": ""}\n' + '{"userId": ' + "9" * 1200 + "}\n")
    entries = read(src)
    assert ids(entries) == ["u1", "42", "u3", "u4"]
    assert problems(entries) == [(6, "not_an_object"), (7, "invalid_json"), (8, "no_id"),
                                 (9, "not_text"), (10, "not_text"), (11, "invalid_utf8"),
                                 (12, "blank"), (13, "id_too_long")]


def test_jsonl_with_id_column(tmp_path: Path) -> None:
    src = tmp_path / "m.ndjson"
    src.write_text('{"crm": "c1", "userId": "u1"}\n{"userId": "u2"}\n')
    entries = read(src, id_column="crm")
    assert ids(entries) == ["c1"] and problems(entries) == [(2, "no_id")]


def test_plain_text_trimmed_blanks_skipped(tmp_path: Path) -> None:
    src = tmp_path / "m.txt"
    src.write_bytes(b"  u1 \n\n\t\nu2\r\n\xc2\xa0\n\xff\nu3")
    entries = read(src)
    assert ids(entries) == ["u1", "u2", "u3"]
    assert problems(entries) == [(5, "blank"), (6, "invalid_utf8")]


def test_ids_too_long_with_the_prefix_are_named(tmp_path: Path) -> None:
    src = tmp_path / "m.txt"
    src.write_text("x" * 996 + "\n" + "y" * 997 + "\n")
    entries = read(src, id_prefix="pre:")
    assert ids(entries) == ["pre:" + "x" * 996]
    assert problems(entries) == [(2, "id_too_long")]
    assert entries[1].message == ("the id is 1,001 characters long with --id-prefix; Talon.One "
                                  "allows at most 1000")


def test_a_line_too_long_is_skipped_without_holding_it(tmp_path: Path) -> None:
    src = tmp_path / "m.txt"
    src.write_bytes(b"u1\n" + b"z" * (MAX_LINE_BYTES + 10) + b"\nu2\n")
    entries = read(src)
    assert ids(entries) == ["u1", "u2"] and problems(entries) == [(2, "line_too_long")]


def test_gzip_stdin_and_several_inputs_are_numbered(tmp_path: Path) -> None:
    gz = tmp_path / "m.csv.gz"
    gz.write_bytes(gzip.compress(b"userId\nu1\nu2\n"))
    entries = list(read_members([str(gz), "-"], stdin=io.BytesIO(b'{"userId": "u3"}\n')))
    assert [(m.source, m.line, m.integration_id) for m in entries] == [
        (0, 2, "u1"), (0, 3, "u2"), (1, 1, "u3")]


def test_a_truncated_gzip_keeps_its_good_lines(tmp_path: Path) -> None:
    data = gzip.compress(b"".join(b"user%d\n" % i for i in range(20_000)))
    src = tmp_path / "m.txt.gz"
    src.write_bytes(data[: len(data) // 2])
    entries = read(src)
    assert len(ids(entries)) > 1000
    assert [m.reason for m in entries if m.reason] == ["truncated_input"]


def test_a_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot open"):
        read(tmp_path / "nope.txt")


@pytest.mark.parametrize("name, first, kind", [
    ("m", b'{"userId": "u"}', "jsonl"),
    ("m", b"userId", "csv"),
    ("m", b"crm_id", "text"),
    ("m", b"email,crm", "csv"),
    ("m", b"u1", "text"),
    ("m.CSV.gz", b"u1", "csv"),
    ("m.json", b"u1", "jsonl"),
    ("m.txt", b"userId,plan", "text"),
    ("-", b"\xff,\xfe", "text"),
])
def test_format_of(name: str, first: bytes, kind: str) -> None:
    assert format_of(name, first) == kind


def test_format_of_knows_the_id_column() -> None:
    assert format_of("-", b"crm_id", "crm_id") == "csv"


def test_an_unclosed_quote_is_one_bad_row_and_reading_goes_on(tmp_path: Path) -> None:
    """Before, a quoted field that was never closed read every later line into itself."""
    src = tmp_path / "m.csv"
    rows = ["userId,note", *(f"u{i},n" for i in range(300))]
    rows[5] = 'u4,"unclosed'
    src.write_text("\n".join(rows) + "\n")
    entries = read(src)
    assert ids(entries) == [f"u{i}" for i in range(300) if i != 4]
    assert problems(entries) == [(6, "invalid_csv")]
    assert "not closed within 100 lines" in entries[4].message
    rows = rows[:20]  # the quote still open at the end of the input
    src.write_text("\n".join(rows) + "\n")
    entries = read(src)
    assert ids(entries) == [f"u{i}" for i in range(19) if i != 4]
    assert [m.message for m in entries if m.reason] == [
        "a quoted field is not closed before the end of the input; read on from the next line"]


def test_a_quoted_field_may_span_lines_and_a_stray_quote_is_one_bad_row(tmp_path: Path) -> None:
    src = tmp_path / "m.csv"
    src.write_text('email,userId,address\na@x,u1,"Street 1\nTown"\nc@x,u3,"ab"c\nd@x,u4,ok\n')
    entries = read(src)
    assert ids(entries) == ["u1", "u4"]
    assert problems(entries) == [(4, "invalid_csv")]  # the line it starts on
    assert [m.line for m in entries if m.reason is None] == [2, 5]
