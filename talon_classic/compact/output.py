"""Writing compacted profiles: ``.jsonl``, ``.jsonl.gz`` or ``.parquet``, created 0600.

One record per integrationId, in the order given (sorted by integrationId)::

    {"integrationId": "u1", "attributes": {"plan": "pro"}, "timestamps": {"plan": [1793538492.0, 17]}}

Attributes (and their ordering keys, ``[timestamp or null, position]``) are
written sorted by name, and every value is written by the package's JSON
encoder, so both engines produce byte-identical files for the same input.
The output is written next to its final name and renamed into place only
once complete: a failed or interrupted run leaves no partial file.

Parquet has three text columns, ``integrationId``, ``attributes`` and
``timestamps``, the last two holding the same JSON objects as a JSONL line
(attribute values have no single column type).
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tempfile
from typing import IO, Any, cast

from talon_classic.exceptions import CompactError, first_line
from talon_classic.jsonio import dumps, dumps_bytes

FORMATS = (".jsonl", ".jsonl.gz", ".parquet")


def output_format(path: str) -> str:
    """``jsonl``, ``gz`` or ``parquet`` from the file name; CompactError for another ending."""
    name = os.fspath(path).lower()
    if name.endswith((".jsonl.gz", ".ndjson.gz")):
        return "gz"
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".parquet"):
        return "parquet"
    raise CompactError(f"{path}: the output must end in .jsonl, .jsonl.gz or .parquet")


def profile_record(iid: str, attributes: dict[str, Any], timestamps: dict[str, list[Any]]
                   ) -> dict[str, Any]:
    """The record for one profile, attributes sorted by name."""
    names = sorted(attributes)
    return {"integrationId": iid,
            "attributes": {n: attributes[n] for n in names},
            "timestamps": {n: timestamps[n] for n in names}}


class ProfileWriter:
    """Writes profile records to ``path`` (format from its name), atomically, 0600."""

    def __init__(self, path: str) -> None:
        self.path = os.fspath(path)
        self.format = output_format(self.path)
        self.count = 0
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            fd, self._tmp = tempfile.mkstemp(prefix=".", suffix=".part", dir=directory)
        except OSError as exc:
            raise CompactError(f"{self.path}: cannot write: {exc.strerror or exc}") from None
        os.fchmod(fd, 0o600)
        self._raw: IO[bytes] = os.fdopen(fd, "wb")
        self._out: IO[bytes] = self._raw
        if self.format == "gz":  # no name, no time: the same input gives the same bytes
            self._out = cast(IO[bytes], gzip.GzipFile(filename="", mode="wb", fileobj=self._raw,
                                                      compresslevel=6, mtime=0))

    def write(self, iid: str, attributes: dict[str, Any], timestamps: dict[str, list[Any]]
              ) -> None:
        """Add one profile."""
        record = profile_record(iid, attributes, timestamps)
        if self.format == "parquet":  # staged as JSONL of text columns, converted at close
            line = dumps_bytes({"integrationId": iid, "attributes": dumps(record["attributes"]),
                                "timestamps": dumps(record["timestamps"])})
        else:
            line = dumps_bytes(record)
        try:
            self._out.write(line + b"\n")
        except OSError as exc:  # a full disk: one line, and no partial file is left
            self.abort()
            raise CompactError(f"{self.path}: cannot write: {exc.strerror or exc}; nothing "
                               "was written") from None
        self.count += 1

    def close(self) -> None:
        """Finish the file and move it into place."""
        try:
            if self._out is not self._raw:
                self._out.close()
            self._raw.close()
            if self.format == "parquet":
                self._to_parquet()
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise CompactError(f"{self.path}: cannot write: {exc.strerror or exc}") from None

    def abort(self) -> None:
        """Leave nothing behind."""
        with contextlib.suppress(OSError, ValueError):
            self._out.close()
            self._raw.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def _to_parquet(self) -> None:
        from talon_classic.compact.duckdb_engine import import_duckdb

        duckdb = import_duckdb()
        # DuckDB creates the file with the process's umask (0644, readable by anyone, while
        # it holds every profile): in a directory of its own, 0700, it is the user's alone
        private = tempfile.mkdtemp(prefix=".", suffix=".part", dir=os.path.dirname(self._tmp))
        staged = os.path.join(private, "profiles.parquet")
        try:
            self._copy_to_parquet(duckdb, staged)
            os.chmod(staged, 0o600)
            os.replace(staged, self._tmp)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            with contextlib.suppress(OSError):
                os.rmdir(private)

    def _copy_to_parquet(self, duckdb: Any, staged: str) -> None:
        from talon_classic.compact.duckdb_engine import interruptible, quote

        con = duckdb.connect(":memory:")
        try:
            with interruptible():
                con.execute(
                    f"COPY (SELECT * FROM read_json('{quote(self._tmp)}', "
                    "format = 'newline_delimited', maximum_object_size = 1073741824, "
                    "columns = {integrationId: 'VARCHAR', attributes: 'VARCHAR', "
                    f"timestamps: 'VARCHAR'}})) TO '{quote(staged)}' "
                    "(FORMAT parquet, COMPRESSION zstd)"
                    if self.count else
                    "COPY (SELECT ''::VARCHAR AS integrationId, ''::VARCHAR AS attributes, "
                    f"''::VARCHAR AS timestamps LIMIT 0) TO '{quote(staged)}' (FORMAT parquet)")
        except duckdb.Error as exc:  # the caller removes what was staged (Ctrl-C too)
            raise CompactError(f"{self.path}: cannot write Parquet: {first_line(exc)}") from None
        finally:
            con.close()
