"""TokenBucket on fake time (exact) and on real threads (smoke)."""

from __future__ import annotations

import threading
import time

import pytest

from talon_classic.ratelimit import TokenBucket


class FakeTime:
    """A clock that only moves when someone sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_300_acquisitions_at_60_per_second_take_about_5_seconds() -> None:
    fake = FakeTime()
    bucket = TokenBucket(60, clock=fake.clock, sleep=fake.sleep)
    stamps = []
    for _ in range(300):
        bucket.acquire()
        stamps.append(fake.now)
    assert fake.now == pytest.approx(299 / 60)  # the first is free, then one per 1/60 s
    assert fake.now >= 4.98
    # no one-second window holds more than 60
    assert all(stamps[i + 60] - stamps[i] >= 1.0 - 1e-9 for i in range(len(stamps) - 60))


def test_acquire_returns_the_wait() -> None:
    fake = FakeTime()
    bucket = TokenBucket(10, clock=fake.clock, sleep=fake.sleep)
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.1)
    fake.now += 5  # idle: the next one is free again, but credit does not pile up
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.1)


@pytest.mark.parametrize("rate", [0, -1, 0.0])
def test_unlimited_never_sleeps(rate: float) -> None:
    def sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds}")

    bucket = TokenBucket(rate, clock=lambda: 0.0, sleep=sleep)
    assert all(bucket.acquire() == 0.0 for _ in range(10_000))


def test_burst_is_free_then_the_rate_applies() -> None:
    fake = FakeTime()
    bucket = TokenBucket(10, burst=5, clock=fake.clock, sleep=fake.sleep)
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.acquire() == pytest.approx(0.1)
    fake.now += 100  # a long idle refills at most `burst` tokens
    assert [bucket.acquire() for _ in range(5)] == [0.0] * 5
    assert bucket.acquire() > 0


def test_acquiring_several_tokens_reserves_them_all() -> None:
    fake = FakeTime()
    bucket = TokenBucket(10, clock=fake.clock, sleep=fake.sleep)
    bucket.acquire(3)
    assert bucket.acquire() == pytest.approx(0.3)


def test_threads_each_get_a_distinct_slot() -> None:
    """With time frozen, 8 threads x 50 calls must reserve exactly slots 0, 1/r, ... 399/r."""
    waits: list[float] = []
    bucket = TokenBucket(100, clock=lambda: 0.0, sleep=waits.append)
    start = threading.Barrier(8)

    def work() -> None:
        start.wait()
        for _ in range(50):
            bucket.acquire()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    slots = sorted(round(w * 100) for w in waits)
    assert slots == list(range(1, 400))  # slot 0 was free, so it did not sleep


def test_threads_on_a_real_clock_keep_the_rate() -> None:
    bucket = TokenBucket(400)
    start = threading.Barrier(4)

    def work() -> None:
        start.wait()
        for _ in range(25):
            bucket.acquire()

    threads = [threading.Thread(target=work) for _ in range(4)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    assert 99 / 400 * 0.95 <= elapsed < 5
