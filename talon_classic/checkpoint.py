"""Which batches of a run Talon.One has acknowledged, saved atomically.

Batches are numbered in input order and their contents depend only on the
input and the options (never on timing), so a resumed run rebuilds the same
batches and sends only those not acknowledged. The file holds a watermark
(every batch up to it is done) plus the done batches above it, and a
fingerprint of the run so a resume with other inputs or options is refused.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from talon_classic.exceptions import SettingsError

VERSION = 1


class Checkpoint:
    """Acknowledged batch numbers, persisted after every acknowledgement."""

    def __init__(self, path: str | os.PathLike[str], fingerprint: dict[str, Any]) -> None:
        self.path = os.fspath(path)
        self.fingerprint = fingerprint
        self.watermark = -1
        self.done: set[int] = set()
        self.skips_logged: dict[str, int] = {}
        self._lock = threading.Lock()

    def load(self) -> None:
        """Read a previous run's state; refuse one made with other inputs/options."""
        try:
            with open(self.path, encoding="utf-8") as fh:
                state = json.load(fh)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise SettingsError(f"{self.path}: checkpoint unreadable ({exc})") from None
        if state.get("version") != VERSION or state.get("fingerprint") != self.fingerprint:
            raise SettingsError(
                f"{self.path}: checkpoint was written for other inputs or options "
                "(inputs, --batch-size, --concurrency, --id-prefix, --single must match); "
                "remove it to start over"
            )
        self.watermark = state["watermark"]
        self.done = set(state["done"])
        self.skips_logged = state.get("skips_logged", {})

    def is_done(self, seq: int) -> bool:
        """Was batch ``seq`` acknowledged in an earlier (or this) run?"""
        return seq <= self.watermark or seq in self.done

    def mark(self, seq: int, skips_logged: dict[str, int] | None = None) -> None:
        """Record batch ``seq`` as acknowledged and save."""
        with self._lock:
            self.done.add(seq)
            while self.watermark + 1 in self.done:
                self.watermark += 1
                self.done.discard(self.watermark)
            if skips_logged is not None:
                self.skips_logged = dict(skips_logged)
            self._save()

    def _save(self) -> None:
        state = {
            "version": VERSION,
            "fingerprint": self.fingerprint,
            "watermark": self.watermark,
            "done": sorted(self.done),
            "skips_logged": self.skips_logged,
        }
        tmp = f"{self.path}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
