"""Which customer-profile attributes exist: Talon.One's name rule, the emulator's list.

In Talon.One an attribute must be created (Campaign Manager, entity
Customer Profile) before a profile may carry it. The emulator is told the
names with ``attributes`` (entries with ``*`` are shell patterns, so
``consent_*`` stands for every consent flag) or accepts every well-formed
name when it has no list. Typed attributes will join the names here.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from functools import lru_cache

#: Talon.One's attribute names (ASCII, like its Go regexp).
ATTRIBUTE_NAME = re.compile(r"[A-Za-z]\w*", re.ASCII)


@lru_cache(maxsize=64)
def _patterns(attributes: frozenset[str]) -> re.Pattern[str] | None:
    globs = [fnmatch.translate(a) for a in attributes if "*" in a]
    return re.compile("|".join(globs)) if globs else None


def attribute_exists(name: str, attributes: frozenset[str]) -> bool:
    """Is ``name`` a known attribute? Entries with ``*`` are shell patterns (``consent_*``)."""
    if name in attributes:
        return True
    pattern = _patterns(attributes)
    return pattern is not None and pattern.match(name) is not None


def parse_attributes_file(path: str | os.PathLike[str]) -> frozenset[str]:
    """Attribute names from a file, for ``talon-classic emulator --attributes-file``.

    Either a JSON array of strings, or one name per line; blank lines and
    ``#`` comments (whole-line or trailing) are ignored.
    """
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if text.lstrip().startswith("["):
        names = json.loads(text)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{os.fspath(path)}: expected a JSON array of strings")
        return frozenset(n.strip() for n in names if n.strip())
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return frozenset(line for line in lines if line)
