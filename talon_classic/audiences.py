"""Talon.One audiences as values: :class:`Audience`, :class:`MembershipAction`, :class:`MembershipOutcome`.

An audience is a list of customer profiles that campaigns target directly.
The Integration API creates, renames, deletes and empties audiences and
changes memberships (``POST /v2/customer_audiences``, up to 1000 actions a
request); listing them is the Management API's. These are the typed values
:class:`~talon_classic.client.Client` takes and returns, shared by
``talon-classic audience`` and anything else that changes memberships
(Engage audiences, through the delivery ledger).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from talon_classic.exceptions import (
    AudienceNotFound,
    DeliveryError,
    RejectedError,
    RetriesExhausted,
)

#: The two membership actions, as Talon.One spells them.
ADD: Literal["add"] = "add"
DELETE: Literal["delete"] = "delete"
ACTIONS = (ADD, DELETE)


@dataclass(frozen=True)
class Audience:
    """One Talon.One audience: the fields talon-classic uses, typed, and the whole object.

    ``raw`` is the Audience object exactly as Talon.One sent it (``accountId``,
    ``created``, ``sandbox``, ``lastUpdate``... whatever it has).
    """

    id: int
    name: str
    integration: str | None = None
    integration_id: str | None = None
    description: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_api(cls, data: Any, where: str = "Talon.One") -> Audience:
        """An Audience from Talon.One's object; DeliveryError when it is not one."""
        if not isinstance(data, dict):
            raise DeliveryError(f"{where} answered without an audience object")
        audience_id, name = data.get("id"), data.get("name")
        if isinstance(audience_id, bool) or not isinstance(audience_id, int) or not isinstance(
                name, str):
            raise DeliveryError(f"{where} answered with an audience without an integer id and "
                                "a name")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        return cls(audience_id, name, text("integration"), text("integrationId"),
                   text("description"), dict(data))

    def as_dict(self) -> dict[str, Any]:
        """Talon.One's object with ``id`` first, then ``name``, then the rest as sent."""
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        for key, value in self.raw.items():
            out.setdefault(key, value)
        for key, value in (("integration", self.integration),
                           ("integrationId", self.integration_id),
                           ("description", self.description)):
            if value is not None:
                out.setdefault(key, value)
        return out


class MembershipAction(NamedTuple):
    """Add a profile to an audience, or remove it: one item of ``POST /v2/customer_audiences``.

    ``action`` is ``"add"`` or ``"delete"`` (Talon.One's words). ``add``
    creates a missing profile. A tuple, so millions stay cheap and hashable.
    """

    action: Literal["add", "delete"]
    integration_id: str
    audience_id: int

    @classmethod
    def add(cls, integration_id: str, audience_id: int) -> MembershipAction:
        """``integration_id`` joins ``audience_id``."""
        return cls(ADD, integration_id, audience_id)

    @classmethod
    def delete(cls, integration_id: str, audience_id: int) -> MembershipAction:
        """``integration_id`` leaves ``audience_id``."""
        return cls(DELETE, integration_id, audience_id)

    def as_json(self) -> dict[str, Any]:
        """The item as Talon.One takes it: ``{"action", "profileIntegrationId", "audienceId"}``."""
        return {"action": self.action, "profileIntegrationId": self.integration_id,
                "audienceId": self.audience_id}


@dataclass
class MembershipOutcome:
    """What became of each action of a :meth:`~talon_classic.client.Client.update_memberships` call.

    ``delivered``: acknowledged by Talon.One. ``rejected``: refused, each with
    its own error (an :class:`~talon_classic.exceptions.AudienceNotFound` when
    its audience does not exist). ``failed``: retries ran out.
    """

    delivered: list[MembershipAction] = field(default_factory=list)
    rejected: list[tuple[MembershipAction, RejectedError]] = field(default_factory=list)
    failed: list[tuple[MembershipAction, RetriesExhausted]] = field(default_factory=list)

    @property
    def unknown_audiences(self) -> set[int]:
        """The audience ids Talon.One answered 404 for (their actions are in ``rejected``)."""
        return {exc.audience_id for _, exc in self.rejected if isinstance(exc, AudienceNotFound)}
