"""Which batches of a run Talon.One has acknowledged, and how the run was made.

Batches are numbered in input order and their contents depend only on the
input and the options that shape batches (never on timing or concurrency),
so a resumed run rebuilds the same batches and sends only those not
acknowledged. The file holds:

* ``fingerprint``: what makes batch *n* the same batch: each input's path,
  size and SHA-256, the options that shape batches, the target
  deployment, and whether it was a dry run (a dry run never counts as a
  delivery for a real run);
* ``options``: every option of the run, so a bare ``--resume`` continues it
  as it was (``--concurrency`` and ``--rate-limit`` may change);
* ``watermark`` (every batch up to it is done) and the done batches above it.

Saved atomically after every acknowledgement, created 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from talon_classic.exceptions import CheckpointError
from talon_classic.files import write_atomic
from talon_classic.schemafiles import field_path, first_error

VERSION = 2

#: Options that decide what goes into which batch, with their flags: a resume
#: must keep them. ``dry_run`` does not shape batches but must match too.
BATCH_OPTIONS: dict[str, str] = {
    "batch_size": "--batch-size",
    "id_prefix": "--id-prefix",
    "single": "--single",
    "max_line_bytes": "--max-line-bytes",
    "replay_dead_letters": "--replay-dead-letters",
    "dry_run": "--dry-run",
}
#: Settings that decide the batches too (Audience Entered/Exited tracks become
#: profiles only with engageAudiences memberships or both), with their names.
BATCH_SETTINGS: dict[str, str] = {"engage_audiences": "engageAudiences"}
#: What the inputs are, when not events: recorded only when given, so checkpoints written
#: before these flags existed still resume.
MODE_OPTIONS: dict[str, str] = {
    "profiles": "--profiles",
    "compact": "--compact",
}


def input_identity(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Path, size and SHA-256 of each input file (an edited file is a different input)."""
    out = []
    for path in paths:
        with open(path, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256").hexdigest()
            size = os.fstat(fh.fileno()).st_size
        out.append({"path": path, "size": size, "sha256": digest})
    return out


def fingerprint(inputs: list[dict[str, Any]], options: Mapping[str, Any],
                target: str) -> dict[str, Any]:
    """What must be equal for batch *n* of two runs to be the same batch."""
    return {"inputs": inputs, "target": target,
            **{name: options[name] for name in BATCH_OPTIONS},
            **{name: options.get(name) for name in BATCH_SETTINGS},
            **{name: True for name in MODE_OPTIONS if options.get(name)}}


def differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human names of what differs between two fingerprints (inputs named one by one)."""
    out = []
    old = {i["path"]: i for i in recorded.get("inputs", [])}
    new = {i["path"]: i for i in current.get("inputs", [])}
    if list(old) != list(new):
        out.append("the inputs (" + ", ".join(new) + " instead of " + ", ".join(old) + ")")
    else:
        out += [f"{path} (its content changed)" for path in new if old[path] != new[path]]
    if recorded.get("target") != current.get("target"):
        out.append(f"the deployment ({current.get('target')} instead of {recorded.get('target')})")
    for name, flag in {**BATCH_OPTIONS, **BATCH_SETTINGS, **MODE_OPTIONS}.items():
        if recorded.get(name) != current.get(name):
            out.append(f"{flag} ({current.get(name)!r} instead of {recorded.get(name)!r})")
    return out


_JSON_KINDS = {list: "an array", type(None): "null", str: "a string", int: "a number",
               float: "a number", bool: "a boolean"}


def _shape_error(path: str, what: str) -> CheckpointError:
    return CheckpointError(f"{path}: not a talon-classic checkpoint ({what}); "
                           "delete it to start over")


def _shape_problem(state: dict[str, Any]) -> str | None:
    """The first field of a checkpoint of the wrong kind or range (a hand-edited file):
    ``options.batch_size: expected a whole number``; None if none. Never the value: a
    checkpoint may hold paths and ids."""
    error = first_error("checkpoint", state, exact_integers=True)
    if error is None:
        return None
    where = field_path(error.absolute_path) or "(top level)"
    # jsonschema types these as "value or Unset"; an error from iter_errors has them set
    expected: Any = error.validator_value
    if error.validator == "required":
        instance: Any = error.instance
        missing = next(n for n in expected if n not in instance)
        return f"{field_path([*error.absolute_path, missing])}: missing"
    if error.validator == "minimum":
        return f"{where}: expected {expected} or more"
    if error.validator == "maximum":
        return f"{where}: expected {expected} at most"
    kinds: list[str] = expected if isinstance(expected, list) else [expected]
    return f"{where}: expected " + " or ".join(_KIND_NAMES.get(k, k) for k in kinds)


_KIND_NAMES = {"string": "a string", "integer": "a whole number", "number": "a number",
               "boolean": "true or false", "object": "an object", "array": "an array",
               "null": "null"}


class Checkpoint:
    """Acknowledged batch numbers, persisted after every acknowledgement."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: dict[str, Any],
                 options: dict[str, Any] | None = None) -> None:
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.options = dict(options or {})
        self.watermark = -1
        self.done: set[int] = set()
        self.skips_logged: dict[str, int] = {}
        self._lock = threading.Lock()

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> Checkpoint:
        """A checkpoint file as saved; :class:`CheckpointError` (one line) if absent or unusable."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as fh:
                state = json.load(fh)
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: no checkpoint to resume (was the run started with --checkpoint? "
                "without it nothing is recorded); run again without --resume") from None
        except IsADirectoryError:
            raise CheckpointError(f"{path}: is a directory, not a checkpoint") from None
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not JSON"
            raise CheckpointError(f"{path}: checkpoint unreadable ({reason}); "
                                  "delete it to start over") from None
        if not isinstance(state, dict):
            raise _shape_error(path, f"{_JSON_KINDS.get(type(state), 'a value')}, not an object")
        if "version" not in state:
            raise _shape_error(path, "no version")
        if state.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint of another talon-classic version "
                                  f"({state.get('version')!r}); delete it to start over")
        problem = _shape_problem(state)
        if problem is not None:
            raise _shape_error(path, problem)
        fp, options = state["fingerprint"], state["options"]
        watermark, done = state["watermark"], state["done"]
        skips = state.get("skips_logged", {})
        ckpt = cls(path, fp, options)
        ckpt.watermark, ckpt.done, ckpt.skips_logged = watermark, set(done), skips
        return ckpt

    def is_done(self, seq: int) -> bool:
        """Was batch ``seq`` acknowledged in an earlier (or this) run?"""
        return seq <= self.watermark or seq in self.done

    def mark(self, seq: int, skips_logged: dict[str, int] | None = None,
             save: bool = True) -> None:
        """Record batch ``seq`` as acknowledged and save (unless ``save`` is False: the
        caller saves once for several marks, as after one commit of the ledger)."""
        with self._lock:
            self.done.add(seq)
            while self.watermark + 1 in self.done:
                self.watermark += 1
                self.done.discard(self.watermark)
            if skips_logged is not None:
                self.skips_logged = dict(skips_logged)
            if save:
                self.save()

    def save(self) -> None:
        """Write the state now (atomically, 0600); a new run saves before its first batch."""
        state = {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "options": self.options,
            "watermark": self.watermark,
            "done": sorted(self.done),
            "skips_logged": self.skips_logged,
        }
        write_atomic(self.path, json.dumps(state))
