"""The client's audience methods against the emulator over real loopback HTTP (``responses``
only where a server must misbehave in a way the emulator does not)."""

from __future__ import annotations

import json
import socket
import time

import pytest
import responses
from client_helpers import KEY, FakeSleep, client_for

from talon_classic.audiences import Audience, MembershipAction
from talon_classic.client import Client
from talon_classic.exceptions import (
    AudienceExists,
    AudienceNotFound,
    AuthError,
    OutcomeUnknown,
    RejectedError,
    RetriesExhausted,
)


def adds(n: int, audience_id: int, start: int = 0) -> list[MembershipAction]:
    return [MembershipAction.add(f"u{i}", audience_id) for i in range(start, start + n)]


def test_create_returns_the_audience_with_its_id_first(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        plain = client.create_audience("VIP")
        full = client.create_audience("Churn risk", integration="segment",
                                      integration_id="aud_1", description="may leave")
    assert isinstance(plain, Audience) and plain.id == 1 and plain.name == "VIP"
    assert (plain.integration, plain.integration_id, plain.description) == (None, None, None)
    assert (full.id, full.integration, full.integration_id, full.description) == (
        2, "segment", "aud_1", "may leave")
    shown = full.as_dict()
    assert list(shown)[:2] == ["id", "name"]
    assert shown["accountId"] == 1 and shown["integrationId"] == "aud_1" and "created" in shown
    assert [a["name"] for a in talon_emulator.audiences()] == ["VIP", "Churn risk"]


def test_create_409_is_audience_exists_with_talon_ones_words_and_not_retried(talon_emulator):
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep) as client:
        client.create_audience("a", integration="segment", integration_id="x")
        with pytest.raises(AudienceExists) as info:
            client.create_audience("b", integration="segment", integration_id="x")
    exc = info.value
    assert exc.status == 409 and not sleep.waits
    assert (exc.integration, exc.audience_integration_id) == ("segment", "x")
    assert "already exists" in str(exc) and isinstance(exc, RejectedError)
    assert not exc.ours  # no attempt was lost: someone else's audience
    assert talon_emulator.stats()["requests"] == {"201": 1, "409": 1}


# -- creating and deleting are not idempotent: a lost answer is not blindly retried ----------
def statuses(emu) -> list[int]:
    return [r["status"] for r in emu.requests()]


def test_a_create_whose_answer_was_dropped_is_not_sent_again(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep) as client, \
            pytest.raises(OutcomeUnknown) as info:
        client.create_audience("Dup test")
    text = str(info.value)
    assert text.startswith("the audience may have been created: ") and "\n" not in text
    assert "not sent again" in text and isinstance(info.value, RetriesExhausted)
    assert info.value.__context__ is None and not sleep.waits
    # one audience, as the one request created it; no second one from a resend
    assert [a["name"] for a in talon_emulator.audiences()] == ["Dup test"]
    assert statuses(talon_emulator) == [201]


def test_a_create_whose_answer_timed_out_is_not_sent_again(talon_emulator) -> None:
    talon_emulator.configure(hang_next=1, hang_seconds=1.0)
    started = time.monotonic()
    with client_for(talon_emulator, read_timeout=0.2, sleep=FakeSleep()) as client, \
            pytest.raises(OutcomeUnknown) as info:
        client.create_audience("Slow")
    assert time.monotonic() - started < 1.0 and "ReadTimeout on POST /v2/audiences" in str(
        info.value)
    assert client.stats.snapshot()["requests"] == 1
    time.sleep(1.2)  # the hung request lands late, as Talon.One's would: still one audience
    assert [a["name"] for a in talon_emulator.audiences()] == ["Slow"]


def test_a_create_without_an_integration_id_still_retries_what_was_not_carried_out(
        talon_emulator) -> None:
    talon_emulator.configure(fail_next=2, fail_status=503)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        created = client.create_audience("Busy")
    assert created.id == 1 and statuses(talon_emulator) == [503, 503, 201]
    talon_emulator.configure(fail_next=1, fail_status=429)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        assert client.create_audience("Limited").id == 2
    # a connection that could not be made sent nothing: retried through every attempt
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    with Client(closed, KEY, rate_limit=0, sleep=FakeSleep()) as client, \
            pytest.raises(RetriesExhausted) as info:
        client.create_audience("Nowhere")
    assert not isinstance(info.value, OutcomeUnknown) and client.stats.requests == 8


def test_a_dropped_create_with_an_integration_id_is_ours_on_the_409(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    with client_for(talon_emulator, sleep=FakeSleep()) as client, \
            pytest.raises(AudienceExists) as info:
        client.create_audience("Dup test", integration="segment", integration_id="aud_dup")
    exc = info.value
    assert exc.ours and (exc.integration, exc.audience_integration_id) == ("segment", "aud_dup")
    assert str(exc).startswith("the audience was created by an attempt whose answer was lost")
    assert [(a["id"], a["integrationId"]) for a in talon_emulator.audiences()] == [
        (1, "aud_dup")]
    assert statuses(talon_emulator) == [201, 409]


def test_a_create_with_an_integration_id_is_resent_only_once(talon_emulator) -> None:
    talon_emulator.configure(hang_next=5, hang_seconds=0.6, hang_apply=False)
    started = time.monotonic()
    with client_for(talon_emulator, read_timeout=0.2, sleep=FakeSleep()) as client, \
            pytest.raises(OutcomeUnknown) as info:
        client.create_audience("Hung", integration_id="aud_hung")
    assert time.monotonic() - started < 2.0
    assert client.stats.snapshot()["by_status"] == {"ReadTimeout": 2}
    assert "integrationId 'aud_hung' is safe" in str(info.value)


def test_a_resend_that_creates_is_the_audience(talon_emulator) -> None:
    # the lost attempt was not carried out (a 504 from a gateway that handled nothing)
    talon_emulator.configure(hang_next=1, hang_seconds=0, hang_apply=False)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        created = client.create_audience("Gated", integration_id="aud_g")
    assert created.id == 1 and statuses(talon_emulator) == [504, 201]


def test_a_delete_whose_answer_was_dropped_is_done_on_the_404(talon_emulator) -> None:
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        audience = client.create_audience("Gone")
        talon_emulator.configure(drop_next=1)
        client.delete_audience(audience.id)  # the resend's 404: the dropped attempt deleted it
        assert talon_emulator.audiences() == []
        with pytest.raises(AudienceNotFound):  # a plain 404 is still one
            client.delete_audience(audience.id)
    assert statuses(talon_emulator) == [201, 200, 404, 404]


def test_a_delete_that_hangs_is_resent_only_once(talon_emulator) -> None:
    with client_for(talon_emulator, read_timeout=0.2, sleep=FakeSleep()) as client:
        audience = client.create_audience("Stuck")
        talon_emulator.configure(hang_next=5, hang_seconds=0.6, hang_apply=False)
        with pytest.raises(OutcomeUnknown) as info:
            client.delete_audience(audience.id)
    assert str(info.value).startswith(f"audience {audience.id} may have been deleted: ")
    assert client.stats.snapshot()["by_status"] == {"201": 1, "ReadTimeout": 2}


def test_a_bad_name_is_rejected_with_the_pointer(talon_emulator) -> None:
    with client_for(talon_emulator) as client, pytest.raises(RejectedError) as info:
        client.create_audience("  ")
    assert info.value.status == 400 and not isinstance(info.value, AudienceExists)
    assert info.value.errors[0]["source"]["pointer"] == "/name"


def test_rename_delete_and_clear(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        first = client.create_audience("old")
        second = client.create_audience("other")
        renamed = client.rename_audience(first.id, "new")
        assert (renamed.id, renamed.name) == (first.id, "new")
        client.update_memberships(adds(3, first.id) + adds(2, second.id))
        client.clear_audience(first.id)
        assert talon_emulator.audience_members(first.id) == []
        assert talon_emulator.audience_members(second.id) == ["u0", "u1"]
        client.delete_audience(second.id)
    assert [(a["id"], a["name"]) for a in talon_emulator.audiences()] == [(first.id, "new")]


@pytest.mark.parametrize("call", ["rename", "delete", "clear"])
def test_an_unknown_audience_is_audience_not_found(talon_emulator, call) -> None:
    with client_for(talon_emulator, sleep=FakeSleep()) as client, \
            pytest.raises(AudienceNotFound) as info:
        if call == "rename":
            client.rename_audience(99, "x")
        elif call == "delete":
            client.delete_audience(99)
        else:
            client.clear_audience(99)
    assert info.value.audience_id == 99 and info.value.status == 404
    assert "audience 99 does not exist" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_audience_id_must_be_an_integer(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        for bad in ("1", True, 1.0):
            with pytest.raises(TypeError):
                client.delete_audience(bad)  # type: ignore[arg-type]
    assert talon_emulator.stats()["requests"] == {}


def test_memberships_go_1000_a_request_in_order(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        audience = client.create_audience("big")
        outcome = client.update_memberships(adds(2500, audience.id))
        later = client.update_memberships(
            [MembershipAction.delete("u0", audience.id), MembershipAction.add("u0", audience.id),
             MembershipAction.delete("u1", audience.id)])
    assert len(outcome.delivered) == 2500 and not outcome.rejected and not outcome.failed
    assert [r["profiles"] for r in talon_emulator.requests()[1:4]] == [1000, 1000, 500]
    assert len(later.delivered) == 3
    members = talon_emulator.audience_members(audience.id)
    assert len(members) == 2499 and "u0" in members and "u1" not in members
    # add creates a missing profile, as in Talon.One
    assert talon_emulator.profile("u2499") is not None
    assert talon_emulator.stats()["audience_actions"] == 2503


def test_a_rejected_action_is_isolated_and_the_rest_delivered(talon_emulator) -> None:
    talon_emulator.configure(reject_ids=["u42"])
    with client_for(talon_emulator) as client:
        audience = client.create_audience("a")
        outcome = client.update_memberships(adds(100, audience.id))
    assert [(a.integration_id, e.integration_id, e.status) for a, e in outcome.rejected] == [
        ("u42", "u42", 400)]
    assert outcome.rejected[0][1].errors[0]["source"]["pointer"] == "/data/42/profileIntegrationId"
    assert len(outcome.delivered) == 99 and not outcome.unknown_audiences
    assert len(talon_emulator.audience_members(audience.id)) == 99
    # the emulator's pointer names the profile, so it is trusted: no halving
    assert [r["status"] for r in talon_emulator.requests()] == [201, 400, 204]


def one_based_memberships(bad: set[str]):
    """A memberships endpoint that refuses ``bad`` profiles with a pointer numbered from 1."""
    def callback(request):
        items = json.loads(request.body)["data"]
        for i, item in enumerate(items):
            if item["profileIntegrationId"] in bad:
                body = {"message": "invalid action", "StatusCode": 400, "errors": [{
                    "title": "Bad request", "details": "profile is blocked",
                    "source": {"pointer": f"/data/{i + 1}/profileIntegrationId"}}]}
                return 400, {}, json.dumps(body)
        return 204, {}, ""
    return callback


@responses.activate
@pytest.mark.parametrize("at", [0, 5, 9])
def test_a_pointer_that_names_no_profile_is_not_trusted(at) -> None:
    url = "https://x.talon.one/v2/customer_audiences"
    responses.add_callback(responses.POST, url, callback=one_based_memberships({f"u{at}"}))
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        outcome = client.update_memberships(adds(10, 7))
    assert [a.integration_id for a, _ in outcome.rejected] == [f"u{at}"]
    assert sorted(a.integration_id for a in outcome.delivered) == sorted(
        f"u{i}" for i in range(10) if i != at)


@responses.activate
def test_membership_request_bytes() -> None:
    url = "https://x.talon.one/v2/customer_audiences"
    responses.add(responses.POST, url, status=204)
    with Client("https://x.talon.one", KEY, rate_limit=0) as client:
        client.update_memberships([MembershipAction.add("a/b", 3), MembershipAction.delete("c", 3)])
    request = responses.calls[0].request
    assert request.headers["Authorization"] == f"ApiKey-v1 {KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.body) == {"data": [
        {"action": "add", "profileIntegrationId": "a/b", "audienceId": 3},
        {"action": "delete", "profileIntegrationId": "c", "audienceId": 3}]}


def test_an_unknown_audience_rejects_only_its_own_actions(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        audience = client.create_audience("real")
        mixed = [MembershipAction.add(f"u{i}", audience.id if i % 2 else 999)
                 for i in range(1500)]
        outcome = client.update_memberships(mixed)
    assert outcome.unknown_audiences == {999}
    assert {a.audience_id for a, _ in outcome.rejected} == {999}
    assert all(isinstance(e, AudienceNotFound) and e.integration_id == a.integration_id
               for a, e in outcome.rejected)
    assert len(outcome.rejected) == 750 and len(outcome.delivered) == 750
    assert len(talon_emulator.audience_members(audience.id)) == 750
    # first request: 404, split by audience in order of appearance (999 first: 404, then
    # the real one: 204); the second request carries only the audience that exists
    assert [(r["status"], r["profiles"]) for r in talon_emulator.requests()[1:]] == [
        (404, 1000), (404, 500), (204, 500), (204, 250)]


def test_memberships_are_retried_and_rate_limited_like_profile_upserts(talon_emulator) -> None:
    talon_emulator.configure(fail_next=2, fail_status=429)
    sleep = FakeSleep()
    with client_for(talon_emulator, sleep=sleep) as client:
        audience = client.create_audience("a")
        outcome = client.update_memberships(adds(10, audience.id))
    assert len(outcome.delivered) == 10 and len(sleep.waits) == 2
    assert client.stats.retries == 2
    talon_emulator.configure(fail_next=8, fail_status=503)
    with client_for(talon_emulator, sleep=FakeSleep()) as client:
        outcome = client.update_memberships(adds(5, audience.id))
    assert len(outcome.failed) == 5 and not outcome.delivered


def test_memberships_share_the_clients_rate_limiter(talon_emulator) -> None:
    class Counting:
        calls = 0

        def acquire(self, n: float = 1) -> float:
            Counting.calls += 1
            return 0.0

    with client_for(talon_emulator, limiter=Counting()) as client:  # type: ignore[arg-type]
        audience = client.create_audience("a")
        client.update_memberships(adds(2001, audience.id))
        client.upsert_profiles([{"integrationId": "p", "attributes": {}}])
    assert Counting.calls == 1 + 3 + 1


def test_a_wrong_key_stops_the_call(talon_emulator) -> None:
    with Client(talon_emulator.url, "wrong-key-00000000", rate_limit=0) as client, \
            pytest.raises(AuthError) as info:
        client.update_memberships(adds(3, 1))
    assert "wrong-key" not in str(info.value)
