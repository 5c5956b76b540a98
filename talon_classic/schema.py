"""The attribute schema: which customer-profile attributes Talon.One has, and their types.

A :class:`Schema` maps each attribute name (exact, case-sensitive) to its
Talon.One type (``string``, ``number``, ``(list time)``, ...). It comes from
the Management API (:mod:`talon_classic.management`), from the cache
(:mod:`talon_classic.schemacache`) or from a file in one of two shapes:

* a saved ``GET /v1/attributes`` answer, ``{"totalResultSize": n, "data":
  [...]}``, of which only the items of entity ``CustomerProfile`` are kept
  (items without an ``entity`` count as customer-profile ones);
* a JSON list of ``{"name": ..., "type": ...}`` objects.

Other keys of an item are ignored. :meth:`Schema.to_document` writes the
first shape back, so ``talon-classic schema pull -o FILE`` output can be read
by ``--schema`` and by the emulator's ``--attributes-file``.

Every problem is a :class:`~talon_classic.exceptions.SchemaError` with one
line ``"{file}: {item}: {problem}"`` such as ``schema.json: data[3]: missing
"type"``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from fnmatch import translate
from typing import Any

from talon_classic.coerce import CompiledTypes, compile_types
from talon_classic.exceptions import SchemaError
from talon_classic.state import write_atomic

ENTITY = "CustomerProfile"
#: Levels of :func:`check_allowlist`'s findings.
OK, WARNING, NOTE = "ok", "warning", "note"

_SHAPES = (
    'expected a saved GET /v1/attributes answer ({"totalResultSize": n, "data": [...]}) '
    'or a list of {"name", "type"} objects'
)


def _shown(name: str, limit: int = 60) -> str:
    """A name as it may appear in a message: JSON-quoted, and cut when very long."""
    text = json.dumps(name, ensure_ascii=True)
    return text if len(text) <= limit else text[: limit - 4] + '..."'


class Schema(Mapping[str, str]):
    """Attribute name -> Talon.One type, with where it came from.

    Read-only. ``source`` is a label for messages (a file name, a URL).
    ``items`` are the attribute objects as Talon.One described them (title,
    description...); when the schema was built from plain pairs they hold
    just ``name``, ``type`` and ``entity``.
    """

    __slots__ = ("_types", "_items", "source", "_compiled")

    def __init__(
        self,
        types: Mapping[str, str] | Iterable[tuple[str, str]] = (),
        *,
        source: str = "schema",
        items: Iterable[Mapping[str, Any]] | None = None,
    ) -> None:
        self._types: dict[str, str] = dict(types)
        self.source = source
        if items is None:
            self._items = [{"name": n, "type": t, "entity": ENTITY} for n, t in self._types.items()]
        else:
            self._items = [dict(item) for item in items]
        self._compiled: CompiledTypes | None = None

    def __getitem__(self, name: str) -> str:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def __repr__(self) -> str:
        return f"Schema({len(self._types)} attributes from {self.source})"

    @property
    def compiled(self) -> CompiledTypes:
        """The per-attribute coercers, compiled once (see :func:`~talon_classic.coerce.compile_types`)."""
        if self._compiled is None:
            self._compiled = compile_types(self._types)
        return self._compiled

    @classmethod
    def from_document(cls, doc: Any, source: str = "schema", entity: str = ENTITY) -> Schema:
        """Build a schema from a decoded document of either shape; raise SchemaError if unusable.

        Items of a ``/v1/attributes`` answer whose ``entity`` is not ``entity``
        are left out (a plain list's ``entity`` keys are ignored).
        """
        if isinstance(doc, dict):
            if "data" not in doc:
                raise SchemaError(f"{source}: data: missing ({_SHAPES})")
            items, label = doc["data"], "data"
            if not isinstance(items, list):
                raise SchemaError(f"{source}: data: expected an array")
            total = doc.get("totalResultSize")
            if total is not None and (type(total) is not int or total < 0):
                raise SchemaError(f"{source}: totalResultSize: expected a whole number")
            if total is not None and total > len(items):
                raise SchemaError(
                    f"{source}: holds {len(items)} of the {total} attributes its totalResultSize "
                    f"counts (one page only?): save every page, e.g. with talon-classic schema pull"
                )
            filter_entity = True
        elif isinstance(doc, list):
            items, label, filter_entity = doc, "", False
        else:
            raise SchemaError(f"{source}: {_SHAPES}")

        types: dict[str, str] = {}
        where: dict[str, str] = {}
        kept: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            at = f"{label}[{index}]"
            if not isinstance(item, dict):
                raise SchemaError(f"{source}: {at}: expected an object with name and type")
            if filter_entity and "entity" in item and item["entity"] != entity:
                continue
            for key in ("name", "type"):
                if key not in item:
                    raise SchemaError(f'{source}: {at}: missing "{key}"')
                if not isinstance(item[key], str) or not item[key]:
                    raise SchemaError(f"{source}: {at}: {key}: expected a non-empty string")
            name, kind = item["name"], item["type"]
            if name in types:
                if types[name] != kind:
                    raise SchemaError(
                        f"{source}: {at}: {_shown(name)} is listed twice with different types "
                        f"({_shown(types[name])} at {where[name]}, {_shown(kind)} here)"
                    )
                continue
            types[name], where[name] = kind, at
            kept.append(item)
        return cls(types, source=source, items=kept)

    def to_document(self) -> dict[str, Any]:
        """The ``GET /v1/attributes`` answer shape: ``{"totalResultSize": n, "data": [...]}``."""
        data = [dict(item) for item in self._items]
        return {"totalResultSize": len(data), "data": data}


def read_schema_file(path: str | os.PathLike[str]) -> Schema:
    """Read a schema file of either shape; its messages are labelled with the file's name."""
    full = os.fspath(path)
    label = os.path.basename(full) or full
    try:
        with open(full, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise SchemaError(f"{label}: file not found ({full})") from None
    except IsADirectoryError:
        raise SchemaError(f"{label}: is a directory, not a schema file ({full})") from None
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"{label}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except UnicodeDecodeError:
        raise SchemaError(f"{label}: not valid JSON: not UTF-8 text") from None
    except (OSError, RecursionError, ValueError) as exc:
        raise SchemaError(f"{label}: cannot read: {exc.__class__.__name__}") from None
    return Schema.from_document(doc, label)


def schema_bytes(schema: Schema) -> bytes:
    """``schema.to_document()`` as indented UTF-8 JSON with a final newline."""
    return (json.dumps(schema.to_document(), indent=2, ensure_ascii=False) + "\n").encode()


def write_schema_file(schema: Schema, path: str | os.PathLike[str]) -> None:
    """Write ``schema`` (``/v1/attributes`` shape) to ``path`` atomically, mode 0644."""
    try:
        write_atomic(path, schema_bytes(schema), mode=0o644)
    except OSError as exc:
        raise SchemaError(
            f"{os.fspath(path)}: cannot write: {exc.strerror or exc.__class__.__name__}"
        ) from None


def check_allowlist(
    schema: Mapping[str, str],
    allowlist: Iterable[str],
    engage_names: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """What ``check-config`` says about an allowlist given the schema: ``[(level, message)]``.

    Levels are :data:`OK`, :data:`WARNING` and :data:`NOTE`. Each exact entry
    is looked up (with its type, or a warning, with a near miss by case when
    there is one); each pattern lists what it matches, or warns that it
    matches nothing. Engage attributes bypass the allowlist but not the
    schema: known ``engage_names`` are looked up, and a note says so always.
    """
    found: list[tuple[str, str]] = []
    by_folded: dict[str, list[str]] = {}
    for name in schema:
        by_folded.setdefault(name.casefold(), []).append(name)

    def missing(entry: str, what: str) -> tuple[str, str]:
        near = [n for n in by_folded.get(entry.casefold(), []) if n != entry]
        hint = f" (did you mean {', '.join(near[:3])}?)" if near else ""
        return WARNING, (
            f"{entry}: no such customer-profile attribute in Talon.One{hint}; {what} is "
            f"dropped as unknown_attribute until it is created (Campaign Manager > Attributes)"
        )

    for entry in dict.fromkeys(allowlist):
        if "*" not in entry:
            if entry in schema:
                found.append((OK, f"{entry}: {schema[entry]}"))
            else:
                found.append(missing(entry, "it"))
            continue
        pattern = re.compile(translate(entry))
        hits = [n for n in schema if pattern.match(n)]
        if not hits:
            found.append((WARNING, (
                f"{entry}: matches no Talon.One attribute; every trait it lets through is "
                f"dropped as unknown_attribute"
            )))
        else:
            shown = ", ".join(f"{n}: {schema[n]}" for n in hits[:5])
            more = f", and {len(hits) - 5} more" if len(hits) > 5 else ""
            found.append((OK, f"{entry}: matches {len(hits)} attribute"
                              f"{'s' if len(hits) > 1 else ''} ({shown}{more})"))
    for name in dict.fromkeys(engage_names):
        if name in schema:
            found.append((OK, f"{name} (Engage): {schema[name]}"))
        else:
            found.append(missing(name, "this Engage attribute"))
    found.append((NOTE, (
        "Engage audiences and computed traits bypass the allowlist but not the schema: each "
        "must exist as a customer-profile attribute (an audience as a boolean) or it is "
        "dropped as unknown_attribute"
    )))
    return found
