"""AudienceResolver: a platform's audience -> its Talon.One id, created once, found on 409."""

from __future__ import annotations

import pytest

from talon_classic.audience_ids import AudienceResolver, find_audience
from talon_classic.audience_state import AudienceState
from talon_classic.client import Client
from talon_classic.exceptions import AudienceExists
from talon_classic.management import ManagementClient


def client_for(emu) -> Client:
    return Client(emu.url, emu.api_key, rate_limit=0)


def management_for(emu) -> ManagementClient:
    return ManagementClient(emu.url, emu.management_key, rate_limit=0)


def test_created_once_and_remembered_in_the_state(talon_emulator, tmp_path) -> None:
    with AudienceState(tmp_path / "s.db") as state, client_for(talon_emulator) as client:
        first = AudienceResolver(client, state=state)
        audience_id = first.resolve("aud_vip", "vip_users")
        assert first.resolve("aud_vip", "vip_users") == audience_id
        assert first.created == {"aud_vip": audience_id}
        again = AudienceResolver(client, state=state)  # another run, same state database
        assert again.resolve("aud_vip", "vip_users") == audience_id and not again.created
    assert talon_emulator.audiences() == [
        {"id": audience_id, "name": "vip_users", "integrationId": "aud_vip", "members": 0}]
    assert talon_emulator.stats()["requests"] == {"201": 1}


def test_409_is_resolved_through_the_management_api(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        client.create_audience("other", integration="braze", integration_id="aud_1")
        existing = client.create_audience("vip", integration="segment", integration_id="aud_1")
        resolver = AudienceResolver(client, management=management_for(talon_emulator))
        assert resolver.resolve("aud_1", "vip") == existing.id
        assert find_audience(management_for(talon_emulator), "braze", "aud_1") == 1
        assert find_audience(management_for(talon_emulator), "segment", "nope") is None


def test_409_without_a_way_to_find_it_is_one_clear_error(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        client.create_audience("vip", integration="segment", integration_id="aud_1")
        with pytest.raises(AudienceExists) as info:
            AudienceResolver(client).resolve("aud_1", "vip")
    message = str(info.value)
    assert "(409)" in message and "managementKey" in message
    assert '"audienceIds": {"aud_1": <its id>}' in message


def test_the_explicit_map_by_id_or_key_sends_nothing(talon_emulator) -> None:
    with client_for(talon_emulator) as client:
        resolver = AudienceResolver(client, known={"vip_users": 42, "aud_x": 7})
        assert resolver.resolve("aud_vip", "VIP", keys=["vip_users"]) == 42
        assert resolver.resolve("aud_x", "X") == 7
    assert talon_emulator.stats()["requests"] == {}


def test_forget_lets_a_deleted_audience_be_created_again(talon_emulator, tmp_path) -> None:
    with AudienceState(tmp_path / "s.db") as state, client_for(talon_emulator) as client:
        resolver = AudienceResolver(client, state=state)
        old = resolver.resolve("aud_1", "vip")
        client.delete_audience(old)
        resolver.forget("aud_1")
        assert state.audience_id_for("segment", "aud_1") is None
        new = resolver.resolve("aud_1", "vip")
    assert new != old


def test_an_audience_created_by_a_lost_attempt_counts_as_created(talon_emulator) -> None:
    talon_emulator.configure(drop_next=1)
    with Client(talon_emulator.url, talon_emulator.api_key, rate_limit=0,
                sleep=lambda _s: None) as client, management_for(talon_emulator) as management:
        resolver = AudienceResolver(client, management=management)
        audience_id = resolver.resolve("aud_lost", "lost")
    assert resolver.created == {"aud_lost": audience_id}
    assert [a["id"] for a in talon_emulator.audiences()] == [audience_id]
