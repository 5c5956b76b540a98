"""Synthetic identify traffic for the benchmarks: ~12 traits, nested, lists, Engage mixed in."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

ALLOWLIST = ["email", "name", "first_name", "plan", "age", "tags", "address_city",
             "address_country", "address_geo_lat", "company_name", "newsletter", "consent_*"]


def event(i: int, users: int, rng: random.Random) -> dict:
    """The i-th event: every tenth is an Engage audience identify."""
    uid = f"user-{rng.randrange(users)}"
    traits = {
        "email": f"{uid}@example.com",
        "name": "Ada Lovelace",
        "first_name": "Ada",
        "plan": rng.choice(("free", "pro", "business")),
        "age": rng.randint(18, 90),
        "tags": ["beta", "newsletter"],
        "address": {"city": "Berlin", "country": "DE", "geo": {"lat": 52.52, "lng": 13.4}},
        "company": {"name": "Analytical Engines", "size": 12},
        "newsletter": True,
        "favourite_colour": "green",
    }
    context: dict = {"library": {"name": "analytics-python", "version": "2.3.2"}}
    if i % 10 == 0:
        traits["High Value Customers"] = rng.random() < 0.5
        context["personas"] = {"computation_class": "audience",
                               "computation_key": "High Value Customers",
                               "computation_id": "aud_1", "space_id": "spa_1"}
    return {"type": "identify", "userId": uid, "messageId": f"m-{i}",
            "timestamp": f"2026-11-01T{(i // 3600) % 24:02d}:{(i // 60) % 60:02d}:{i % 60:02d}Z",
            "traits": traits, "context": context}


def events(n: int, users: int | None = None, seed: int = 7) -> Iterator[dict]:
    """n events over ``users`` distinct users (default: n)."""
    rng = random.Random(seed)
    users = users or n
    for i in range(n):
        yield event(i, users, rng)


def lines(n: int, users: int | None = None, seed: int = 7) -> Iterator[bytes]:
    """The same events as JSONL bytes."""
    for e in events(n, users, seed):
        yield json.dumps(e).encode() + b"\n"


def write(path: str, n: int, users: int | None = None) -> str:
    """Write n events to a JSONL file; return its path."""
    with open(path, "wb") as fh:
        fh.writelines(lines(n, users))
    return path


def line_templates(count: int = 10) -> list[bytes]:
    """JSON lines of real events with ``%d`` where the user number and messageId go.

    ``template % (user, message)`` makes a fresh event far faster than
    ``json.dumps``, so load generators cost little CPU.
    """
    rng = random.Random(3)
    out = []
    for i in range(count):
        e = event(i, 1, rng)
        e["userId"], e["messageId"] = "@USER@", "@MSG@"
        out.append(json.dumps(e).replace('"@USER@"', '"user-%d"')
                   .replace('"@MSG@"', '"m-%d"').encode())
    return out
