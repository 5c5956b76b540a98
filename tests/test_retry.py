"""The retry policy both Talon.One clients share (talon_classic.retry)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import pytest
import requests

from talon_classic.exceptions import RetriesExhausted
from talon_classic.retry import (
    RETRY_STATUSES,
    TRANSIENT_ERRORS,
    Retryable,
    RetryPolicy,
    check_status,
    parse_retry_after,
)

log = logging.getLogger("tests.retry")


def policy(sleeps: list[float], **kw) -> RetryPolicy:
    options = dict(max_attempts=4, backoff_base=0.5, backoff_cap=30.0, retry_after_cap=60.0,
                   sleep=sleeps.append, log=log, label="Somewhere")
    options.update(kw)
    return RetryPolicy(**options)


def failing(times: int, exc: Exception, result: str = "ok"):
    calls = []

    def attempt() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return result

    return attempt, calls


def response(status: int, retry_after: str | None = None) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    if retry_after is not None:
        answer.headers["Retry-After"] = retry_after
    return answer


def test_statuses_and_errors_retried() -> None:
    assert {408, 409, 429, 500, 502, 503, 504, 599} <= RETRY_STATUSES
    assert not {200, 400, 401, 403, 404, 422, 501, 505} & RETRY_STATUSES
    assert isinstance(requests.ReadTimeout(), TRANSIENT_ERRORS)
    assert isinstance(requests.ConnectionError(), TRANSIENT_ERRORS)
    assert isinstance(requests.exceptions.ChunkedEncodingError(), TRANSIENT_ERRORS)
    assert not isinstance(requests.exceptions.InvalidHeader(), TRANSIENT_ERRORS)


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:07 GMT", now=lambda: now) == 7.0
    assert parse_retry_after("-1") is None and parse_retry_after("inf") is None
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_check_status_raises_retryable_with_retry_after() -> None:
    with pytest.raises(Retryable, match="^503 on GET /x$") as info:
        check_status(response(503, "7"), "GET /x")
    assert info.value.status == 503 and info.value.retry_after == 7.0
    ok = response(200)
    assert check_status(ok, "GET /x") is ok
    assert check_status(response(409), "POST /y", RETRY_STATUSES - {409}).status_code == 409


def test_retries_until_success_logging_and_counting_each_retry(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tests.retry")
    sleeps: list[float] = []
    retries: list[int] = []
    attempt, calls = failing(2, Retryable("503 on GET /x", 503))
    assert policy(sleeps, on_retry=lambda: retries.append(1)).run(attempt) == "ok"
    assert len(calls) == 3 and len(sleeps) == 2 and len(retries) == 2
    assert all(0 <= s <= 30 for s in sleeps)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("Somewhere: 503 on GET /x (attempt 1/4); retrying in ")


def test_gives_up_after_max_attempts_without_chaining() -> None:
    sleeps: list[float] = []
    attempt, calls = failing(99, Retryable("502 on GET /x", 502))
    with pytest.raises(RetriesExhausted, match="^API: gave up after 4 attempts: last 502 on GET /x$"
                       ) as info:
        policy(sleeps, gave_up="API: ").run(attempt)
    assert len(calls) == 4 and len(sleeps) == 3
    assert info.value.status == 502
    assert info.value.__cause__ is None and info.value.__context__ is None


def test_one_attempt_is_singular() -> None:
    attempt, _ = failing(1, Retryable("ReadTimeout on GET /x"))
    with pytest.raises(RetriesExhausted, match="^gave up after 1 attempt: last ReadTimeout"):
        policy([], max_attempts=0).run(attempt)


def test_other_errors_propagate_at_once() -> None:
    sleeps: list[float] = []
    attempt, calls = failing(1, KeyError("no"))
    with pytest.raises(KeyError):
        policy(sleeps).run(attempt)
    assert len(calls) == 1 and not sleeps


def test_retry_after_is_honoured_and_capped() -> None:
    sleeps: list[float] = []
    attempt, _ = failing(1, Retryable("429 on GET /x", 429, retry_after=45.0))
    policy(sleeps, backoff_cap=0.01).run(attempt)
    assert sleeps == [45.0]
    sleeps.clear()
    attempt, _ = failing(1, Retryable("429 on GET /x", 429, retry_after=4000.0))
    policy(sleeps, backoff_cap=0.01, retry_after_cap=60.0).run(attempt)
    assert sleeps == [60.0]
    sleeps.clear()
    attempt, _ = failing(1, Retryable("429 on GET /x", 429, retry_after=4000.0))
    policy(sleeps, backoff_cap=0.01, retry_after_cap=-5).run(attempt)
    assert sleeps[0] <= 0.01  # a negative cap honours nothing


def test_the_log_line_is_scrubbed(caplog) -> None:
    caplog.set_level(logging.WARNING, logger="tests.retry")
    attempt, _ = failing(1, Retryable("proxy said secret-value"))
    policy([], scrub=lambda text: text.replace("secret-value", "****")).run(attempt)
    assert "secret-value" not in caplog.text and "proxy said ****" in caplog.text


def test_one_policy_serves_many_threads() -> None:
    shared = policy([])
    results: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        attempt, calls = failing(2, Retryable("503"), result=str(n))
        value = shared.run(attempt)
        with lock:
            results.append(value if len(calls) == 3 else "wrong count")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(str(n) for n in range(8))
