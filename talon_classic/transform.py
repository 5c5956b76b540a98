"""The mapping engine: one Segment event in, one profile upsert (or a skip) out.

This module is the only place where the rules of ``mapping-contract.md``
live; the CLI, the bulk pipeline and the server all call :class:`Engine`.
It is pure: no I/O, no clock, no globals that change results.

Choices the contract leaves open, written down here and in the README:

* ``type``/``traits``/``userId`` set to ``null`` count as absent.
* A float ``userId`` with an integral value is written without a fraction
  (``42.0`` -> ``"42"``); NaN and infinities are ``invalid_user_id``.
* ``context.traits`` that is present but not an object is ``invalid_event``,
  as top-level ``traits`` is.
* ``integrations`` values follow JavaScript truthiness, as Segment does:
  ``false``, ``0``, ``""`` and ``null`` turn the destination off, while an
  options object (even ``{}``) keeps it on.
* What Talon.One cannot take exactly as JSON is dropped as
  ``unsupported_value``, so a request body never fails to encode and never
  changes a value on the way:

  - non-finite numbers (NaN, Infinity);
  - integers beyond :data:`MAX_SAFE_INTEGER` (2**53 - 1) either way.
    Talon.One is written in Go and holds numbers as float64, which stores
    every integer up to 2**53 - 1 exactly (JavaScript's safe integers, all
    that Segment's browser library can send) and rounds the ones beyond, up
    to refusing the request (10**400). Floats are float64 already and are
    kept when finite;
  - strings holding a lone surrogate (``"\\ud800"`` in the JSON text): not
    Unicode text, so not valid UTF-8 either;
  - a list with any of the above among its items (as a list of objects is);
  - any value that is not JSON data (the engine also takes events built in
    Python, not only decoded JSON).

* An attribute whose name holds a lone surrogate (in any key on its path) is
  dropped as ``unsupported_value``, whatever the allowlist says. Dropped
  names are reported with each lone surrogate written as its ``\\udXXX``
  escape, so reports are always printable.
* A ``userId`` string holding a lone surrogate is ``invalid_user_id``; so
  is an integer ``userId`` whose digits are longer than 1000 characters.
* Traits are flattened :data:`MAX_TRAIT_DEPTH` (64) keys deep at most: a
  non-empty object found at that depth is dropped as ``unsupported_value``
  under the name reached there (its 64 keys joined), so no depth of input
  can exhaust the stack. Engage computed traits count their own name as
  the first key.
* An Engage value that is an object is flattened under the snake_case name;
  an Engage attribute that flattens to the same name as an ordinary trait
  wins, and the ordinary trait is dropped as ``collision``.

With a :class:`~talon_classic.schema.Schema` (typed-attributes contract),
every attribute left after the allowlist and Engage is then looked up by its
exact name: one not in the schema is dropped as ``unknown_attribute``, one
whose value cannot be coerced to its type (:mod:`talon_classic.coerce`) as
``type_mismatch``. Without a schema nothing is coerced or dropped for its
name or type.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from fnmatch import translate
from itertools import islice
from typing import TYPE_CHECKING, Any

import inflection

from talon_classic.coerce import MISMATCH, Coercer, coercer
from talon_classic.engage import ATTRIBUTES, MEMBERSHIPS, EngageMembership, membership_of
from talon_classic.jsonio import INEXACT_FLOAT

if TYPE_CHECKING:
    from talon_classic.schema import Schema
    from talon_classic.settings import Settings

#: Reasons an event is skipped as a whole (the contract's codes).
SKIP_REASONS = (
    "invalid_json",
    "invalid_event",
    "not_identify",
    "disabled_by_integrations",
    "no_user_id",
    "invalid_user_id",
)
#: Reasons one attribute is left out of an otherwise kept event (the last two are
#: decided at delivery, against what Talon.One acknowledged: :mod:`talon_classic.ledger`).
DROP_REASONS = ("not_allowlisted", "unsupported_value", "collision", "invalid_audience_value",
                "unknown_attribute", "type_mismatch", "superseded", "unchanged")

MAX_ID_LENGTH = 1000
#: Largest magnitude of an integer attribute: float64 holds every integer up to it exactly.
MAX_SAFE_INTEGER = 2**53 - 1
#: The bounds as constants: ``-NAME`` in a comparison would build the negative every time.
_MIN_SAFE_INTEGER = -MAX_SAFE_INTEGER
#: Floats strictly between these were floats in the JSON text, whatever reader read it.
_MIN_EXACT_FLOAT, _MAX_EXACT_FLOAT = -INEXACT_FLOAT, INEXACT_FLOAT
#: Keys on the path to an attribute at most (its name joins at most this many).
MAX_TRAIT_DEPTH = 64
#: An integer of more bits than this has more than MAX_ID_LENGTH digits
#: (and fewer bits always gives fewer than Python's 4,300-digit str() limit).
_ID_BITS = 3400
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
#: Put in ``dropped`` by the flattening when it meets a float that may stand for a long
#: integer (see :attr:`Result.approximate`); taken out before the result is made.
_INEXACT = ("", "approximate")
_SNAKE = re.compile(r"[a-z0-9_]+")
_ENGAGE_BOOL = frozenset({"audience", "journey_step"})
_ENGAGE_VALUE = frozenset({"trait", "computed_trait"})
_DESTINATION_KEYS = ("Talon.One", "Talon_One")
_CACHE_LIMIT = 100_000

#: What typing does to one event's attributes: ``(name, coercer)`` to coerce,
#: ``(name, None)`` to drop as not in the schema.
_Plan = tuple[tuple[str, Coercer | None], ...]


#: A plan and, when all it does is look at ``(list string)`` lists, their names: joining
#: a list of strings is the fastest test that every item is one.
_Decided = tuple[_Plan, tuple[str, ...]]
_LIST_STRING = coercer("(list string)")


class _Typing:
    """What typing does to one set of attribute names, per signature of their value types.

    ``last`` is the latest ``(value types, plan, list names)``, replaced whole
    (a reader sees the old one or the new one); ``seen`` keeps every signature
    met for these names (a source whose ``age`` is sometimes ``"42"``,
    sometimes ``42``).
    """

    __slots__ = ("names", "last", "seen")

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.last: tuple[list[type], _Plan, tuple[str, ...]] | None = None
        self.seen: dict[tuple[type, ...], _Decided] = {}


#: Per set of flattened names: (names to delete, what to report as dropped, how to type
#: the attributes left when no Engage attribute joins them; None without a schema).
_Refusal = tuple[list[str], list[tuple[str, str]], _Typing | None]


class Result:
    """What the engine made of one event.

    Either ``skipped`` is a reason code (and ``error`` says why in words), or
    ``integration_id`` and ``attributes`` describe the upsert, with
    ``dropped`` listing ``(name, reason)`` for every attribute left out.
    ``memberships``: the Engage audience memberships it says (with
    ``engageAudiences`` ``memberships`` or ``both``; see :mod:`talon_classic.engage`).

    ``approximate``: the result depends on a float of magnitude 2**63 or
    more (the userId, or a value the flattening looked at), which a JSON
    reader that turns long integer literals into floats (orjson, through
    :func:`talon_classic.jsonio.loads_quick`) may have made of an integer;
    a ``not_identify`` skip whose ``type`` is not a string is approximate
    too, as its message shows the value. A caller that read the event that
    way reads it again exactly and transforms it again
    (:func:`talon_classic.intake.reread`); Engage names are learnt
    (:attr:`Engine.engage_names`) from the exact reading only. It is not
    part of the mapping: equality and ``as_dict`` leave it out.
    """

    __slots__ = ("integration_id", "attributes", "dropped", "skipped", "error", "memberships",
                 "approximate")

    def __init__(
        self,
        integration_id: str | None = None,
        attributes: dict[str, Any] | None = None,
        dropped: list[tuple[str, str]] | None = None,
        skipped: str | None = None,
        error: str | None = None,
        memberships: tuple[EngageMembership, ...] = (),
    ) -> None:
        self.integration_id = integration_id
        self.attributes = attributes
        self.dropped = dropped if dropped is not None else []
        self.skipped = skipped
        self.error = error
        self.memberships = memberships
        self.approximate = False

    @property
    def kept(self) -> bool:
        """True when the event becomes an upsert."""
        return self.skipped is None

    def as_dict(self) -> dict[str, Any]:
        """The stable JSON shape used by ``talon-classic transform``."""
        if self.skipped is not None:
            return {"skipped": self.skipped, "error": self.error}
        out = {
            "integrationId": self.integration_id,
            "attributes": self.attributes,
            "dropped": [{"name": n, "reason": r} for n, r in self.dropped],
        }
        if self.memberships:
            out["memberships"] = [m.as_dict() for m in self.memberships]
        return out

    def __repr__(self) -> str:
        if self.skipped is not None:
            return f"Result(skipped={self.skipped!r}, error={self.error!r})"
        return (
            f"Result(integration_id={self.integration_id!r}, "
            f"attributes={self.attributes!r}, dropped={self.dropped!r}"
            + (f", memberships={self.memberships!r})" if self.memberships else ")")
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Result):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in _COMPARED)


_COMPARED = Result.__slots__[:-1]


def skip(reason: str, error: str) -> Result:
    """A skipped result; used by readers for input-level reasons too."""
    return Result(skipped=reason, error=error)


def snake_case(key: str) -> str:
    """Engage key -> attribute name, exactly as the contract says.

    Lowercase snake_case keys stay as they are (Engage's double underscores
    survive); anything else goes through ``inflection.underscore`` and then
    ``inflection.parameterize(..., separator="_")``.
    """
    if _SNAKE.fullmatch(key):
        return key
    return inflection.parameterize(inflection.underscore(key), separator="_")


def _js_truthy(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0 and not (isinstance(value, float) and math.isnan(value))
    if isinstance(value, str):
        return value != ""
    return True


def _disabled(integrations: Any) -> bool:
    if not isinstance(integrations, Mapping):
        return False
    named = [integrations[k] for k in _DESTINATION_KEYS if k in integrations]
    if any(not _js_truthy(v) for v in named):
        return True
    if "All" in integrations and not _js_truthy(integrations["All"]):
        return not any(_js_truthy(v) for v in named)
    return False


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _is_text(value: str) -> bool:
    """True unless ``value`` holds a lone surrogate (so it is valid Unicode, sendable as UTF-8)."""
    return value.isascii() or _LONE_SURROGATE.search(value) is None


def _shown(name: str) -> str:
    """``name`` with each lone surrogate written as its ``\\udXXX`` escape: printable, for reports."""
    if _is_text(name):
        return name
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", name)


def _integration_id(user_id: Any) -> tuple[str | None, str | None, str | None]:
    """Return (id, skip reason, message)."""
    if user_id is None:
        return None, "no_user_id", "no userId (anonymous events are not sent; anonymousId is never used)"
    if isinstance(user_id, bool) or not isinstance(user_id, (str, int, float)):
        return None, "invalid_user_id", (
            f"userId is {_json_kind(user_id)}; expected a string or a number"
        )
    if isinstance(user_id, float):
        if not math.isfinite(user_id):
            return None, "invalid_user_id", "userId is not a finite number"
        text = str(int(user_id)) if user_id.is_integer() and abs(user_id) < 2**53 else repr(user_id)
    elif isinstance(user_id, int):
        if user_id.bit_length() > _ID_BITS:
            return None, "invalid_user_id", (
                f"userId is a number of more than {MAX_ID_LENGTH} digits; Talon.One allows "
                f"at most {MAX_ID_LENGTH} characters"
            )
        text = str(user_id)
    else:
        text = user_id.strip()
        if not text:
            return None, "no_user_id", "userId is empty"
        lone = None if text.isascii() else _LONE_SURROGATE.search(text)
        if lone is not None:
            return None, "invalid_user_id", (
                f"userId holds a lone surrogate ({_shown(lone.group())}), so it is not text "
                "and cannot be sent"
            )
    if len(text) > MAX_ID_LENGTH:
        return None, "invalid_user_id", (
            f"userId is {len(text)} characters long; Talon.One allows at most {MAX_ID_LENGTH}"
        )
    return text, None, None


class Engine:
    """Applies the mapping contract for one allowlist (and, if given, one schema).

    Build one per settings and reuse it: the allowlist is compiled once and
    per-name decisions (allowlist, snake_case) are cached. With ``schema``,
    attributes are typed after the allowlist and Engage (see the module's
    docstring); the schema's coercers are compiled once here.

    ``engage_audiences`` (``engageAudiences``): ``attributes``, the classic
    boolean attribute; ``memberships``: an Engage audience identify gives a
    membership instead of its attribute, and ``Audience Entered``/``Exited``
    tracks are kept as a membership and an empty upsert of their user (so
    they are delivered, dead-lettered and checkpointed with their profile);
    ``both``: the attribute and the membership.
    """

    __slots__ = ("allowlist", "engage_names", "_exact", "_pattern", "_allowed", "_snake",
                 "_refused", "schema", "_as_is", "_coercers", "_plans", "engage_audiences")

    def __init__(self, custom_attributes: Iterable[str] | Settings = (),
                 schema: Schema | None = None, engage_audiences: str | None = None) -> None:
        # given Settings, its engageAudiences unless told otherwise
        self.engage_audiences: str = engage_audiences or str(getattr(
            custom_attributes, "engage_audiences", None) or ATTRIBUTES)
        attrs = (custom_attributes.custom_attributes if hasattr(custom_attributes, "custom_attributes")
                 else custom_attributes)
        self.allowlist: tuple[str, ...] = tuple(attrs)
        self._exact = frozenset(a for a in self.allowlist if "*" not in a)
        globs = [translate(a) for a in self.allowlist if "*" in a]
        self._pattern = re.compile("|".join(f"(?:{g})" for g in globs)) if globs else None
        self._allowed: dict[str, bool] = {}
        self._snake: dict[str, str] = {}
        #: Every Engage attribute name produced so far (they bypass the allowlist,
        #: so whoever keeps Talon.One's attribute list needs to know them).
        self.engage_names: set[str] = set()
        # per set of flattened names: what the allowlist (and typing) do to them
        self._refused: dict[tuple[str, ...], _Refusal] = {}
        self.schema = schema
        compiled = schema.compiled if schema is not None else None
        self._as_is = compiled.as_is if compiled is not None else None
        self._coercers = compiled.coercers if compiled is not None else {}
        #: How to type attribute names met with an Engage attribute among them.
        self._plans: dict[tuple[str, ...], _Typing] = {}

    def allowed(self, name: str) -> bool:
        """Is a flattened attribute name in the allowlist (exact or pattern)?"""
        hit = self._allowed.get(name)
        if hit is None:
            hit = name in self._exact or (
                self._pattern is not None and self._pattern.match(name) is not None
            )
            if len(self._allowed) >= _CACHE_LIMIT:
                self._allowed.clear()
            self._allowed[name] = hit
        return hit

    def snake(self, key: str) -> str:
        """Cached :func:`snake_case`."""
        name = self._snake.get(key)
        if name is None:
            name = snake_case(key)
            if len(self._snake) >= _CACHE_LIMIT:
                self._snake.clear()
            self._snake[key] = name
        return name

    def transform(self, event: Any) -> Result:
        """Map one decoded event to a :class:`Result`."""
        if not isinstance(event, dict):
            return skip("invalid_event", "the event is not a JSON object")
        etype = event.get("type")
        track = None
        if etype is not None and etype != "identify" and (
                not isinstance(etype, str) or etype.lower() != "identify"):
            track = membership_of(event) if self.engage_audiences != ATTRIBUTES else None
            if track is None:
                result = skip("not_identify", f"type is {etype!r}; only identify events are sent")
                # the message shows the value: a float in it may stand for a long integer
                return result if type(etype) is str else _marked(result, True)
        integrations = event.get("integrations")
        if integrations is not None and _disabled(integrations):
            return skip(
                "disabled_by_integrations",
                "integrations turns Talon.One off for this event",
            )
        user_id = event.get("userId")
        # strip() gives back the string itself when there is nothing to strip
        if type(user_id) is str and 0 < len(user_id) <= MAX_ID_LENGTH and (
            user_id.strip() is user_id
        ) and (user_id.isascii() or _LONE_SURROGATE.search(user_id) is None):
            integration_id: str | None = user_id  # the common case, already clean
            approximate = False
        else:
            found, reason, message = _integration_id(user_id)
            if found is None:
                return skip(reason or "invalid_user_id", message or "userId is not usable")
            integration_id = found
            approximate = type(user_id) is float and not _MIN_EXACT_FLOAT < user_id < _MAX_EXACT_FLOAT
        if track is not None:  # Audience Entered/Exited: its user, and the membership
            return _marked(Result(integration_id, {}, [], memberships=(track,)), approximate)

        context = event.get("context")
        if "traits" in event:
            traits, where = event["traits"], "traits"
        else:
            traits = context.get("traits") if isinstance(context, dict) else None
            where = "context.traits"
        if traits is None:
            traits = {}
        elif not isinstance(traits, dict):
            return skip("invalid_event", f"{where} is not an object")

        engage_key: str | None = None
        engage_class = ""
        if isinstance(context, dict):
            personas = context.get("personas")
            if isinstance(personas, dict):
                cls = personas.get("computation_class")
                key = personas.get("computation_key")
                if (cls in _ENGAGE_BOOL or cls in _ENGAGE_VALUE) and isinstance(key, str) and key:
                    engage_key, engage_class = key, cls

        dropped: list[tuple[str, str]] = []
        flat: dict[str, Any] = {}
        if engage_key is not None and engage_key in traits:
            ordinary = {k: v for k, v in traits.items() if k != engage_key}
        else:
            ordinary = traits
        if not _flatten_simple(ordinary, "", flat, dropped):
            # two paths flatten to one name: redo it keeping depths to settle it
            dropped, flat = [], {}
            _flatten(ordinary, "", 1, flat, {}, dropped)
        if dropped and _INEXACT in dropped:
            approximate = True

        # Events from one source share their set of names: decide per set, once
        # (the allowlist, and with a schema how to type what is left).
        # ``flat`` is this event's own dict, so refused names are deleted from it
        # and it becomes the attributes (order kept, no copy).
        names = tuple(flat)
        refused = self._refused.get(names)
        if refused is None:
            refused = self._refuse(names)
            if len(self._refused) >= _CACHE_LIMIT // 10:
                self._refused.clear()
            self._refused[names] = refused
        if refused[0]:
            for name in refused[0]:
                del flat[name]
            dropped += refused[1]
        attributes = flat
        typing = refused[2]

        membership = None
        if engage_class == "audience" and self.engage_audiences != ATTRIBUTES:
            membership = membership_of(event)
        if engage_key is not None and engage_key in traits and (
                membership is None or self.engage_audiences != MEMBERSHIPS):
            self._engage(engage_class, engage_key, traits[engage_key], attributes, dropped)
            if _INEXACT in dropped:
                approximate = True
            if typing is not None and attributes:  # names the allowlist's entry did not see
                self._typed(attributes, dropped, self._typing_for(tuple(attributes)))
        elif typing is not None and attributes:
            # Inline, as this runs for every event: the plan of these value types.
            kinds = [*map(type, attributes.values())]
            last = typing.last
            if last is None or last[0] != kinds:
                last = self._plan(typing, kinds)
            if last[2]:  # only (list string) lists to look at, the usual case with lists
                try:
                    for name in last[2]:
                        _join(attributes[name])  # a TypeError unless every item is a string
                except TypeError:
                    _apply(last[1], attributes, dropped)
            elif last[1]:
                _apply(last[1], attributes, dropped)
        if membership is not None:
            result = Result(integration_id, attributes, dropped, memberships=(membership,))
        else:
            result = Result(integration_id, attributes, dropped)
        return _marked(result, approximate) if approximate else result

    def _refuse(self, names: tuple[str, ...]) -> _Refusal:
        """Which flattened names are left out, how each is reported, how to type the rest."""
        gone: list[str] = []
        report: list[tuple[str, str]] = []
        for name in names:
            if not _is_text(name):
                gone.append(name)
                report.append((_shown(name), "unsupported_value"))
            elif not self.allowed(name):
                gone.append(name)
                report.append((name, "not_allowlisted"))
        if self._as_is is None:
            return gone, report, None
        out = set(gone)
        return gone, report, _Typing(tuple(n for n in names if n not in out))

    def _typing_for(self, names: tuple[str, ...]) -> _Typing:
        """The :class:`_Typing` of attribute names that hold an Engage attribute."""
        typing = self._plans.get(names)
        if typing is None:
            typing = _Typing(names)
            if len(self._plans) >= _CACHE_LIMIT // 10:
                self._plans.clear()
            self._plans[names] = typing
        return typing

    def _typed(self, attributes: dict[str, Any], dropped: list[tuple[str, str]],
               typing: _Typing) -> None:
        """Coerce each attribute to its schema type in place; drop unknown names and misfits.

        Events from one source share their names and the Python types of their
        values, so what to do is decided once per such signature (see
        :meth:`_plan`) and recognised with one C-level pass per event. The
        usual plan is empty (every value already has its type) or holds only
        the list attributes, whose items must be looked at.
        """
        kinds = [*map(type, attributes.values())]
        last = typing.last
        if last is None or last[0] != kinds:
            last = self._plan(typing, kinds)
        if last[1]:
            _apply(last[1], attributes, dropped)

    def _plan(self, typing: _Typing, kinds: list[type]
              ) -> tuple[list[type], _Plan, tuple[str, ...]]:
        """Typing's work for one signature of value types, remembered in ``typing``.

        The plan holds ``(name, coercer)`` for each value not of a type its
        attribute takes as is and ``(name, None)`` for each name not in the
        schema, in attribute order. When every entry is a list for a ``(list
        string)`` attribute their names come too (see :data:`_Decided`). Every
        signature seen is kept (up to 64 per set of names); the latest is
        checked first.
        """
        signature = tuple(kinds)
        decided = typing.seen.get(signature)
        if decided is None:
            as_is = self._as_is
            assert as_is is not None
            coercers = self._coercers
            work: list[tuple[str, Coercer | None]] = []
            lists: list[str] = []
            for name, kind in zip(typing.names, kinds, strict=True):
                ok = as_is.get(name)
                if ok is None:
                    work.append((name, None))
                elif kind not in ok:
                    work.append((name, coercers[name]))
                    if kind is list and coercers[name] is _LIST_STRING:
                        lists.append(name)
            decided = (tuple(work), tuple(lists) if len(lists) == len(work) else ())
            if len(typing.seen) < 64:
                typing.seen[signature] = decided
        last = (kinds, *decided)
        typing.last = last  # replaced whole: readers see one or the other
        return last

    def _engage(
        self,
        cls: str,
        key: str,
        value: Any,
        attributes: dict[str, Any],
        dropped: list[tuple[str, str]],
    ) -> None:
        """Add the Engage attribute, bypassing the allowlist."""
        name = self.snake(key)
        if cls in _ENGAGE_BOOL:
            if isinstance(value, str) and value.lower() in ("true", "false"):
                value = value.lower() == "true"
            if not isinstance(value, bool):
                dropped.append((name, "invalid_audience_value"))
                return
            found = {name: value}
        else:
            found = {}
            _flatten({name: value}, "", 1, found, {}, dropped)
        # an approximate result is read again exactly, which learns the names that stand
        learn = _INEXACT not in dropped
        for attr, val in found.items():
            if not _is_text(attr):
                dropped.append((_shown(attr), "unsupported_value"))
                continue
            if attr in attributes:
                dropped.append((attr, "collision"))
            attributes[attr] = val
            if learn:
                self.engage_names.add(attr)


def _marked(result: Result, approximate: bool) -> Result:
    """``result`` with :attr:`Result.approximate` set as the event said, and the flattening's
    marks taken out of its ``dropped``."""
    if approximate:
        result.approximate = True
        result.dropped[:] = [d for d in result.dropped if d is not _INEXACT]
    return result


def _apply(plan: _Plan, attributes: dict[str, Any], dropped: list[tuple[str, str]]) -> None:
    """Carry out a plan: coerce in place, drop what cannot be coerced or is not in the schema."""
    bad = None
    for name, coerce in plan:
        if coerce is not None:
            value = attributes[name]
            new = coerce(value)
            if new is value:  # e.g. a list already of the right items
                continue
            if new is not MISMATCH:
                attributes[name] = new
                continue
            reason = "type_mismatch"
        else:
            reason = "unknown_attribute"
        if bad is None:
            bad = []
        bad.append((name, reason))
    if bad is not None:
        for name, _ in bad:
            del attributes[name]
        dropped += bad


def _flatten_simple(
    obj: dict[str, Any],
    prefix: str,
    flat: dict[str, Any],
    dropped: list[tuple[str, str]],
    level: int = 1,
) -> bool:
    """:func:`_flatten` for the usual case with no collision; False when one appears.

    It skips the depth bookkeeping that only a collision needs, which is
    most of the engine's time on nested traits.
    """
    for key, value in obj.items():
        kind = type(value)
        if kind is str:
            if value.isascii() or _LONE_SURROGATE.search(value) is None:
                name = prefix + key
                if name in flat:
                    return False
                flat[name] = value
                continue
        elif (kind is int and _MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER) or kind is bool or (
                kind is float and _MIN_EXACT_FLOAT < value < _MAX_EXACT_FLOAT):
            name = prefix + key
            if name in flat:
                return False
            flat[name] = value
            continue
        if value is None:
            continue
        elif kind is dict:
            if not value:
                continue
            if level >= MAX_TRAIT_DEPTH:
                name = prefix + key
                if name in flat:
                    return False
                dropped.append((_shown(name), "unsupported_value"))
            elif not _flatten_simple(value, prefix + key + "_", flat, dropped, level + 1):
                return False
        else:
            name = prefix + key
            if name in flat:
                return False
            _nested_value(name, value, flat, dropped)
    return True


def _nested_value(
    name: str, value: Any, flat: dict[str, Any], dropped: list[tuple[str, str]]
) -> None:
    """A value that is neither a plain scalar nor an object (:func:`_leaf`), written or
    dropped."""
    items = _leaf(value, dropped)
    if items is None:  # a list of objects, a non-finite float, a huge integer, ...
        dropped.append((_shown(name), "unsupported_value"))
    else:
        flat[name] = items


def _sendable(item: Any, dropped: list[tuple[str, str]]) -> bool:
    """Can this list item be sent as it is (a scalar Talon.One holds exactly)? A float of
    2**63 or more can, and is marked in ``dropped`` (see :attr:`Result.approximate`)."""
    kind = type(item)
    if kind is str:
        return item.isascii() or _LONE_SURROGATE.search(item) is None
    if kind is int:
        return _MIN_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER
    if kind is float:
        if _MIN_EXACT_FLOAT < item < _MAX_EXACT_FLOAT:
            return True
        if _isfinite(item):
            dropped.append(_INEXACT)
            return True
        return False
    return kind is bool


def _leaf(value: Any, dropped: list[tuple[str, str]]) -> Any:
    """What a value that is neither a plain scalar nor an object is sent as: a list of
    sendable scalars without its nulls, or a float of 2**63 or more as it is (marked in
    ``dropped``: see :attr:`Result.approximate`); None when it cannot be sent."""
    if type(value) is not list:
        if type(value) is float and _isfinite(value):
            dropped.append(_INEXACT)
            return value
        return None
    try:  # the usual list, of strings only: one C-level pass checks them all
        text = _join(value)
    except TypeError:  # an item is not a string
        pass
    else:
        return value[:] if text.isascii() or _LONE_SURROGATE.search(text) is None else None
    items = [v for v in value if v is not None]
    for item in items:
        if not _sendable(item, dropped):
            return None
    return items


def sendable_attributes(attributes: dict[str, Any]
                        ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Already flat ``attributes`` (a compacted profile's) as the engine would send them,
    and ``(name, "unsupported_value")`` for each one left out by its rules (see the module
    docstring): a name holding a lone surrogate; a value that is not a plain scalar
    Talon.One holds exactly nor a list :func:`_leaf` keeps (an object among them: a
    flattened attribute is never one). Nulls are left out unreported, as in traits, and
    lists lose their nulls. ``attributes`` itself when nothing changes, else a new dict."""
    out: dict[str, Any] | None = None
    dropped: list[tuple[str, str]] = []
    for at, (name, value) in enumerate(attributes.items()):
        kind = type(value)
        sent: Any = value
        if not ((kind is str and (value.isascii() or _LONE_SURROGATE.search(value) is None)) or (
                kind is int and _MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER) or kind is bool
                or (kind is float and _MIN_EXACT_FLOAT < value < _MAX_EXACT_FLOAT)):
            if value is None:
                sent = _GONE
            else:  # its approximate marks do not matter: the profile was read exactly
                sent = _leaf(value, []) if _is_text(name) else None
                if sent is None:
                    dropped.append((_shown(name), "unsupported_value"))
                    sent = _GONE
                elif kind is list and len(sent) == len(value):
                    sent = value  # no null taken out: the list as it is
        elif not _is_text(name):
            dropped.append((_shown(name), "unsupported_value"))
            sent = _GONE
        if out is None:
            if sent is value:
                continue
            out = dict(islice(attributes.items(), at))
        if sent is not _GONE:
            out[name] = sent
    return (attributes if out is None else out), dropped


def _flatten(
    obj: dict[str, Any],
    prefix: str,
    level: int,
    flat: dict[str, Any],
    depth: dict[str, int],
    dropped: list[tuple[str, str]],
) -> None:
    """Walk ``obj`` in document order, writing leaf values into ``flat``.

    ``depth`` remembers the nesting level of names written below the top
    (absent means level 1) so a collision can be settled: the shallower
    literal key wins, and at equal depth the later one does. This is the
    engine's hot loop, hence exact type checks and inlined common cases.
    Objects at level :data:`MAX_TRAIT_DEPTH` are dropped, not entered.
    """
    for key, value in obj.items():
        kind = type(value)
        if (kind is str and (value.isascii() or _LONE_SURROGATE.search(value) is None)) or (
            kind is int and _MIN_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
        ) or kind is bool or (kind is float and _MIN_EXACT_FLOAT < value < _MAX_EXACT_FLOAT):
            name = prefix + key
            if name in flat:
                _collide(name, value, level, flat, depth, dropped)
            else:
                flat[name] = value
                if level > 1:
                    depth[name] = level
        elif value is None:
            continue
        elif kind is dict:
            if not value:
                continue
            if level >= MAX_TRAIT_DEPTH:
                dropped.append((_shown(prefix + key), "unsupported_value"))
            else:
                _flatten(value, prefix + key + "_", level + 1, flat, depth, dropped)
        else:
            name = prefix + key
            items = _leaf(value, dropped)
            if items is None:  # a list of objects, a non-finite float, a huge integer, ...
                dropped.append((_shown(name), "unsupported_value"))
            elif name in flat:
                _collide(name, items, level, flat, depth, dropped)
            else:
                flat[name] = items
                if level > 1:
                    depth[name] = level


_isfinite = math.isfinite
_join = "".join
#: :func:`sendable_attributes`' mark for a value left out.
_GONE = object()


def _collide(
    name: str,
    value: Any,
    level: int,
    flat: dict[str, Any],
    depth: dict[str, int],
    dropped: list[tuple[str, str]],
) -> None:
    """Settle two paths that flatten to one name; the loser is dropped."""
    dropped.append((_shown(name), "collision"))
    if level <= depth.get(name, 1):
        # Shallower wins; at equal depth the later one (this one) wins. The
        # name moves to its new position so document order stays intuitive.
        del flat[name]
        flat[name] = value
        if level > 1:
            depth[name] = level
        else:
            depth.pop(name, None)


def transform(event: Any, settings: Settings | Iterable[str],
              schema: Schema | None = None) -> Result:
    """Map one event with the allowlist of ``settings`` (one-off convenience).

    For many events build an :class:`Engine` once instead.
    """
    return Engine(settings, schema).transform(event)
