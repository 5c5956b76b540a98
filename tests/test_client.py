"""The client against the emulator over real loopback HTTP (and `responses` for request bytes)."""

from __future__ import annotations

import io
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
import responses
from client_helpers import KEY, FakeSleep, client_for

from talon_classic import __version__
from talon_classic.client import (
    DEFAULT_MAX_RETRY_AFTER,
    Client,
    DryRunAdapter,
    parse_retry_after,
    redact_key,
    scrub,
)
from talon_classic.exceptions import (
    AuthError,
    DeliveryError,
    RejectedError,
    RetriesExhausted,
    SettingsError,
)


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

    monkeypatch.setattr(client_module, "_pointed_indexes", lambda exc, size: {})
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
    talon_emulator.configure(hang_next=1, hang_seconds=1)
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
def test_limiter_keeps_a_100_request_burst_under_60_per_second(talon_emulator) -> None:
    """Measured by the emulator's own clock, with 4 threads sharing one client.

    100 requests (1.65 s) rather than 300 (5 s): enough for the one-second
    windows below to be checked many times over (a limiter per thread would
    put 240 in one); the exact spacing is tested on fake time in test_ratelimit.
    """
    from concurrent.futures import ThreadPoolExecutor

    with client_for(talon_emulator, rate_limit=60, concurrency=4) as client:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: client.upsert_profile(f"u{i}", {}), range(100)))
    times = sorted(r["t"] for r in talon_emulator.requests())
    assert len(times) == 100
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


def test_parse_retry_after_edge_cases() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("1.5") == 1.5
    assert parse_retry_after("Wed, 31 Dec 2025 23:59:00 GMT", now=lambda: now) == 0.0  # past
    assert parse_retry_after("-3") is None
    assert parse_retry_after("") is None


@responses.activate
def test_retry_after_http_date_is_waited_out() -> None:
    when = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20)
    url = "https://x.talon.one/v2/customer_profiles"
    responses.put(url, status=429, headers={"Retry-After": format_datetime(when, usegmt=True)})
    responses.put(url, status=204)
    sleep = FakeSleep()
    with Client("https://x.talon.one", KEY, rate_limit=0, sleep=sleep) as client:
        outcome = client.upsert_profiles(profiles(2))
    assert len(outcome.delivered) == 2
    assert len(sleep.waits) == 1 and 18 <= sleep.waits[0] <= 20


# -- exact request building (responses) -----------------------------------------------
@responses.activate
def test_bulk_request_building() -> None:
    url = "https://x.talon.one/v2/customer_profiles"
    responses.put(url, status=204)
    batch = [{"integrationId": "é/1", "attributes": {"name": "Zoë", "n": 1.5, "ok": True}}]
    with Client("https://x.talon.one/", KEY, rate_limit=0, connect_timeout=2,
                read_timeout=7) as client:
        client.upsert_profiles(batch)
    call = responses.calls[0]
    assert call.request.url == url + "?silent=yes"
    assert call.request.method == "PUT"
    assert call.request.body == (
        '{"customerProfiles":[{"integrationId":"é/1","attributes":'
        '{"name":"Zoë","n":1.5,"ok":true}}]}'
    ).encode()
    assert call.request.req_kwargs["timeout"] == (2, 7)
    assert call.request.headers["Authorization"] == f"ApiKey-v1 {KEY}"


@responses.activate
def test_single_request_building_with_the_rule_engine() -> None:
    responses.put("https://x.talon.one/v2/customer_profiles/a%2Fb%20c%3F%23", json={"effects": []})
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        answer = client.upsert_profile("a/b c?#", {"x": 1}, run_rule_engine=True)
    assert answer == {"effects": []}
    sent = responses.calls[0].request
    assert sent.url.endswith("/v2/customer_profiles/a%2Fb%20c%3F%23?runRuleEngine=true")
    assert sent.body == b'{"attributes":{"x":1}}'


def test_own_session_pool_fits_the_concurrency_and_never_retries() -> None:
    with Client("https://x.talon.one", KEY, concurrency=16) as client:
        adapter = client.session.get_adapter("https://x.talon.one")
        assert isinstance(adapter, requests.adapters.HTTPAdapter)
        assert adapter._pool_maxsize >= 16
        assert adapter.max_retries.total == 0


def test_a_callers_transport_is_left_alone() -> None:
    session = requests.Session()
    custom = DryRunAdapter(io.StringIO())
    session.mount("https://", custom)
    Client("https://x.talon.one", KEY, session=session)
    assert session.get_adapter("https://x.talon.one") is custom
    session.close()


# -- errors and what they show -----------------------------------------------------------
@responses.activate
def test_409_is_retried() -> None:
    url = "https://x.talon.one/v2/customer_profiles/u1"
    responses.put(url, status=409, json={"message": "Too many requests are updating this "
                                         "profile at the same time", "errors": []})
    responses.put(url, json={})
    sleep = FakeSleep()
    with Client("https://x.talon.one", KEY, rate_limit=0, sleep=sleep) as client:
        client.upsert_profile("u1", {})
        assert client.stats.snapshot() == {"requests": 2, "retries": 1,
                                           "by_status": {"409": 1, "200": 1}}
    assert len(sleep.waits) == 1


@responses.activate
def test_403_is_an_auth_error_and_not_retried() -> None:
    responses.get("https://x.talon.one/v2/authping", status=403, json={"message": "forbidden"})
    with Client("https://x.talon.one", KEY, rate_limit=0, sleep=FakeSleep()) as client:
        with pytest.raises(AuthError, match=r"rejected the API key \(403\)"):
            client.check_auth()
    assert len(responses.calls) == 1


@responses.activate
def test_authping_404_says_the_domain_is_wrong() -> None:
    responses.get("https://example.com/v2/authping", status=404, body="Not Found")
    with Client("https://example.com", KEY, rate_limit=0) as client:
        with pytest.raises(DeliveryError, match="is https://example.com a Talon.One") as info:
            client.check_auth()
    assert not isinstance(info.value, RejectedError)
    assert info.value.status == 404


@responses.activate
def test_a_redirect_is_reported_not_followed() -> None:
    responses.put("http://x.talon.one/v2/customer_profiles", status=301,
                  headers={"Location": "https://x.talon.one/v2/customer_profiles"})
    with Client("http://x.talon.one", KEY, rate_limit=0) as client:
        with pytest.raises(DeliveryError, match="redirected \\(301\\) to https://x.talon.one"):
            client.upsert_profiles(profiles(1))
    assert len(responses.calls) == 1


@responses.activate
def test_bulk_404_rejects_the_request_without_splitting() -> None:
    responses.put("https://x.talon.one/v2/customer_profiles", status=404,
                  json={"message": "not found", "errors": []})
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        outcome = client.upsert_profiles(profiles(8))
    assert len(responses.calls) == 1
    assert [(p["integrationId"], e.status, e.integration_id) for p, e in outcome.rejected] == [
        (f"u{i}", 404, f"u{i}") for i in range(8)
    ]


@responses.activate
def test_pointer_names_several_bad_items_each_with_its_own_error() -> None:
    url = "https://x.talon.one/v2/customer_profiles"

    def errors(*indexes: int) -> dict:
        return {"message": "Bad request", "StatusCode": 400, "errors": [
            {"title": "Bad request", "details": f"bad {i}",
             "source": {"pointer": f"/customerProfiles/{i}/attributes/x"}} for i in indexes]}

    responses.put(url, status=400, json=errors(1, 3))
    responses.put(url, status=204)
    batch = profiles(5)
    for i in (1, 3):  # the pointed items really hold the attribute the pointers name
        batch[i]["attributes"]["x"] = "bad"
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        outcome = client.upsert_profiles(batch)
    assert [p["integrationId"] for p in outcome.delivered] == ["u0", "u2", "u4"]
    assert [(p["integrationId"], e.errors[0]["details"]) for p, e in outcome.rejected] == [
        ("u1", "bad 1"), ("u3", "bad 3")
    ]
    assert json.loads(responses.calls[1].request.body) == {
        "customerProfiles": [profiles(5)[i] for i in (0, 2, 4)]
    }


def test_retry_warnings_say_status_attempt_and_wait_without_key_or_body(
    talon_emulator, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="talon_classic.client")
    talon_emulator.configure(fail_next=2, fail_status=503)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        client.upsert_profile("u1", {"secretTrait": "hidden-value"})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "503" in warnings[0] and "attempt 1/8" in warnings[0] and "retrying in" in warnings[0]
    assert "hidden-value" not in caplog.text
    assert talon_emulator.api_key not in caplog.text


def test_exhausted_retries_name_the_error_not_the_key(talon_emulator) -> None:
    talon_emulator.configure(drop_next=10)
    with client_for(talon_emulator, sleep=FakeSleep(), max_attempts=2) as client:
        with pytest.raises(RetriesExhausted) as info:
            client.check_auth()
    assert "after 2 attempts" in str(info.value) and "Error on GET /v2/authping" in str(info.value)
    assert talon_emulator.api_key not in str(info.value)


def test_redact_key() -> None:
    assert redact_key(KEY) == "****wxyz"
    assert redact_key("short") == "****"
    assert KEY not in repr(Client("https://x.talon.one", KEY))


def test_dry_run_answers_like_talon_one_and_is_not_rate_limited() -> None:
    out = io.StringIO()
    sleep = FakeSleep()
    with Client.dry_run("https://demo.talon.one", KEY, out, rate_limit=1, sleep=sleep) as client:
        client.check_auth()
        assert client.upsert_profile("u1", {"a": 1}) == {}
        for _ in range(5):
            client.upsert_profiles(profiles(1))
    assert sleep.waits == []
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines[0] == {"method": "GET", "url": "https://demo.talon.one/v2/authping",
                        "headers": {"Authorization": "ApiKey-v1 ****wxyz",
                                    "Content-Type": "application/json",
                                    "User-Agent": f"talon-classic/{__version__}"},
                        "body": None}
    assert len(lines) == 7


# -- item 10: a key no header can carry never shows -------------------------------------
FIRST, SECOND = "tk-LEAKFIRST-0123", "LEAKSECOND-4567"


def assert_hidden(text: str) -> None:
    """No part of a FIRST + <char> + SECOND key is in ``text``."""
    assert "LEAK" not in text and "0123" not in text and "4567" not in text, text


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is not None and item not in seen:
            seen.append(item)
            todo += [item.__cause__, item.__context__]
    return seen


def everything_shown(info: pytest.ExceptionInfo, caplog) -> str:
    import traceback

    return "\n".join([*(f"{e!s} {e!r} {e.args!r}" for e in chain(info.value)),
                      "".join(traceback.format_exception(info.value)), caplog.text])


@pytest.mark.parametrize("char", ["\n", "\r", "\x00", "\x7f"])
def test_a_key_no_header_can_carry_is_refused_when_the_client_is_built(char, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SettingsError) as info:
        Client("https://x.talon.one", FIRST + char + SECOND)
    assert str(info.value) == (
        "Client: api_key: contains a control character (a newline or a tab?); copy it again"
    )
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_hidden(everything_shown(info, caplog))
    with pytest.raises(SettingsError, match="non-ASCII"):
        Client.dry_run("https://x.talon.one", FIRST + "\u200b" + SECOND, io.StringIO())
    Client.dry_run("https://x.talon.one", "", io.StringIO())  # a dry run needs no key


@pytest.mark.parametrize("char", ["\n", "\r", "\u2028"])
def test_a_bad_key_past_the_check_fails_as_a_delivery_error_that_hides_it(
    talon_emulator, monkeypatch, caplog, char
) -> None:
    """Defence in depth: requests' InvalidHeader (\\n, \\r) and http.client's
    UnicodeEncodeError (\\u2028) both hold the whole header; neither may show."""
    import talon_classic.client as client_module

    caplog.set_level(logging.DEBUG)
    # as before the fix (raising=False: the name did not exist then)
    monkeypatch.setattr(client_module, "check_secret", lambda *a, **k: a[0], raising=False)
    client = Client(talon_emulator.url, FIRST + char + SECOND, rate_limit=0, sleep=FakeSleep())
    with pytest.raises(DeliveryError) as info:
        client.upsert_profiles(profiles(2))
    assert type(info.value) is DeliveryError  # not retried, not "rejected", not an auth error
    text = str(info.value)
    assert text.startswith(("InvalidHeader on PUT /v2/customer_profiles (",
                            "UnicodeEncodeError on PUT /v2/customer_profiles ("))
    assert text.endswith("the request could not be sent; check the API key and the "
                         "application domain in your settings")
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert_hidden(everything_shown(info, caplog))
    assert talon_emulator.requests() == []  # nothing was sent


@responses.activate
def test_transport_errors_quoting_the_header_are_scrubbed_everywhere(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    header = f"ApiKey-v1 {KEY}"
    url = "https://x.talon.one/v2/customer_profiles/u1"
    # not retried: InvalidHeader and a ValueError from http.client both quote the header
    responses.put(url, body=requests.exceptions.InvalidHeader(f"bad header value: {header!r}"))
    responses.put(url, body=ValueError(f"Invalid header value {header.encode()!r}"))
    # retried: a proxy error that quotes the header in its reason
    responses.put(url, body=requests.exceptions.ProxyError(f"proxy said: got {header}"))
    with Client("https://x.talon.one", KEY, rate_limit=0, sleep=FakeSleep(),
                max_attempts=2) as client:
        for kind in (DeliveryError, DeliveryError, RetriesExhausted):
            with pytest.raises(kind) as info:
                client.upsert_profile("u1", {})
            for exc in chain(info.value):
                assert KEY not in f"{exc!s} {exc!r}"
            assert info.value.__context__ is None
            assert "****wxyz" in str(info.value)
    assert "proxy said: got ApiKey-v1 ****wxyz" in caplog.text  # the retry warning
    assert KEY not in caplog.text and "secret-key" not in caplog.text


@responses.activate
def test_an_error_answer_echoing_the_header_is_scrubbed() -> None:
    url = "https://x.talon.one/v2/customer_profiles/u1"
    echo = {"message": f"bad request with Authorization: ApiKey-v1 {KEY}",
            "errors": [{"title": "t", "details": f"you sent {KEY}", "source": {"pointer": KEY}}]}
    responses.put(url, status=400, json=echo)
    responses.put(url, status=500, json=echo)
    with Client("https://x.talon.one", KEY, rate_limit=0, max_attempts=1) as client:
        with pytest.raises(RejectedError) as rejected:
            client.upsert_profile("u1", {})
        with pytest.raises(RetriesExhausted):
            client.upsert_profile("u1", {})
    assert KEY not in str(rejected.value) and KEY not in json.dumps(rejected.value.errors)
    assert rejected.value.errors[0]["details"] == "you sent ****wxyz"


def test_scrub_removes_the_key_in_every_form() -> None:
    key = FIRST + "\n" + SECOND
    texts = [
        f"value: {'ApiKey-v1 ' + key!r}",      # repr-escaped, as requests quotes it
        f"value: {json.dumps(key)}",            # JSON-escaped
        " ".join(f"value: {key}".split()),      # whitespace collapsed
        f"ApiKey-v1 {key}",
    ]
    for text in texts:
        assert_hidden(scrub(text, key))
    assert scrub(f"a ApiKey-v1 {KEY} b", KEY) == "a ApiKey-v1 ****wxyz b"
    assert scrub("nothing to hide", KEY) == "nothing to hide"
    assert scrub("text", None) == "text" and scrub("text", "") == "text"


# -- item 12: ids made of dots ---------------------------------------------------------------
@pytest.mark.parametrize("iid", [".", "..", "..."])
def test_an_id_made_of_dots_reaches_its_own_profile(talon_emulator, iid) -> None:
    with client_for(talon_emulator) as client:
        answer = client.upsert_profile(iid, {"plan": "gold"})
        client.upsert_profile("a.b", {"plan": "silver"})
    assert answer["customerProfile"]["integrationId"] == iid
    assert [(r["method"], r["path"], r["status"]) for r in talon_emulator.requests()] == [
        ("PUT", f"/v2/customer_profiles/{iid}", 200),
        ("PUT", "/v2/customer_profiles/a.b", 200),
    ]
    stored = {p["integrationId"]: p["attributes"] for p in talon_emulator.profiles()}
    assert stored == {iid: {"plan": "gold"}, "a.b": {"plan": "silver"}}


@responses.activate
def test_dots_are_sent_encoded_only_when_the_id_is_all_dots() -> None:
    base = "https://x.talon.one/v2/customer_profiles/"
    for path in ("%2E", "%2E%2E", "%2E%2E%2E", "a.b", ".a", "a.", "..%2F"):
        responses.put(base + path, json={})
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        for iid in (".", "..", "...", "a.b", ".a", "a.", "../"):
            client.upsert_profile(iid, {})
        client.upsert_profile("..", {}, run_rule_engine=True)
    sent = [c.request.url.removeprefix(base) for c in responses.calls]
    assert sent == ["%2E", "%2E%2E", "%2E%2E%2E", "a.b", ".a", "a.", "..%2F",
                    "%2E%2E?runRuleEngine=true"]


def test_dry_run_shows_the_encoded_dots() -> None:
    out = io.StringIO()
    with Client.dry_run("https://demo.talon.one", KEY, out) as client:
        client.upsert_profile("..", {})
    assert json.loads(out.getvalue())["url"] == "https://demo.talon.one/v2/customer_profiles/%2E%2E"


# -- item 16: 408, Retry-After's cap, pointers that are checked ------------------------------
def test_408_is_retried_not_rejected(talon_emulator) -> None:
    talon_emulator.configure(fail_next=2, fail_status=408)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        outcome = client.upsert_profiles(profiles(10))
        talon_emulator.configure(fail_next=1, fail_status=408)
        client.upsert_profile("single", {})
    assert len(outcome.delivered) == 10 and not outcome.rejected and not outcome.failed
    assert talon_emulator.stats()["requests"] == {"408": 3, "204": 1, "200": 1}


@responses.activate
@pytest.mark.parametrize(("header", "cap", "want"), [
    ("86400", None, DEFAULT_MAX_RETRY_AFTER),
    ("Fri, 01 Jan 2100 00:00:00 GMT", None, DEFAULT_MAX_RETRY_AFTER),
    ("86400", 5.0, 5.0),
    ("3", None, 3.0),  # below the cap: waited out in full, as before
])
def test_retry_after_is_capped(header, cap, want) -> None:
    url = "https://x.talon.one/v2/customer_profiles"
    responses.put(url, status=429, headers={"Retry-After": header})
    responses.put(url, status=204)
    sleep = FakeSleep()
    kw = {} if cap is None else {"max_retry_after": cap}
    with Client("https://x.talon.one", KEY, rate_limit=0, sleep=sleep, **kw) as client:
        assert len(client.upsert_profiles(profiles(1)).delivered) == 1
    assert DEFAULT_MAX_RETRY_AFTER == 120.0
    assert len(sleep.waits) == 1 and want <= sleep.waits[0] <= max(want, 0.5)


def one_based_server(bad: set[str], first: int):
    """A bulk endpoint that refuses the profiles in ``bad`` with a pointer numbered from ``first``.

    Mimics the emulator's error bodies, but lets the pointer's numbering be
    chosen: the hypothetical Talon.One that numbers items from 1.
    """
    def callback(request):
        items = json.loads(request.body)["customerProfiles"]
        for i, item in enumerate(items):
            iid = item["integrationId"]
            if iid not in bad:
                continue
            if "bogus" in item["attributes"]:
                where, message = "attributes/bogus", "attribute 'bogus' does not exist"
            elif item["attributes"].get("age") == "old":
                where, message = "attributes/age", f"attribute age of profile '{iid}' must be a number"
            else:
                where, message = "integrationId", f"profile '{iid}' was rejected"
            body = {"message": message, "StatusCode": 400, "errors": [{
                "title": "Bad request", "details": message,
                "source": {"pointer": f"/customerProfiles/{i + first}/{where}"}}]}
            return 400, {}, json.dumps(body)
        return 204, {}, ""
    return callback


def ten_with_one_bad(kind: str, at: int) -> list[dict]:
    batch = [{"integrationId": f"u{i}", "attributes": {"n": i, "age": 30}} for i in range(10)]
    if kind == "attribute":
        batch[at]["attributes"]["bogus"] = 1
    elif kind == "value":  # every profile has "age": only the message tells which is wrong
        batch[at]["attributes"]["age"] = "old"
    return batch


@responses.activate
@pytest.mark.parametrize("kind", ["attribute", "value", "id"])
@pytest.mark.parametrize("at", [0, 3, 9])
def test_a_pointer_numbered_from_1_dead_letters_only_the_bad_profile(kind, at) -> None:
    url = "https://x.talon.one/v2/customer_profiles"
    responses.add_callback(responses.PUT, url, callback=one_based_server({f"u{at}"}, first=1))
    batch = ten_with_one_bad(kind, at)
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        outcome = client.upsert_profiles(batch)
    assert [p["integrationId"] for p, _ in outcome.rejected] == [f"u{at}"]
    assert sorted(p["integrationId"] for p in outcome.delivered) == sorted(
        f"u{i}" for i in range(10) if i != at)
    assert not outcome.failed


@responses.activate
@pytest.mark.parametrize("kind", ["attribute", "value", "id"])
def test_a_pointer_numbered_from_0_that_checks_out_is_still_a_shortcut(kind) -> None:
    url = "https://x.talon.one/v2/customer_profiles"
    responses.add_callback(responses.PUT, url, callback=one_based_server({"u3"}, first=0))
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        outcome = client.upsert_profiles(ten_with_one_bad(kind, 3))
    assert [p["integrationId"] for p, _ in outcome.rejected] == ["u3"]
    assert len(outcome.delivered) == 9
    assert len(responses.calls) == 2  # the pointer was trusted: no halving


def test_the_emulators_attribute_pointer_is_checked_and_trusted(talon_emulator) -> None:
    talon_emulator.configure(attributes=["n"])
    batch = profiles(100)
    batch[42]["attributes"]["bogus"] = True
    with client_for(talon_emulator) as client:
        outcome = client.upsert_profiles(batch)
    assert [(p["integrationId"], e.errors[0]["source"]["pointer"]) for p, e in outcome.rejected] == [
        ("u42", "/customerProfiles/42/attributes/bogus")
    ]
    assert len(outcome.delivered) == 99
    assert [r["status"] for r in talon_emulator.requests()] == [400, 204]
