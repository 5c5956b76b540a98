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
