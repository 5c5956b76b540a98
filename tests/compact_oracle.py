"""What compaction must produce, computed the slow, obvious way (shared by the compact tests).

:func:`fold` folds every event in input order, attribute by attribute, with
the streaming merge's rule; :func:`merger_profiles` asks the streaming
:class:`Merger` itself, with room for every profile at once. The two must
agree with each other and with both engines.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from talon_classic.bulk import parse_timestamp
from talon_classic.transform import Engine

try:  # the merge module is moving out of bulk.py
    from talon_classic.merge import Merger
except ImportError:
    from talon_classic.bulk import Merger


def records(paths: list[Path]) -> list[Any]:
    """Every non-blank line of the inputs in order: the decoded event, or None if not JSON."""
    out: list[Any] = []
    for path in paths:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for n, line in enumerate(data.split(b"\n")):
            if n == 0 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append(None)
    return out


def fold(paths: list[Path], allow: list[str]) -> dict[str, dict[str, Any]]:
    """``{iid: {"attributes": ..., "timestamps": {attr: [M, position]}}}`` by folding."""
    engine = Engine(allow)
    state: dict[str, dict[str, list[Any]]] = {}  # iid -> attr -> [value, stamp, position]
    for position, event in enumerate(records(paths)):
        if event is None:
            continue
        result = engine.transform(event)
        if not result.kept:
            continue
        ts = parse_timestamp(event.get("timestamp"))
        profile = state.setdefault(result.integration_id, {})
        for name, value in (result.attributes or {}).items():
            current = profile.get(name)
            if current is None:
                profile[name] = [value, ts, position]
            elif ts is None:
                current[0], current[2] = value, position  # always takes; the stamp stays
            elif current[1] is None or ts >= current[1]:
                profile[name] = [value, ts, position]
    return {iid: {"attributes": {n: v[0] for n, v in attrs.items()},
                  "timestamps": {n: [v[1], v[2]] for n, v in attrs.items()}}
            for iid, attrs in state.items()}


def merger_profiles(paths: list[Path], allow: list[str]) -> dict[str, dict[str, Any]]:
    """The streaming merge's answer when it can hold every profile at once."""
    engine = Engine(allow)
    merger = Merger(10**9, 8, 10**9)
    for event in records(paths):
        if event is None:
            continue
        result = engine.transform(event)
        if result.kept:
            merger.add(result.integration_id, result.attributes,
                       parse_timestamp(event.get("timestamp")), (event, ""))
    batch = merger.close(0, final=True)
    return {p["integrationId"]: p["attributes"] for p in batch.profiles}


def read_output(path: Path) -> list[dict[str, Any]]:
    """The records of a compacted .jsonl / .jsonl.gz / .parquet file, in file order."""
    from talon_classic.compact.profiles import read_profile_records

    return [r.event for r in read_profile_records([str(path)])]


class ExplodingEngine(Engine):
    """An engine with a bug: it raises on the event of userId ``boom`` (in worker processes too)."""

    def transform(self, event: Any) -> Any:
        if isinstance(event, dict) and event.get("userId") == "boom":
            raise RuntimeError("boom")
        return super().transform(event)
