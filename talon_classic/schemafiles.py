"""The JSON Schemas shipped in ``talon_classic/schemas``, as validators.

JSON Schema's ``integer`` admits ``5.0`` (a number with no fraction). Where
talon-classic uses what it read as a whole number directly (a checkpoint's
batch size), a ``5.0`` would fail later, as a traceback; there the
validator takes only whole numbers written as such (``exact_integers``).
Settings keep the schema's reading, and convert (``"vip": 7.0`` is 7).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.validators import extend


def _whole(checker: Any, instance: Any) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


_Exact = extend(jsonschema.Draft202012Validator,
                type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
                    "integer", _whole))


@cache
def validator(name: str, exact_integers: bool = False) -> jsonschema.protocols.Validator:
    """The validator of ``schemas/<name>.schema.json``; with ``exact_integers``, an
    ``integer`` is an int (never ``5.0``, never ``true``)."""
    text = resources.files("talon_classic").joinpath(f"schemas/{name}.schema.json").read_text()
    kind = _Exact if exact_integers else jsonschema.Draft202012Validator
    return kind(json.loads(text))


def first_error(name: str, document: Any,
                exact_integers: bool = False) -> jsonschema.ValidationError | None:
    """The error of ``document`` against schema ``name`` at the first field in path order
    (the one a message names); None if it is valid."""
    errors = sorted(validator(name, exact_integers).iter_errors(document),
                    key=lambda e: list(e.absolute_path))
    return errors[0] if errors else None


def field_path(path: Iterable[Any]) -> str:
    """A JSON Schema error's path as messages name a field: ``a.b[0].c``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
