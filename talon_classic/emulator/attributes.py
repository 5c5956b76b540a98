"""Which customer-profile attributes exist and their types: the emulator's schema.

In Talon.One an attribute must be created (Campaign Manager, entity
Customer Profile) before a profile may carry it, and it has a type. The
emulator is told the names with ``attributes`` (entries with ``*`` are
shell patterns, so ``consent_*`` stands for every consent flag) and the
types with ``attribute_types``, or accepts every well-formed name when it
has no list. When it has a list, Talon.One's built-in profile attributes
(:data:`BUILTIN_ATTRIBUTES`) exist too, with their types.

:func:`parse_attributes_file` reads the schema from a file, in every shape
talon-classic writes or reads one.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

#: Talon.One's attribute names (ASCII, like its Go regexp).
ATTRIBUTE_NAME = re.compile(r"[A-Za-z]\w*", re.ASCII)

#: A few of Talon.One's built-in customer-profile attributes: name -> (type, title).
#: A realistic selection, not Talon.One's whole list. They exist whenever the
#: emulator has an attribute list, and ``GET /v1/attributes`` lists them with
#: ``kind`` ``builtin``.
BUILTIN_ATTRIBUTES: dict[str, tuple[str, str]] = {
    "Name": ("string", "Name"),
    "Email": ("string", "Email"),
    "PhoneNumber": ("string", "Phone number"),
    "BirthDate": ("time", "Birth date"),
    "SignupDate": ("time", "Signup date"),
    "BillingCountry": ("string", "Billing country"),
}

#: The entity whose attributes the emulator knows.
PROFILE_ENTITY = "CustomerProfile"

#: A schema: attribute name (or ``*`` pattern) -> its type, None for "exists, any value".
Schema = dict[str, str | None]


@lru_cache(maxsize=64)
def _patterns(attributes: frozenset[str]) -> re.Pattern[str] | None:
    globs = [fnmatch.translate(a) for a in attributes if "*" in a]
    return re.compile("|".join(globs)) if globs else None


def attribute_exists(name: str, attributes: frozenset[str]) -> bool:
    """Is ``name`` a known attribute? Entries with ``*`` are shell patterns (``consent_*``).

    Built-in attributes are not in ``attributes``; see :func:`attribute_type`.
    """
    if name in attributes:
        return True
    pattern = _patterns(attributes)
    return pattern is not None and pattern.match(name) is not None


def attribute_type(name: str, attributes: frozenset[str] | None,
                   types: Mapping[str, str]) -> tuple[bool, str | None]:
    """Whether ``name`` exists, and its type (None: any value), for a profile write.

    With no list (``attributes`` None) every name exists and only names in
    ``types`` are typed. With a list, a name exists when it is listed, matches
    a pattern or is built in; a configured type wins over a built-in's.
    """
    typed = types.get(name)
    if attributes is None:
        return True, typed
    builtin = BUILTIN_ATTRIBUTES.get(name)
    if typed is None and builtin is not None:
        typed = builtin[0]
    return (builtin is not None or attribute_exists(name, attributes)), typed


def parse_attribute_spec(spec: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME:TYPE`` (``tags:(list string)``) as ``(name, type or None)``."""
    name, _, type_ = spec.partition(":")
    name, type_ = name.strip(), type_.strip()
    if not name:
        raise ValueError(f"{spec!r}: expected NAME or NAME:TYPE")
    return name, type_ or None


def parse_attributes_file(path: str | os.PathLike[str]) -> Schema:
    """The schema in a file, for ``talon-classic emulator --attributes-file``.

    Accepted shapes:

    * one name per line, optionally ``NAME:TYPE``; blank lines and ``#``
      comments (whole-line or trailing) are ignored;
    * a JSON array of names;
    * a saved Management API answer ``{"totalResultSize": n, "data": [...]}``
      (what ``GET /v1/attributes`` and ``talon-classic schema pull`` give):
      items with an ``entity`` other than ``CustomerProfile`` are skipped;
    * a JSON array of ``{"name": ..., "type": ...}`` objects (``type`` may be
      left out or null: the attribute exists, any value).

    Returns name -> type (None when untyped). A file that is none of these
    raises ValueError naming the file and the line or item.
    """
    where = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    except OSError as exc:
        raise ValueError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if text.lstrip().startswith(("[", "{")):
        return _parse_json(where, text)
    schema: Schema = {}
    for number, line in enumerate(text.splitlines(), 1):
        spec = line.split("#", 1)[0].strip()
        if spec:
            try:
                name, type_ = parse_attribute_spec(spec)
            except ValueError as exc:
                raise ValueError(f"{where}: line {number}: {exc}") from None
            _add(schema, name, type_, f"{where}: line {number}")
    return schema


def _parse_json(where: str, text: str) -> Schema:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where}: not valid JSON ({exc})") from None
    if isinstance(data, dict):
        items = data.get("data")
        if not isinstance(items, list):
            raise ValueError(f"{where}: expected a Management API answer "
                             '{"totalResultSize": n, "data": [...]}, or a JSON array')
        label = "data"
    elif isinstance(data, list):
        items, label = data, "item"
    else:  # pragma: no cover - the text starts with [ or {
        raise ValueError(f"{where}: expected a JSON array or object")
    schema: Schema = {}
    for index, item in enumerate(items):
        at = f"{where}: {label}[{index}]"
        if isinstance(item, str) and label == "item":
            if item.strip():
                _add(schema, item.strip(), None, at)
            continue
        name, type_, entity = _item_fields(item, at)
        if entity is None or entity == PROFILE_ENTITY:
            _add(schema, name, type_, at)
    return schema


def _item_fields(item: Any, at: str) -> tuple[str, str | None, str | None]:
    """``name``, ``type`` and ``entity`` of one attribute object, checked."""
    if not isinstance(item, dict):
        raise ValueError(f"{at}: expected an attribute name or an object with "
                         "\"name\" and \"type\"")
    name, type_, entity = item.get("name"), item.get("type"), item.get("entity")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{at}: \"name\" must be a non-empty string")
    if type_ is not None and (not isinstance(type_, str) or not type_.strip()):
        raise ValueError(f"{at}: attribute {name!r}: \"type\" must be a non-empty string")
    if entity is not None and not isinstance(entity, str):
        raise ValueError(f"{at}: attribute {name!r}: \"entity\" must be a string")
    return name.strip(), type_.strip() if type_ else None, entity


def _add(schema: Schema, name: str, type_: str | None, at: str) -> None:
    """Add one attribute; the same name twice with two different types is refused."""
    if "*" in name and type_ is not None:
        raise ValueError(f"{at}: pattern {name!r} cannot have a type")
    known = schema.get(name)
    if name in schema and known is not None and type_ is not None and known != type_:
        raise ValueError(f"{at}: attribute {name!r} is listed twice, as {known!r} and "
                         f"{type_!r}")
    schema[name] = type_ if type_ is not None else known
