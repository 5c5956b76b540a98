"""Which schema a run uses, and the hour-long cache of pulled ones.

The Management API allows 3 requests per second and is not meant for
real-time traffic, so a pulled schema is kept in the state directory
(:mod:`talon_classic.state`), one file per deployment, and reused for an hour.
:func:`resolve_schema` is the one call a command makes: a ``--schema`` file
wins; else, with a way to pull (a management key), the cache or a fresh pull;
else no schema. The answer says where the schema came from, for the summary:

* ``from schema.json`` (a ``--schema`` file);
* ``pulled from https://mycompany.talon.one``;
* ``cached 12 minutes ago in ~/.local/state/talon-classic/schemas/...json``.

A cache file is the ``GET /v1/attributes`` answer shape plus
``deployment`` and ``pulledAt`` (Unix seconds), so it can also be given to
``--schema``. It is written atomically, mode 0600. One that cannot be read,
or names another deployment, is pulled again with a warning. When a pull
fails for want of an answer (:class:`~talon_classic.exceptions.RetriesExhausted`)
and an older cache exists, that cache is used with a warning rather than
stopping the run; a refused key always stops it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from talon_classic.exceptions import RetriesExhausted, SchemaError
from talon_classic.schema import Schema, read_schema_file
from talon_classic.state import ensure_dir, state_dir, write_atomic

log = logging.getLogger("talon_classic.schemacache")

#: How long a pulled schema is used before it is pulled again, in seconds.
MAX_AGE = 3600.0
CACHE_SUBDIR = "schemas"

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


@dataclass(frozen=True)
class SchemaSource:
    """A schema and where it came from (``origin`` is the summary's words)."""

    schema: Schema
    origin: str
    path: Path | None = None


def cache_file(deployment: str, state: str | os.PathLike[str] | None = None) -> Path:
    """The cache file of one deployment: ``<state>/schemas/<host>-<hash>.json``."""
    host = _UNSAFE.sub("_", urlsplit(deployment).netloc) or "deployment"
    digest = hashlib.sha256(deployment.encode()).hexdigest()[:12]
    base = Path(state) if state is not None else state_dir()
    return base / CACHE_SUBDIR / f"{host[:100]}-{digest}.json"


def describe_age(seconds: float) -> str:
    """``45 seconds``, ``12 minutes``, ``3 hours``, ``2 days``."""
    for unit, size, limit in (("second", 1, 90), ("minute", 60, 90 * 60),
                              ("hour", 3600, 48 * 3600), ("day", 86400, None)):
        if limit is None or seconds < limit:
            n = max(0, round(seconds / size))
            return f"{n} {unit}{'' if n == 1 else 's'}"
    raise AssertionError("unreachable")  # pragma: no cover


def _read_cache(path: Path, deployment: str) -> tuple[Schema, float] | None:
    """The cached schema and its pull time; None when absent; SchemaError when unusable."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc: Any = json.load(fh)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError, RecursionError) as exc:
        raise SchemaError(f"{path}: unreadable ({exc.__class__.__name__})") from None
    if not isinstance(doc, dict):
        raise SchemaError(f"{path}: not a schema cache")
    if doc.get("deployment") != deployment:
        raise SchemaError(f"{path}: holds another deployment's schema")
    pulled = doc.get("pulledAt")
    if not isinstance(pulled, (int, float)) or isinstance(pulled, bool):
        raise SchemaError(f"{path}: pulledAt: missing")
    return Schema.from_document(doc, str(path)), float(pulled)


def _write_cache(path: Path, deployment: str, schema: Schema, pulled: float,
                 warn: Callable[[str], None]) -> bool:
    doc = {"deployment": deployment, "pulledAt": pulled, **schema.to_document()}
    try:
        ensure_dir(path.parent)
        write_atomic(path, (json.dumps(doc, ensure_ascii=False) + "\n").encode(), mode=0o600)
    except OSError as exc:
        warn(f"cannot write the schema cache {path} ({exc.strerror or exc.__class__.__name__}); "
             f"the schema will be pulled again next time")
        return False
    return True


def cached_schema(
    deployment: str,
    pull: Callable[[], Schema],
    *,
    state: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    max_age: float = MAX_AGE,
    clock: Callable[[], float] = time.time,
    warn: Callable[[str], None] | None = None,
) -> SchemaSource:
    """The deployment's schema from the cache when younger than ``max_age``, else ``pull()``-ed.

    ``refresh`` pulls whatever the cache holds. A pulled schema is written to
    the cache. ``warn`` receives one-line warnings (default: this module's
    logger). Errors of ``pull`` propagate, except that an unanswered pull
    (RetriesExhausted) falls back to an older readable cache.
    """
    warn = warn if warn is not None else log.warning
    path = cache_file(deployment, state)
    cached: tuple[Schema, float] | None = None
    try:
        cached = _read_cache(path, deployment)
    except SchemaError as exc:
        warn(f"schema cache {exc}; pulling the schema again")
    now = clock()
    if cached is not None and not refresh:
        schema, pulled = cached
        age = now - pulled
        if 0 <= age < max_age:
            return SchemaSource(schema, f"cached {describe_age(age)} ago in {path}", path)
    try:
        schema = pull()
    except RetriesExhausted as exc:
        if cached is None:
            raise
        old, pulled = cached
        warn(f"could not pull the schema ({exc}); using the one cached "
             f"{describe_age(now - pulled)} ago")
        return SchemaSource(
            old, f"cached {describe_age(now - pulled)} ago in {path} (a new pull failed)", path)
    _write_cache(path, deployment, schema, now, warn)
    return SchemaSource(schema, f"pulled from {deployment}", path)


def resolve_schema(
    schema_file: str | os.PathLike[str] | None = None,
    *,
    deployment: str | None = None,
    pull: Callable[[], Schema] | None = None,
    state: str | os.PathLike[str] | None = None,
    refresh: bool = False,
    max_age: float = MAX_AGE,
    clock: Callable[[], float] = time.time,
    warn: Callable[[str], None] | None = None,
) -> SchemaSource | None:
    """The schema a run uses: ``schema_file``; else cached/pulled when ``pull`` and ``deployment``
    are given; else None (no schema, nothing typed).
    """
    if schema_file is not None:
        return SchemaSource(read_schema_file(schema_file), f"from {os.fspath(schema_file)}",
                            Path(schema_file))
    if pull is None or deployment is None:
        return None
    return cached_schema(deployment, pull, state=state, refresh=refresh, max_age=max_age,
                         clock=clock, warn=warn)
