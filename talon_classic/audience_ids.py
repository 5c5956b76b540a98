"""The Talon.One id of another platform's audience, by that platform's id: remembered, given,
created or found.

An audience that comes from another platform (an Engage audience: platform
``segment``, its ``computation_id``) is created in Talon.One once, with
``integration`` and ``integrationId`` set, and its id remembered in the
state database. :class:`AudienceResolver` does that, in this order:

1. the ids this resolver already knows (memory), then the state database;
2. an explicit map (``audienceIds`` in the settings: the platform's id or
   another key, such as Engage's ``computation_key``, -> the Talon.One id);
3. ``POST /v2/audiences``: a new audience, whose id is remembered;
4. on 409 (it exists, created earlier by someone or something else): the
   Management API's list of audiences (``GET /v1/audiences``, read once and
   again only when the audience is not in what was read), when there is a
   management key.

Without a management key, an existing audience that is not in the map is
one clear :class:`~talon_classic.exceptions.AudienceExists` saying what to set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from talon_classic.exceptions import AudienceExists

if TYPE_CHECKING:
    from talon_classic.audience_state import AudienceState
    from talon_classic.client import Client
    from talon_classic.management import ManagementClient

#: The platform Engage audiences come from, as Talon.One's ``integration``.
SEGMENT = "segment"


def find_audience(management: ManagementClient, integration: str | None,
                  integration_id: str) -> int | None:
    """The id of the audience with this ``integration`` and ``integrationId``, via the
    Management API (every page), or None."""
    found = find_audience_object(management, integration, integration_id)
    return None if found is None else int(found["id"])


def find_audience_object(management: ManagementClient, integration: str | None,
                         integration_id: str) -> dict[str, Any] | None:
    """The whole Audience object (as the Management API lists it) with this
    ``integration`` and ``integrationId`` and an integer id, or None."""
    for audience in management.audiences():
        if (isinstance(audience, dict) and audience.get("integrationId") == integration_id
                and audience.get("integration") == integration
                and isinstance(audience.get("id"), int)
                and not isinstance(audience.get("id"), bool)):
            return audience
    return None


class AudienceResolver:
    """Finds (or creates) the Talon.One audience of one platform's audiences. Thread-safe."""

    def __init__(self, client: Client, *, integration: str = SEGMENT,
                 state: AudienceState | None = None,
                 management: ManagementClient | None = None,
                 known: Mapping[str, int] | None = None) -> None:
        self.client = client
        self.integration = integration
        self.state = state
        self.management = management
        self.known = dict(known or {})
        self._ids: dict[str, int] = {}
        self._listed: dict[str, int] | None = None
        self._lock = threading.Lock()
        #: Audiences this resolver created (integration_id -> id): for summaries.
        self.created: dict[str, int] = {}

    def resolve(self, integration_id: str, name: str, *, keys: Iterable[str] = (),
                description: str | None = None) -> int:
        """The Talon.One id of the platform's audience ``integration_id``, created as ``name``
        when there is none.

        ``keys`` are other names the explicit map may use for it (Engage's
        ``computation_key``). Raises AudienceExists when it exists but its id
        cannot be found, and whatever :meth:`Client.create_audience` raises.
        """
        with self._lock:
            found = self._ids.get(integration_id)
            if found is None and self.state is not None:
                found = self.state.audience_id_for(self.integration, integration_id)
            if found is None:
                found = next((self.known[k] for k in (integration_id, *keys) if k in self.known),
                             None)
            if found is None:
                found = self._create(integration_id, name, description)
                if self.state is not None:
                    self.state.remember_audience_id(self.integration, integration_id, found)
            self._ids[integration_id] = found
            return found

    def forget(self, integration_id: str) -> None:
        """Forget a resolved id (Talon.One said 404: the audience was deleted there)."""
        with self._lock:
            self._ids.pop(integration_id, None)
            if self._listed is not None:
                self._listed.pop(integration_id, None)
            if self.state is not None:
                self.state.forget_audience_id(self.integration, integration_id)

    def _create(self, integration_id: str, name: str, description: str | None) -> int:
        try:
            audience = self.client.create_audience(name, integration=self.integration,
                                                   integration_id=integration_id,
                                                   description=description)
        except AudienceExists as exc:
            found = self._look_up(integration_id)
            if found is not None:
                if exc.ours:  # created by an attempt of this call whose answer was lost
                    self.created[integration_id] = found
                return found
            raise AudienceExists(
                f"{exc}; its id cannot be found: "
                + ("the Management API does not list it" if self.management is not None else
                   "set managementKey (or TALON_MANAGEMENT_KEY) so it can be looked up, or map "
                   f'it in the settings: "audienceIds": {{"{integration_id}": <its id>}}'),
                self.integration, integration_id, exc.errors) from None
        self.created[integration_id] = audience.id
        return audience.id

    def _look_up(self, integration_id: str) -> int | None:
        if self.management is None:
            return None
        if self._listed is not None and integration_id in self._listed:
            return self._listed[integration_id]
        self._listed = {
            a["integrationId"]: a["id"] for a in self.management.audiences()
            if isinstance(a, dict) and a.get("integration") == self.integration
            and isinstance(a.get("integrationId"), str) and isinstance(a.get("id"), int)}
        return self._listed.get(integration_id)
