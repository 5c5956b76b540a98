"""Engage audiences as Talon.One audience memberships: which events say "u entered/left X".

The classic destination turns an Engage audience into a boolean attribute
(``vip_users: true``), and so does talon-classic by default
(``engageAudiences: attributes``). With ``memberships`` (or ``both``) the
same events also say that a user joined or left a Talon.One audience:

* an Engage audience identify: ``context.personas.computation_class`` is
  ``audience``, and ``traits[computation_key]`` is true (joined) or false
  (left), or the strings ``"true"``/``"false"``, as the attribute takes;
* Engage's track events ``Audience Entered`` and ``Audience Exited``, with
  the same ``context.personas`` (``properties.audience_key`` names the
  audience when ``computation_key`` is missing).

The Talon.One audience is the one whose ``integrationId`` is the event's
``context.personas.computation_id`` (``integration`` ``segment``), named
the ``computation_key``; :mod:`talon_classic.memberships` finds or creates
it and delivers the actions. An event without a ``computation_id`` cannot
name its audience, so it stays what it is in ``attributes`` mode (an
identify keeps its attribute, a track is not an identify).

This module only recognises; it is pure (no I/O), like
:mod:`talon_classic.transform`, whose :class:`~talon_classic.transform.Engine`
calls it, as does the delivery (which finds a batch's actions again in its
source events).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

from talon_classic.audiences import ADD, DELETE

#: Engage's track events for a user entering and leaving an audience.
ENTERED = "Audience Entered"
EXITED = "Audience Exited"
#: ``engageAudiences`` values: the classic attribute, memberships instead, or both.
ATTRIBUTES = "attributes"
MEMBERSHIPS = "memberships"
BOTH = "both"


class EngageMembership(NamedTuple):
    """One event's "this user joined (``add``) or left (``delete``) this Engage audience"."""

    action: Literal["add", "delete"]
    computation_id: str
    computation_key: str

    def as_dict(self) -> dict[str, str]:
        """The shape ``talon-classic transform`` shows: ``{"action", "audience", "computation_id"}``."""
        return {"action": self.action, "audience": self.computation_key,
                "computation_id": self.computation_id}


def audience_value(value: Any) -> bool | None:
    """An Engage audience trait's value as a boolean (``"true"``/``"false"`` too), or None."""
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value if isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _personas(event: Mapping[str, Any]) -> dict[str, Any] | None:
    """``context.personas`` of an Engage *audience* event that has a ``computation_id``."""
    context = event.get("context")
    personas = context.get("personas") if isinstance(context, dict) else None
    if (not isinstance(personas, dict) or personas.get("computation_class") != "audience"
            or _text(personas.get("computation_id")) is None):
        return None
    return personas


def is_audience_track(event: Any) -> bool:
    """Is this an ``Audience Entered``/``Audience Exited`` track naming its audience?"""
    return track_membership(event) is not None


def track_membership(event: Any) -> EngageMembership | None:
    """The membership an ``Audience Entered``/``Exited`` track says, or None if it is not one."""
    if not isinstance(event, dict):
        return None
    kind, name = event.get("type"), event.get("event")
    if not (isinstance(kind, str) and kind.lower() == "track") or name not in (ENTERED, EXITED):
        return None
    personas = _personas(event)
    if personas is None:
        return None
    computation_id: str = personas["computation_id"]
    key = _text(personas.get("computation_key"))
    if key is None:
        properties = event.get("properties")
        key = _text(properties.get("audience_key")) if isinstance(properties, dict) else None
    return EngageMembership(ADD if name == ENTERED else DELETE, computation_id, key
                            or computation_id)


def identify_membership(event: Any) -> EngageMembership | None:
    """The membership an Engage audience identify says, or None if it says none.

    None too when its value is not a boolean (the engine drops that
    attribute as ``invalid_audience_value``) or it has no ``computation_id``.
    """
    if not isinstance(event, dict):
        return None
    personas = _personas(event)
    key = _text(personas.get("computation_key")) if personas is not None else None
    if personas is None or key is None:
        return None
    computation_id: str = personas["computation_id"]
    if "traits" in event:
        traits = event["traits"]
    else:
        context = event.get("context")
        traits = context.get("traits") if isinstance(context, dict) else None
    if not isinstance(traits, dict) or key not in traits:
        return None
    joined = audience_value(traits[key])
    if joined is None:
        return None
    return EngageMembership(ADD if joined else DELETE, computation_id, key)


def membership_of(event: Any) -> EngageMembership | None:
    """What an event says about an Engage audience membership (identify or track), or None.

    It does not check what the engine checks of every event (``integrations``,
    ``userId``): ask the engine whether the event is kept first.
    """
    if not isinstance(event, dict):
        return None
    kind = event.get("type")
    if kind is None or (isinstance(kind, str) and kind.lower() == "identify"):
        return identify_membership(event)
    return track_membership(event)
