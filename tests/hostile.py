"""Input lines an adversarial tester used: values JSON can carry that naive code cannot handle.

Shared by the reader, engine, pipeline, CLI and server tests. Each line is
JSON text as it arrives on the wire: a lone surrogate as the escape
``\\ud800``, integers written out in full (10**400, 5000 digits), objects
nested hundreds of levels deep.
"""

from __future__ import annotations

import json
from typing import Any

DIGITS_5000 = "9" * 5000
BIG_400 = 10**400
#: Allowlist under which every hostile attribute would otherwise be sent.
ALLOW = ["email", "name", "tags", "score", "n*", "a_*"]


def text(event: dict[str, Any]) -> str:
    """JSON text of ``event``: lone surrogates escaped, ``"@D5000@"`` replaced by 5000 digits,
    ``"@DEEP<n>@"`` by an object nested ``n`` levels deep."""
    out = json.dumps(event)  # ensure_ascii: "\ud800" is written as the escape \ud800
    out = out.replace('"@D5000@"', DIGITS_5000)
    for depth in (299, 300, 600, 1000):
        out = out.replace(f'"@DEEP{depth}@"', nested(depth))
    return out


def nested(depth: int, leaf: str = "1") -> str:
    """``{"a": {"a": ... leaf}}``: ``depth`` objects inside one another."""
    return '{"a":' * depth + leaf + "}" * depth


def email(uid: str) -> str:
    return f"{uid}@example.com"


#: (userId, event) pairs whose bad part the engine drops; each keeps its email.
DROPPED = [
    ("sur-value", {"traits": {"name": "\ud800"}}, "name"),
    ("sur-list", {"traits": {"tags": ["ok", "\udfff"]}}, "tags"),
    ("sur-name", {"traits": {"n\ud800me": "x"}}, "n\\ud800me"),
    ("int-10e400", {"traits": {"score": BIG_400}}, "score"),
    ("int-5000", {"traits": {"score": "@D5000@"}}, "score"),
    ("int-2e53", {"traits": {"score": 2**53}}, "score"),
    ("deep-300", {"traits": {"a": "@DEEP299@"}}, "_".join(["a"] * 64)),
]
#: Context values never sent, but written whenever the event is (dead letters, dry runs).
HOSTILE_CONTEXT = {"big": BIG_400, "huge": "@D5000@", "s": "\ud800", "k\udc80": 1,
                   "deep": "@DEEP300@"}


def dropped_events() -> list[tuple[str, str, str]]:
    """``(userId, JSON line, dropped attribute name)`` for each kind in :data:`DROPPED`."""
    out = []
    for uid, extra, name in DROPPED:
        event = {"type": "identify", "userId": uid,
                 "traits": {"email": email(uid), **extra["traits"]}}
        out.append((uid, text(event), name))
    return out


def good(uid: str, **context: Any) -> str:
    event: dict[str, Any] = {"type": "identify", "userId": uid, "traits": {"email": email(uid)}}
    if context:
        event["context"] = context
    return text(event)


SURROGATE_USER = text({"type": "identify", "userId": "\ud800", "traits": {"email": "x@y.z"}})
TOO_DEEP = text({"type": "identify", "userId": "deep-1000", "traits": {"a": "@DEEP1000@"}})
