"""The Management API client: request building, paging, limiting, retries, refused keys.

These are unit tests of request building with ``responses`` (the emulator
does not serve the Management API yet); the end-to-end tests against the
emulator come with its ``/v1`` endpoints. Time is fake: ``sleep`` advances
``clock``, so the 3 requests/s limit is measured without waiting.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from hostile_http import HostileServer, deep, hostile_server

from talon_classic.exceptions import (
    AuthError,
    DeliveryError,
    RejectedError,
    RetriesExhausted,
    SettingsError,
)
from talon_classic.management import ManagementClient
from talon_classic.settings import Settings

BASE = "https://acme.talon.one"
MKEY = "mk-SECRET-9876543210wxyz"


class FakeTime:
    """A clock that only moves when slept on; every wait is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


def client(fake: FakeTime | None = None, **kw: Any) -> ManagementClient:
    fake = fake or FakeTime()
    return ManagementClient(BASE, MKEY, sleep=fake.sleep, clock=fake.clock, **kw)


def attributes(n: int, entity: str = "CustomerProfile") -> list[dict[str, Any]]:
    return [{"id": i, "entity": entity, "name": f"attr{i}", "type": "string", "kind": "custom"}
            for i in range(n)]


def serve_pages(items: list[dict[str, Any]], fake: FakeTime | None = None, *,
                max_page: int | None = None, total: bool = True, has_more: bool = False,
                path: str = "/v1/attributes") -> list[float]:
    """Answer GET ``path`` from ``items`` by pageSize/skip; return the fake time of each request."""
    seen: list[float] = []

    def answer(request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        import json

        seen.append(fake.now if fake else 0.0)
        query = parse_qs(urlsplit(request.url or "").query)
        size, skip = int(query["pageSize"][0]), int(query["skip"][0])
        if max_page:
            size = min(size, max_page)
        page = items[skip:skip + size]
        body: dict[str, Any] = {"data": page}
        if total:
            body["totalResultSize"] = len(items)
        if has_more:
            body["hasMore"] = skip + len(page) < len(items)
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    responses.add_callback(responses.GET, BASE + path, callback=answer)
    return seen


@responses.activate
def test_request_building() -> None:
    serve_pages(attributes(2))
    schema = client().attributes()
    assert dict(schema) == {"attr0": "string", "attr1": "string"}
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == f"ManagementKey-v1 {MKEY}"
    assert sent.headers["User-Agent"].startswith("talon-classic/")
    assert parse_qs(urlsplit(sent.url).query) == {
        "entity": ["CustomerProfile"], "pageSize": ["1000"], "skip": ["0"]}
    assert len(responses.calls) == 1  # a short page with the total reached: done
    assert schema.source == f"{BASE}/v1/attributes"


@responses.activate
def test_paging_past_1000_at_3_requests_per_second() -> None:
    fake = FakeTime()
    seen = serve_pages(attributes(2500), fake)
    schema = client(fake).attributes()
    assert len(schema) == 2500 and "attr2499" in schema
    skips = [parse_qs(urlsplit(c.request.url).query)["skip"][0] for c in responses.calls]
    assert skips == ["0", "1000", "2000"]
    gaps = [b - a for a, b in zip(seen, seen[1:], strict=False)]
    assert all(gap >= 1 / 3 - 1e-9 for gap in gaps), gaps
    assert sum(fake.waits) == pytest.approx(2 / 3)


@responses.activate
def test_exactly_a_full_page_stops_on_the_total() -> None:
    serve_pages(attributes(1000))
    assert len(client().attributes()) == 1000
    assert len(responses.calls) == 1


@responses.activate
def test_a_server_that_caps_the_page_size_is_still_read_to_the_end() -> None:
    serve_pages(attributes(120), max_page=50)
    assert len(client().attributes()) == 120
    assert len(responses.calls) == 3


@responses.activate
def test_without_a_total_a_short_page_ends_the_list() -> None:
    serve_pages(attributes(1500), total=False)
    assert len(client().attributes()) == 1500
    assert len(responses.calls) == 2


@responses.activate
def test_other_entities_are_left_out() -> None:
    serve_pages(attributes(2) + [{"entity": "Event", "name": "x", "type": "number"}])
    assert list(client().attributes()) == ["attr0", "attr1"]


@responses.activate
def test_audiences_follow_has_more() -> None:
    audiences = [{"id": i, "name": f"a{i}"} for i in range(1203)]
    serve_pages(audiences, total=False, has_more=True, path="/v1/audiences")
    assert [a["id"] for a in client().audiences()] == list(range(1203))
    assert len(responses.calls) == 2


@responses.activate
def test_has_more_wins_over_a_short_page() -> None:
    members = [{"integrationId": f"u{i}"} for i in range(70)]
    serve_pages(members, total=False, has_more=True, max_page=30,
                path="/v1/audiences/42/memberships")
    assert len(list(client().audience_memberships(42))) == 70
    assert len(responses.calls) == 3


@responses.activate
def test_unknown_audience_is_rejected() -> None:
    responses.get(BASE + "/v1/audiences/7/memberships", status=404,
                  json={"message": "audience 7 not found", "StatusCode": 404})
    with pytest.raises(RejectedError, match="audience 7 not found") as info:
        list(client().audience_memberships(7))
    assert info.value.status == 404


@responses.activate
def test_wrong_key_is_explained_in_one_line_without_the_key(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    responses.get(BASE + "/v1/attributes", status=401, json={"message": "unauthorized"})
    mc = client()
    with pytest.raises(AuthError) as info:
        mc.attributes()
    text = str(info.value)
    assert text == (
        "the management key was refused (401): create one in Campaign Manager > Account > "
        "Tools > Management API keys with read access to attributes, and check the "
        "application domain"
    )
    assert info.value.status == 401 and len(responses.calls) == 1  # never retried
    assert MKEY not in text and MKEY not in repr(mc) and MKEY not in caplog.text
    assert repr(mc) == f"ManagementClient('{BASE}', auth='ManagementKey-v1 ****wxyz')"


@responses.activate
def test_key_without_access_is_explained() -> None:
    responses.get(BASE + "/v1/audiences", status=403, json={"message": "forbidden"})
    with pytest.raises(AuthError, match=r"may not read audiences \(403\)"):
        list(client().audiences())


@responses.activate
def test_429_and_5xx_are_retried_honouring_retry_after() -> None:
    fake = FakeTime()
    url = BASE + "/v1/attributes"
    responses.get(url, status=429, headers={"Retry-After": "2"})
    responses.get(url, status=503)
    responses.get(url, json={"totalResultSize": 1, "data": attributes(1)})
    assert len(client(fake, rate_limit=0).attributes()) == 1
    assert len(responses.calls) == 3
    assert fake.waits[0] >= 2


@responses.activate
def test_retry_after_is_capped() -> None:
    fake = FakeTime()
    url = BASE + "/v1/attributes"
    responses.get(url, status=429, headers={"Retry-After": "86400"})
    responses.get(url, json={"data": []})
    client(fake, rate_limit=0, retry_after_cap=60).attributes()
    assert 60 <= fake.waits[0] <= 60.5


@responses.activate
def test_retries_run_out() -> None:
    fake = FakeTime()
    responses.get(BASE + "/v1/attributes", status=502)
    with pytest.raises(RetriesExhausted, match="gave up after 3 attempts: last 502"):
        client(fake, rate_limit=0, max_attempts=3).attributes()
    assert len(responses.calls) == 3


@responses.activate
def test_not_a_talon_one_answer() -> None:
    responses.get(BASE + "/v1/attributes", body="<html>hello</html>")
    with pytest.raises(DeliveryError, match="without JSON: is https://acme.talon.one a Talon.One"):
        client().attributes()
    responses.replace(responses.GET, BASE + "/v1/attributes", json={"items": []})
    with pytest.raises(DeliveryError, match="without a data list"):
        client().attributes()


@responses.activate
def test_redirect_is_reported() -> None:
    responses.get(BASE + "/v1/attributes", status=301, headers={"Location": "https://x"})
    with pytest.raises(DeliveryError, match=r"redirected \(301\)"):
        client().attributes()


def test_unsendable_keys_are_refused_without_showing_them() -> None:
    for bad in (MKEY + "\n", "mk\x00" + MKEY, " " + MKEY):
        with pytest.raises(SettingsError) as info:
            ManagementClient(BASE, bad)
        assert MKEY not in str(info.value)
    with pytest.raises(SettingsError, match="must not be empty"):
        ManagementClient(BASE, "")


def test_from_settings() -> None:
    with pytest.raises(SettingsError, match="managementKey: missing .*TALON_MANAGEMENT_KEY"):
        ManagementClient.from_settings(Settings(application_domain=BASE))
    with pytest.raises(SettingsError, match="applicationDomain: missing"):
        ManagementClient.from_settings(Settings(management_key=MKEY))
    mc = ManagementClient.from_settings(Settings(application_domain=BASE, management_key=MKEY))
    assert mc.base_url == BASE and mc.limiter.rate == 3.0


def test_a_callers_session_is_never_given_the_key() -> None:
    session = requests.Session()
    with ManagementClient(BASE, MKEY, session=session):
        pass
    assert "Authorization" not in session.headers


def test_an_error_answer_that_echoes_the_key_never_shows_it(caplog) -> None:
    """A proxy or gateway may quote the Authorization header in its error: scrubbed,
    in the exception and in the retry warnings (real HTTP on 127.0.0.1)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            status = 503 if self.path.startswith("/v1/audiences") else 400
            body = json.dumps({"message": f"bad header {self.headers['Authorization']!r}"})
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    caplog.set_level(logging.DEBUG)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mc = ManagementClient(f"http://127.0.0.1:{server.server_port}", MKEY,
                              sleep=lambda s: None, max_attempts=2)
        with pytest.raises(RejectedError) as rejected:
            mc.attributes()
        with pytest.raises(RetriesExhausted) as exhausted:
            list(mc.audiences())
    finally:
        server.shutdown()
        server.server_close()
    for text in (str(rejected.value), str(exhausted.value), caplog.text):
        assert MKEY not in text and "9876543210" not in text, text
    assert "****wxyz" in str(rejected.value)


# -- answers a misbehaving server gives, from a real HTTP server on 127.0.0.1 ----------------


def local(server: HostileServer, **kw: Any) -> ManagementClient:
    return ManagementClient(server.url, MKEY, rate_limit=0, max_attempts=1, **kw)


def test_an_answer_nested_100000_deep_is_one_line() -> None:
    with hostile_server(lambda *_: (200, deep())) as server:
        with pytest.raises(DeliveryError) as info:
            local(server).attributes()
    assert str(info.value) == (
        f"GET /v1/attributes answered 200 without JSON: is {server.url} a Talon.One "
        "deployment? (nested too deeply (more than 512 levels))")


def test_an_error_answer_nested_deeply_is_its_status_line() -> None:
    with hostile_server(lambda *_: (400, deep())) as server:
        with pytest.raises(RejectedError) as info:
            list(local(server).audiences())
    assert str(info.value) == "400 Bad Request"


def one_item_pages(total: int | None = None, same: bool = False):
    """Every page has one item and ``hasMore: true``: the list never ends."""

    def answer(method: str, path: str, query: dict[str, str]) -> tuple[int, bytes]:
        n = 0 if same else int(query["skip"])
        body: dict[str, Any] = {"hasMore": True,
                                "data": [{"id": n + 1, "name": f"a{n}", "created": "x"}]}
        if total is not None:
            body["totalResultSize"] = total
        return 200, json.dumps(body).encode()

    return answer


def test_has_more_without_end_stops_at_the_page_cap() -> None:
    with hostile_server(one_item_pages()) as server:
        with pytest.raises(DeliveryError) as info:
            list(local(server, max_pages=50).audiences())
    assert str(info.value) == ("GET /v1/audiences still had more after 50 pages (50 items): "
                               "stopped reading, the list is not complete")
    assert len(server.requests) == 50


def test_a_page_that_repeats_the_one_before_stops_the_list() -> None:
    with hostile_server(one_item_pages(same=True)) as server:
        with pytest.raises(DeliveryError) as info:
            list(local(server).audiences())
    assert str(info.value) == ("GET /v1/audiences answered the same page again at skip=1 (the "
                               "server ignores skip): stopped reading, the list is not complete")
    assert len(server.requests) == 2


def test_has_more_past_the_total_stops_at_the_total(caplog) -> None:
    with hostile_server(one_item_pages(total=3)) as server:
        with caplog.at_level(logging.WARNING, "talon_classic.management"):
            items = list(local(server).audiences())
    assert [a["id"] for a in items] == [1, 2, 3] and len(server.requests) == 3
    assert caplog.messages == ["GET /v1/audiences said hasMore after all 3 items of its "
                               "totalResultSize: stopped there"]
