"""Injected failures, hangs, drops, latency and the rate limit, over real loopback HTTP."""

from __future__ import annotations

import time

import pytest
import requests
from emulator_http import api, bulk, error_of

from talon_classic.emulator import EmulatorConfig
from talon_classic.emulator.faults import Fault, Faults, TokenBucket


def test_latency_is_added_to_every_request(talon_emulator) -> None:
    talon_emulator.configure(latency_ms=150)
    for session in (api(talon_emulator), api(talon_emulator, "wrong")):
        started = time.monotonic()
        session.get(f"{talon_emulator.url}/v2/authping")
        assert time.monotonic() - started >= 0.15


def test_rate_limit_429_with_retry_after(talon_emulator_factory) -> None:
    emu = talon_emulator_factory(rate_limit=2)
    s = api(emu)
    answers = [s.get(f"{emu.url}/v2/authping").status_code for _ in range(5)]
    assert answers[:2] == [204, 204] and 429 in answers  # a burst of one second's worth
    limited = s.get(f"{emu.url}/v2/authping")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "1"
    assert error_of(limited)["message"] == "Too many requests"
    assert emu.stats()["requests"]["429"] == answers.count(429) + 1
    emu.configure(rate_limit=0.5)  # under one per second: the wait is longer than a second
    assert s.get(f"{emu.url}/v2/authping").status_code == 204
    assert s.get(f"{emu.url}/v2/authping").headers["Retry-After"] == "2"


def test_fail_next_burst_then_normal(talon_emulator) -> None:
    public = talon_emulator.configure(fail_next=2, fail_status=502)
    assert public["fail_next"] == 2 and "api_key" not in public
    s = api(talon_emulator)
    statuses = [s.get(f"{talon_emulator.url}/v2/authping").status_code for _ in range(3)]
    assert statuses == [502, 502, 204]
    assert talon_emulator.configure()["fail_next"] == 0


def test_fail_rate_is_seeded(talon_emulator_factory) -> None:
    def run() -> list[int]:
        emu = talon_emulator_factory(fail_rate=0.5, seed=42)
        s = api(emu)
        return [s.get(f"{emu.url}/v2/authping").status_code for _ in range(20)]

    first = run()
    assert first == run() and {204, 503} == set(first)


def test_hang_hits_the_client_timeout(talon_emulator) -> None:
    talon_emulator.configure(hang_next=1, hang_seconds=0.6)
    s = api(talon_emulator)
    with pytest.raises(requests.exceptions.ReadTimeout):
        s.get(f"{talon_emulator.url}/v2/authping", timeout=0.2)
    started = time.monotonic()
    assert s.get(f"{talon_emulator.url}/v2/authping", timeout=5).status_code == 204
    assert time.monotonic() - started < 0.5  # only the next one hangs


def test_drop_closes_the_connection(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    with pytest.raises((requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ConnectionError)):
        bulk(talon_emulator, [{"integrationId": "a", "attributes": {}}])
    # the write happened, only the answer was lost; the next request is answered
    assert talon_emulator.profile("a") == {"integrationId": "a", "attributes": {}}
    assert bulk(talon_emulator, [{"integrationId": "b", "attributes": {}}]).status_code == 204


def test_faults_come_one_per_request_in_order(talon_emulator) -> None:
    talon_emulator.configure(fail_next=1, hang_next=1, hang_seconds=0.1, drop_next=1)
    s = api(talon_emulator)
    url = f"{talon_emulator.url}/v2/authping"
    assert s.get(url).status_code == 503
    started = time.monotonic()
    assert s.get(url).status_code == 204 and time.monotonic() - started >= 0.1
    with pytest.raises(requests.exceptions.RequestException):
        s.get(url)
    assert s.get(url).status_code == 204


def test_one_fault_per_request_in_order_and_counted_down() -> None:
    config = EmulatorConfig(fail_next=1, hang_next=1, drop_next=2)
    faults = Faults(config)
    taken = []
    for _ in range(5):
        fault, config = faults.pick(config)
        taken.append(fault)
    assert taken == [Fault.FAIL, Fault.HANG, Fault.DROP, Fault.DROP, None]
    assert (config.fail_next, config.hang_next, config.drop_next) == (0, 0, 0)


def test_fail_rate_follows_the_seed() -> None:
    def run(seed: int) -> list[Fault | None]:
        config = EmulatorConfig(fail_rate=0.5, seed=seed)
        faults = Faults(config)
        return [faults.pick(config)[0] for _ in range(40)]

    assert run(1) == run(1) != run(2) and {Fault.FAIL, None} == set(run(1))


def test_token_bucket_bursts_one_seconds_worth_then_waits() -> None:
    bucket = TokenBucket(3)
    assert [bucket.take() for _ in range(4)] == [0, 0, 0, 1]
    bucket.set_rate(0.25)  # a new rate starts full: one token, then 4 s to the next
    assert [bucket.take(), bucket.take()] == [0, 4]
    bucket.set_rate(0)
    assert {bucket.take() for _ in range(100)} == {0}


def _plan(emu) -> str | None:
    found = emu.profile("u1")
    return found and found["attributes"]["plan"]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_hung_write_lands_at_the_end_of_its_hang(talon_emulator) -> None:
    """The hazard Talon.One really has (issue 12): a request the client gave up on
    completes later and overwrites newer values. The emulator reproduces it."""
    from talon_classic.client import Client

    talon_emulator.configure(hang_next=1, hang_seconds=1)
    started = time.monotonic()
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0, read_timeout=0.3,
                backoff_base=0.01, backoff_cap=0.01) as client:
        outcome = client.upsert_profiles([{"integrationId": "u1", "attributes": {"plan": "A"}}])
        assert [p["integrationId"] for p in outcome.delivered] == ["u1"]
        assert client.stats.by_status["ReadTimeout"] == 1  # the first attempt hung
        assert _plan(talon_emulator) == "A"  # the retry landed
        client.upsert_profiles([{"integrationId": "u1", "attributes": {"plan": "B"}}])
    assert _plan(talon_emulator) == "B" and time.monotonic() - started < 1
    _wait_for(lambda: _plan(talon_emulator) == "A")  # the hung request, at the end of its hang
    assert time.monotonic() - started >= 1
    log = talon_emulator.requests()
    assert sorted(r["status"] for r in log) == [204, 204, 204]  # it was answered, to nobody


def test_a_hung_write_lands_even_when_the_rate_limit_is_spent(talon_emulator_factory) -> None:
    """A hung request took its token when it arrived: it is not refused at the end."""
    emu = talon_emulator_factory(rate_limit=1, hang_next=1, hang_seconds=0.6)
    with pytest.raises(requests.exceptions.ReadTimeout):
        bulk(emu, [{"integrationId": "u1", "attributes": {"plan": "late"}}], timeout=0.2)
    assert api(emu).get(f"{emu.url}/v2/authping").status_code == 429  # the token is gone
    _wait_for(lambda: _plan(emu) == "late")


def test_hang_without_apply_answers_504_and_writes_nothing(talon_emulator) -> None:
    talon_emulator.configure(hang_next=1, hang_seconds=0.3, hang_apply=False)
    r = bulk(talon_emulator, [{"integrationId": "u1", "attributes": {"plan": "x"}}])
    assert r.status_code == 504 and error_of(r)["message"] == "Gateway timeout"
    assert talon_emulator.profile("u1") is None
    assert bulk(talon_emulator, [{"integrationId": "u1", "attributes": {}}]).status_code == 204
