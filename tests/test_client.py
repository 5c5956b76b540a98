"""The client against the emulator over real loopback HTTP (and `responses` for request bytes)."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime

import pytest
import requests
import responses

from talon_classic import __version__
from talon_classic.client import Client, parse_retry_after
from talon_classic.exceptions import AuthError, RejectedError, RetriesExhausted
from talon_classic.ratelimit import TokenBucket

KEY = "secret-key-0123456789-wxyz"


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(emu, **kw) -> Client:
    kw.setdefault("rate_limit", 0)
    return Client(emu.url, emu.api_key, **kw)


def profiles(n: int, start: int = 0) -> list[dict]:
    return [{"integrationId": f"u{i}", "attributes": {"n": i}} for i in range(start, start + n)]


def test_single_upsert_lands(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        answer = client.upsert_profile("a/b c", {"plan": "gold"})
    assert answer["customerProfile"]["integrationId"] == "a/b c"
    assert talon_emulator.profile("a/b c") == {"integrationId": "a/b c",
                                               "attributes": {"plan": "gold"}}


def test_bulk_upsert_lands_and_1001_takes_two_requests(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        outcome = client.upsert_profiles(profiles(1000))
        assert len(outcome.delivered) == 1000
        assert [r["profiles"] for r in talon_emulator.requests()] == [1000]
        talon_emulator.reset()
        outcome = client.upsert_profiles(profiles(1001))
    assert len(outcome.delivered) == 1001 and not outcome.rejected and not outcome.failed
    assert [r["profiles"] for r in talon_emulator.requests()] == [1000, 1]
    assert talon_emulator.profile("u1000")["attributes"] == {"n": 1000}


def test_poison_profile_is_isolated_and_the_rest_delivered(talon_emulator) -> None:
    talon_emulator.configure(reject_ids=["u500"])
    with client_for(talon_emulator) as client:
        outcome = client.upsert_profiles(profiles(1000))
    assert len(outcome.delivered) == 999
    assert [(p["integrationId"], e.status, e.integration_id) for p, e in outcome.rejected] == [
        ("u500", 400, "u500")
    ]
    assert "u500" in outcome.rejected[0][1].errors[0]["details"]
    assert talon_emulator.stats()["profiles"] == 999


def test_poison_found_by_halving_without_a_pointer(talon_emulator, monkeypatch) -> None:
    import talon_classic.client as client_module

    monkeypatch.setattr(client_module, "_pointed_index", lambda exc, size: None)
    talon_emulator.configure(reject_ids=["u3", "u77"])
    with client_for(talon_emulator) as client:
        outcome = client.upsert_profiles(profiles(100))
    assert sorted(p["integrationId"] for p, _ in outcome.rejected) == ["u3", "u77"]
    assert len(outcome.delivered) == 98


def test_429_retry_after_is_waited_out(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=1)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # really waits (capped) so the emulator's bucket refills
        waits.append(seconds)
        time.sleep(min(seconds, 1.1))

    with client_for(emu, sleep=sleep) as client:
        client.upsert_profile("u1", {})
        client.upsert_profile("u2", {})
    assert emu.stats()["requests"]["429"] >= 1
    assert waits and min(waits) >= 1.0  # every wait honours Retry-After: 1
    assert client.stats.retries == len(waits)
    assert emu.profile("u2") is not None


def test_503_burst_is_retried(talon_emulator) -> None:
    talon_emulator.configure(fail_next=3, fail_status=503)
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep) as client:
        outcome = client.upsert_profiles(profiles(10))
    assert len(outcome.delivered) == 10
    assert len(sleep.waits) == 3
    # full jitter: each wait within [0, min(cap, base * 2**n)]
    assert all(0 <= w <= 0.5 * 2**i for i, w in enumerate(sleep.waits))
    assert talon_emulator.stats()["requests"] == {"503": 3, "204": 1}


@pytest.mark.parametrize("status", [501, 505])
def test_501_and_505_are_not_retried(talon_emulator, status) -> None:
    talon_emulator.configure(fail_next=1, fail_status=status)
    with client_for(talon_emulator, sleep=FakeSleep()) as client, pytest.raises(Exception) as info:
        client.upsert_profile("u1", {})
    assert getattr(info.value, "status", None) == status


def test_retries_exhausted(talon_emulator) -> None:
    talon_emulator.configure(fail_next=100, fail_status=502)
    with client_for(talon_emulator, sleep=FakeSleep(), max_attempts=3) as client:
        outcome = client.upsert_profiles(profiles(5))
        with pytest.raises(RetriesExhausted, match="after 3 attempts"):
            client.upsert_profile("x", {})
    assert len(outcome.failed) == 5 and not outcome.delivered


def test_hang_hits_the_timeout_and_is_retried(talon_emulator) -> None:
    talon_emulator.configure(hang_next=1, hang_seconds=2)
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep, read_timeout=0.3) as client:
        client.upsert_profile("u1", {"a": 1})
    assert len(sleep.waits) == 1
    assert client.stats.by_status["ReadTimeout"] == 1


def test_dropped_connection_is_retried(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep) as client:
        client.upsert_profiles(profiles(3))
    assert len(sleep.waits) == 1
    assert talon_emulator.profile("u2") is not None


def test_wrong_key_raises_auth_error_without_the_key(talon_emulator, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    client = Client(talon_emulator.url, KEY, rate_limit=0)
    with pytest.raises(AuthError) as info:
        client.upsert_profiles(profiles(2))
    with pytest.raises(AuthError):
        client.check_auth()
    text = str(info.value)
    assert "check the Integration API key" in text
    assert KEY not in text and KEY not in repr(client) and KEY not in caplog.text
    assert "****wxyz" in repr(client)


def test_check_auth_ok(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        client.check_auth()


def test_rejected_single_keeps_server_message(talon_emulator) -> None:
    talon_emulator.configure(attributes=["plan"])
    with client_for(talon_emulator) as client, pytest.raises(RejectedError) as info:
        client.upsert_profile("u1", {"nope": 1})
    assert info.value.status == 400
    assert info.value.integration_id == "u1"
    assert "nope" in json.dumps(info.value.errors)


@pytest.mark.timeout(30)
def test_limiter_keeps_a_300_request_burst_under_60_per_second(talon_emulator) -> None:
    """Measured by the emulator's own clock, with 4 threads sharing one client."""
    from concurrent.futures import ThreadPoolExecutor

    with client_for(talon_emulator, rate_limit=60, concurrency=4) as client:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.upsert_profile(f"u{i}", {}), range(300)))
    times = sorted(r["t"] for r in talon_emulator.requests())
    assert len(times) == 300
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate <= 60 * 1.05
    assert rate >= 60 * 0.8  # and the limiter is not needlessly slow
    # no one-second window holds more than 60, give or take arrival jitter on a busy machine
    j = 0
    for i, t in enumerate(times):
        while times[j] < t - 1.0:
            j += 1
        assert i - j + 1 <= 66


def test_dry_run_writes_requests_with_the_key_redacted() -> None:
    out = io.StringIO()
    client = Client.dry_run("https://demo.talon.one", KEY, out)
    client.upsert_profiles(profiles(2))
    client.upsert_profile("a b", {"x": 1}, run_rule_engine=True)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0]["url"] == "https://demo.talon.one/v2/customer_profiles?silent=yes"
    assert lines[0]["body"] == {"customerProfiles": profiles(2)}
    assert lines[1]["url"] == "https://demo.talon.one/v2/customer_profiles/a%20b?runRuleEngine=true"
    assert lines[1]["headers"]["Authorization"] == "ApiKey-v1 ****wxyz"
    assert KEY not in out.getvalue()


@responses.activate
def test_request_building() -> None:
    responses.put("https://x.talon.one/v2/customer_profiles/a%2Fb%20c", json={})
    Client("https://x.talon.one", KEY, rate_limit=0).upsert_profile("a/b c", {"ü": 1.5})
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"ApiKey-v1 {KEY}"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.headers["User-Agent"] == f"talon-classic/{__version__}"
    assert json.loads(sent.body) == {"attributes": {"ü": 1.5}}


def test_user_session_is_used(talon_emulator) -> None:
    session = requests.Session()
    session.headers["X-Trace"] = "1"
    client = Client(talon_emulator.url, talon_emulator.api_key, session=session, rate_limit=0)
    client.check_auth()
    client.close()
    assert session.adapters  # not closed by the client: it is the user's
    session.close()


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:07 GMT", now=lambda: now) == 7.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


def test_token_bucket_with_a_fake_clock() -> None:
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    bucket = TokenBucket(60, clock=lambda: now[0], sleep=sleep)
    for _ in range(300):
        bucket.acquire()
    assert now[0] == pytest.approx(299 / 60)
    burst = TokenBucket(10, burst=5, clock=lambda: 0.0, sleep=waits.append)
    assert [burst.acquire() for _ in range(6)][:5] == [0.0] * 5
    assert TokenBucket(0).acquire() == 0.0
