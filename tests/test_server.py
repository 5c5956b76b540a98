"""`talon-classic serve` over real loopback HTTP, with the emulator as Talon.One."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from talon_classic.cli import main
from talon_classic.client import Client
from talon_classic.server import Service
from talon_classic.transform import Engine

WRITE_KEY = "wk-test-123456"
SECRET = "hook-secret"


def wait_for(check, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.fixture()
def service(talon_emulator, tmp_path: Path):
    client = Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0, max_attempts=2,
                    backoff_base=0.01, backoff_cap=0.05)
    svc = Service(str(tmp_path / "spool.db"), Engine(["email", "plan"]), client, [WRITE_KEY],
                  webhook_secret=SECRET, port=0, linger=0.05, backoff=0.1).start()
    yield svc
    svc.stop()


def basic(key: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def test_segment_analytics_python_delivers(service, talon_emulator) -> None:
    """Segment's own library, pointed at the server, unchanged."""
    from segment.analytics import Client as SegmentClient

    segment = SegmentClient(WRITE_KEY, host=service.url, sync_mode=True)
    segment.identify("u1", {"email": "a@x.io", "plan": "pro", "ignored": 1})
    segment.identify("u2", {"email": "b@x.io", "address": {"city": "Oslo"}})
    segment.track("u1", "Order Completed", {"total": 3})
    segment.flush()
    wait_for(lambda: service.spool.depth == 0 and talon_emulator.stats()["profiles"] == 2)
    assert talon_emulator.profile("u1")["attributes"] == {"email": "a@x.io", "plan": "pro"}
    assert talon_emulator.profile("u2")["attributes"] == {"email": "b@x.io"}
    metrics = requests.get(f"{service.url}/metrics").text
    assert 'talon_events_skipped_total{reason="not_identify"} 1.0' in metrics
    assert "talon_profiles_delivered_total 2.0" in metrics


def test_write_key_in_body_and_wrong_key(service) -> None:
    ok = requests.post(f"{service.url}/v1/identify",
                       json={"userId": "u9", "writeKey": WRITE_KEY, "traits": {}})
    assert (ok.status_code, ok.json()) == (200, {"success": True})
    assert requests.post(f"{service.url}/v1/identify", json={"userId": "u9"}).status_code == 401
    bad = requests.post(f"{service.url}/v1/identify", json={"userId": "u9"}, headers=basic("nope"))
    assert bad.status_code == 401
    assert WRITE_KEY not in bad.text


def test_invalid_json_and_oversize(service) -> None:
    r = requests.post(f"{service.url}/v1/batch", data=b"{nope", headers=basic(WRITE_KEY))
    assert r.status_code == 400
    big_event = {"userId": "u", "traits": {"x": "y" * 40_000}}
    r = requests.post(f"{service.url}/v1/identify", json=big_event, headers=basic(WRITE_KEY))
    assert r.status_code == 413
    r = requests.post(f"{service.url}/v1/batch", headers=basic(WRITE_KEY),
                      json={"batch": [{"userId": "u", "traits": {"x": "y" * 20_000}}] * 30})
    assert r.status_code == 413
    r = requests.post(f"{service.url}/v1/batch", headers=basic(WRITE_KEY),
                      json={"batch": [{"userId": "u", "traits": {"x": "y" * 33_000}}]})
    assert r.status_code == 413


def test_webhook_signature(service, talon_emulator) -> None:
    body = json.dumps([{"type": "identify", "userId": "w1", "traits": {"plan": "gold"}}]).encode()
    good = hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    assert requests.post(f"{service.url}/webhook", data=body,
                         headers={"X-Signature": "0" * 40}).status_code == 401
    assert requests.post(f"{service.url}/webhook", data=body).status_code == 401
    assert requests.post(f"{service.url}/webhook", data=body,
                         headers={"X-Signature": good}).status_code == 200
    wait_for(lambda: talon_emulator.profile("w1") is not None)
    assert talon_emulator.profile("w1")["attributes"] == {"plan": "gold"}


def test_duplicate_message_id_delivered_once(service, talon_emulator) -> None:
    event = {"type": "identify", "userId": "d1", "messageId": "m-1", "traits": {"plan": "a"}}
    for _ in range(3):
        assert requests.post(f"{service.url}/v1/batch", json={"batch": [event]},
                             headers=basic(WRITE_KEY)).status_code == 200
    wait_for(lambda: talon_emulator.profile("d1") is not None)
    time.sleep(0.3)
    assert talon_emulator.stats()["profile_updates"] == 1
    assert "talon_events_duplicate_total 2.0" in requests.get(f"{service.url}/metrics").text


def test_talon_down_then_recovers(service, talon_emulator) -> None:
    talon_emulator.configure(fail_next=10_000, fail_status=503)
    for i in range(20):
        r = requests.post(f"{service.url}/v1/identify", headers=basic(WRITE_KEY),
                          json={"userId": f"r{i}", "traits": {"email": f"{i}@x.io"}})
        assert r.status_code == 200  # still accepting while Talon.One is down
    time.sleep(0.5)
    assert talon_emulator.stats()["profiles"] == 0
    assert service.spool.depth == 20
    health = requests.get(f"{service.url}/health").json()
    assert health["spool_depth"] == 20 and health["last_delivery_error"]
    talon_emulator.configure(fail_next=0)
    wait_for(lambda: talon_emulator.stats()["profiles"] == 20)
    wait_for(lambda: service.spool.depth == 0)


def test_rejected_go_to_dead_letters_and_retry(service, talon_emulator, tmp_path) -> None:
    talon_emulator.configure(reject_ids=["bad"])
    for uid in ("good", "bad"):
        requests.post(f"{service.url}/v1/identify", headers=basic(WRITE_KEY),
                      json={"userId": uid, "traits": {"plan": "p"}}).raise_for_status()
    wait_for(lambda: service.spool.dead_count() == 1)
    spool = str(tmp_path / "spool.db")
    listed = CliRunner().invoke(main, ["deadletter", "list", "--spool", spool, "--json"])
    letter = json.loads(listed.output)
    assert letter["event"]["userId"] == "bad" and letter["reason"] == "rejected"
    talon_emulator.configure(reject_ids=[])
    retried = CliRunner().invoke(main, ["deadletter", "retry", "--spool", spool])
    assert "1 dead letters queued again" in retried.output
    wait_for(lambda: talon_emulator.profile("bad") is not None)


def test_back_pressure_503(talon_emulator, tmp_path: Path) -> None:
    client = Client(talon_emulator.url, "wrong-key-000", rate_limit=0)
    svc = Service(str(tmp_path / "s.db"), Engine([]), client, [WRITE_KEY], port=0,
                  max_depth=3, backoff=5).start()
    try:
        codes = [requests.post(f"{svc.url}/v1/identify", headers=basic(WRITE_KEY),
                               json={"userId": f"u{i}"}).status_code for i in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert codes[3] == 503
        r = requests.post(f"{svc.url}/v1/identify", headers=basic(WRITE_KEY), json={"userId": "x"})
        assert r.headers["Retry-After"] == "5"
    finally:
        svc.stop()


def test_health_and_metrics(service) -> None:
    assert requests.get(f"{service.url}/health").json()["status"] == "ok"
    text = requests.get(f"{service.url}/metrics").text
    for name in ("talon_events_accepted_total", "talon_spool_depth",
                 "talon_delivery_latency_seconds_bucket", "talon_request_retries_total"):
        assert name in text


@pytest.mark.timeout(120)
def test_kill_9_loses_no_acknowledged_event(talon_emulator, tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps({"apiKey": talon_emulator.api_key,
                                    "applicationDomain": talon_emulator.url,
                                    "customAttributes": ["email"]}))
    spool = tmp_path / "spool.db"

    def start() -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "talon_classic.cli", "serve", "--settings", str(settings),
             "--spool", str(spool), "--port", "0", "--write-key", WRITE_KEY, "--linger", "0.2",
             "--rate-limit", "20"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = re.search(r"http://\S+", proc.stdout.readline()).group(0)
        return proc, url

    proc, url = start()
    acked: list[str] = []
    stop = threading.Event()

    def send() -> None:
        session = requests.Session()
        i = 0
        while not stop.is_set():
            batch = [{"type": "identify", "userId": f"k{i + j}", "messageId": f"m{i + j}",
                      "traits": {"email": f"{i + j}@x.io"}} for j in range(50)]
            try:
                r = session.post(f"{url}/v1/batch", json={"batch": batch},
                                 headers=basic(WRITE_KEY), timeout=5)
            except requests.RequestException:
                return
            if r.status_code == 200:
                acked.extend(e["userId"] for e in batch)
            i += 50

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(1.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    sender.join()
    assert len(acked) > 200
    proc, url = start()
    try:
        wait_for(lambda: talon_emulator.stats()["profiles"] >= len(set(acked)), timeout=60)
        stored = {p["integrationId"] for p in talon_emulator.profiles()}
        assert set(acked) - stored == set()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # SIGTERM: a clean exit
