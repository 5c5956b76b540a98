"""Generate samples/identifies.jsonl: realistic Segment identify traffic, deterministically.

Run ``python samples/make_samples.py`` to rebuild the file; the seed is fixed,
so the output is the same every time. It mixes what a Segment source really
sends: server-side identifies with nested address and company traits and
out-of-order timestamps, Engage audience and computed-trait identifies
(``context.personas``), anonymous identifies, track and page calls, an event
that turns Talon.One off in ``integrations``, and three malformed lines.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

SEED = 20261123
USERS = 40
HERE = Path(__file__).parent

FIRST = ["Ada", "Björn", "Chloé", "Dmitri", "Eva", "Farah", "Gustav", "Hana", "Ines", "Jonas"]
LAST = ["Meyer", "Okafor", "Rossi", "Tanaka", "Novak", "Schmidt", "Larsen", "Haddad"]
CITIES = [("Berlin", "DE", "10115", 52.52, 13.405), ("Lisbon", "PT", "1100-148", 38.72, -9.14),
          ("Austin", "US", "73301", 30.27, -97.74), ("Oslo", "NO", "0150", 59.91, 10.75)]
PLANS = ["free", "pro", "business"]
AUDIENCES = ["high_value_customers", "VIP Customers EU", "Cart Abandoners (7d)"]


def identify(rng: random.Random, uid: str, when: datetime, n: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    city, country, postal, lat, lng = rng.choice(CITIES)
    traits: dict = {
        "email": f"{first.lower()}.{last.lower()}.{uid}@example.com",
        "name": f"{first} {last}",
        "first_name": first,
        "last_name": last,
        "plan": rng.choice(PLANS),
        "address": {"city": city, "country": country, "postal_code": postal,
                    "geo": {"lat": lat, "lng": lng}},
        "company": {"name": f"{last} GmbH", "size": rng.choice([5, 40, 250])},
        "tags": rng.sample(["beta", "newsletter", "b2b", "mobile"], k=rng.randint(0, 3)),
        "age": rng.randint(18, 80),
        "newsletter_opt_in": rng.random() < 0.5,
        "consent": {"email": rng.random() < 0.7, "sms": rng.random() < 0.3},
        "favourite_colour": rng.choice(["red", "green", None]),  # not allowlisted / null
        "phone": None,
    }
    if rng.random() < 0.2:
        traits["addresses"] = [{"city": city}]  # a list of objects: unsupported
    return {
        "type": "identify",
        "messageId": f"msg-{n:05d}",
        "userId": uid,
        "anonymousId": f"anon-{uid}",
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "context": {"library": {"name": "analytics-python", "version": "2.3.2"}},
        "traits": traits,
    }


def engage(rng: random.Random, uid: str, when: datetime, n: int) -> dict:
    if rng.random() < 0.7:
        key, cls = rng.choice(AUDIENCES), "audience"
        value = rng.choice([True, False, "true"])
    else:
        key, cls = "lifetime_value", "trait"
        value = round(rng.uniform(10, 5000), 2)
    return {
        "type": "identify",
        "messageId": f"personas_{n:05d}",
        "userId": uid,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "traits": {key: value, "email": f"{uid}@example.com"},
        "context": {"personas": {"computation_class": cls, "computation_key": key,
                                 "computation_id": f"aud_{n}", "space_id": "spa_demo"}},
        "integrations": {"All": False, "Talon.One": True},
    }


def main() -> None:
    rng = random.Random(SEED)
    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    lines: list[str] = []
    for n in range(230):
        uid = f"user-{rng.randrange(USERS):03d}"
        # mostly in order, but every seventh event is stamped a day earlier:
        # the merge must keep the newer values
        when = start + timedelta(minutes=7 * n) - (timedelta(days=1) if n % 7 == 3 else timedelta())
        roll = rng.random()
        if roll < 0.70:
            event = identify(rng, uid, when, n)
        elif roll < 0.85:
            event = engage(rng, uid, when, n)
        elif roll < 0.90:
            event = {"type": "identify", "anonymousId": f"anon-{n}", "messageId": f"msg-{n:05d}",
                     "timestamp": when.isoformat().replace("+00:00", "Z"),
                     "traits": {"email": f"guest{n}@example.com"}}
        elif roll < 0.95:
            event = {"type": "track", "userId": uid, "event": "Order Completed",
                     "messageId": f"msg-{n:05d}", "properties": {"total": 42.5}}
        else:
            event = {"type": "page", "userId": uid, "name": "Pricing", "messageId": f"msg-{n:05d}"}
        lines.append(json.dumps(event, ensure_ascii=False))
    lines.insert(60, json.dumps({"type": "identify", "userId": "user-001", "traits": {"plan": "pro"},
                                 "integrations": {"All": False}}))
    lines.insert(90, '{"type": "identify", "userId": "user-002", "traits": {"plan": ')
    lines.insert(120, "not json")
    lines.insert(150, '["identify", "user-003"]')
    lines.insert(151, "")
    (HERE / "identifies.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
