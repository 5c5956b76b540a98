"""The classic destination's settings: load, merge, validate.

Keys are the classic Talon.One destination's own (``apiKey``,
``applicationDomain``, ``customAttributes``), so a settings export from
Segment works unchanged; ``deployment`` (the Actions destination's name for
the domain) is accepted as an alias. ``managementKey`` (a Management API
key, to read the attribute schema) is talon-classic's own addition. Values
come from a JSON file, then the environment (``TALON_API_KEY``,
``TALON_APPLICATION_DOMAIN``, ``TALON_CUSTOM_ATTRIBUTES``,
``TALON_MANAGEMENT_KEY``), then explicit overrides (CLI flags), each source
overriding the one before.

``engageAudiences`` (``TALON_ENGAGE_AUDIENCES``, ``--engage-audiences``) says
what an Engage audience becomes: ``attributes`` (the classic destination's
boolean attribute, the default), ``memberships`` (a member of a Talon.One
audience instead; see :mod:`talon_classic.engage`) or ``both``.
``audienceIds`` maps an Engage audience (its ``computation_id`` or
``computation_key``) to the id of an existing Talon.One audience.

Every problem is a :class:`~talon_classic.exceptions.SettingsError` with one
line ``"{source}: {field}: {problem}"``. Neither key (API, management) is
ever part of a message or a ``repr``. :func:`check_secret` is the one check every key and
secret goes through (whitespace, control and non-ASCII characters refused).
"""

from __future__ import annotations

import ipaddress
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import jsonschema

from talon_classic.exceptions import BadLine, SettingsError
from talon_classic.jsonio import loads
from talon_classic.schemafiles import field_path, first_error

ENV_API_KEY = "TALON_API_KEY"
ENV_DOMAIN = "TALON_APPLICATION_DOMAIN"
ENV_ATTRIBUTES = "TALON_CUSTOM_ATTRIBUTES"
ENV_MANAGEMENT_KEY = "TALON_MANAGEMENT_KEY"
ENV_ENGAGE_AUDIENCES = "TALON_ENGAGE_AUDIENCES"
#: What an Engage audience becomes (``engageAudiences``); the first is the classic default.
ENGAGE_MODES = ("attributes", "memberships", "both")
LOOPBACK_HOSTS = frozenset({"localhost"})
#: The largest settings file read (1 MB): a real one is a few kilobytes, and a file
#: such as /dev/zero must not be read into memory without end.
MAX_SETTINGS_BYTES = 1_000_000
#: The largest Talon.One audience id (a signed 64-bit integer), as the schema's maximum.
MAX_AUDIENCE_ID = 2**63 - 1


def redact(secret: str | None) -> str:
    """Show at most the last four characters of a secret: ``****abcd``.

    Only of a secret of 12 or more printable ASCII characters: of a shorter
    one, or one that :func:`check_secret` would refuse, nothing but ``****``.
    """
    if not secret:
        return "<unset>"
    clean = all(" " < ch <= "~" for ch in secret)
    return "****" + (secret[-4:] if len(secret) >= 12 and clean else "")


def check_secret(value: str, name: str, source: str, *, allow_non_ascii: bool = False) -> str:
    """Return ``value`` if it can be a key or secret, else raise a one-line SettingsError.

    Every secret talon-classic reads (the API key here; write keys, webhook
    secrets, emulator and management keys wherever they are read) goes
    through this one check, so a bad paste is refused where it is loaded
    rather than failing later, deep in an HTTP library whose error quotes
    the ``Authorization`` header. Refused, in this order:

    * not a string, or empty;
    * leading or trailing whitespace (a trailing newline from ``echo`` or a
      copied line), refused rather than stripped, so the key used is always
      exactly the key given;
    * a control character anywhere (a newline, a tab, NUL, DEL, C1 codes):
      ``requests`` refuses a header holding ``\\r`` or ``\\n`` with an error
      that quotes the whole header, and other controls reach the wire;
    * unless ``allow_non_ascii``, any character outside printable ASCII (a
      non-breaking or zero-width space, a typographic quote picked up from a
      web page): header values are sent as Latin-1, and Python's HTTP client
      fails on others with an error that holds the whole header. Keys are
      ASCII tokens; a secret that is never sent in a header (an HMAC secret)
      may pass ``allow_non_ascii=True``.

    The message is ``"{source}: {name}: {problem}"`` and never holds the
    value, any part of it, or where in it the problem is.
    """
    if not isinstance(value, str):
        raise SettingsError(f"{source}: {name}: expected a string")
    if not value:
        raise SettingsError(f"{source}: {name}: must not be empty")
    if value != value.strip():
        raise SettingsError(f"{source}: {name}: has leading or trailing whitespace")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise SettingsError(
            f"{source}: {name}: contains a control character (a newline or a tab?); "
            "copy it again"
        )
    if not allow_non_ascii and not all(" " <= ch <= "~" for ch in value):
        raise SettingsError(
            f"{source}: {name}: contains a non-ASCII character (an invisible space or a "
            "typographic quote from a web page?); copy it again"
        )
    return value


@dataclass(frozen=True)
class Settings:
    """Validated settings. ``api_key`` and ``management_key`` are hidden from ``repr``."""

    api_key: str | None = field(default=None, repr=False)
    application_domain: str | None = None
    custom_attributes: tuple[str, ...] = ()
    management_key: str | None = field(default=None, repr=False)
    #: ``engageAudiences``: one of :data:`ENGAGE_MODES`.
    engage_audiences: str = "attributes"
    #: ``audienceIds``: an Engage ``computation_id`` or ``computation_key`` -> a Talon.One id.
    audience_ids: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __repr__(self) -> str:
        management = (f", management_key={redact(self.management_key)!r}"
                      if self.management_key is not None else "")
        engage = (f", engage_audiences={self.engage_audiences!r}"
                  if self.engage_audiences != "attributes" else "")
        ids = f", audience_ids={dict(self.audience_ids)!r}" if self.audience_ids else ""
        return (
            f"Settings(api_key={redact(self.api_key)!r}, "
            f"application_domain={self.application_domain!r}, "
            f"custom_attributes={list(self.custom_attributes)!r}{management}{engage}{ids})"
        )

    def require_delivery(self, source: str = "settings") -> None:
        """Raise unless the settings can reach Talon.One (key and domain set)."""
        if not self.api_key:
            raise SettingsError(
                f"{source}: apiKey: missing (set it in the settings file, "
                f"{ENV_API_KEY} or --api-key)"
            )
        if not self.application_domain:
            raise SettingsError(
                f"{source}: applicationDomain: missing (set it in the settings file, "
                f"{ENV_DOMAIN} or --application-domain)"
            )


_SETTING_NAME = re.compile(r"[A-Za-z_]{1,32}")
_TYPE_NAMES = {"string": "a string", "array": "an array", "object": "an object",
               "integer": "an integer"}


def _schema_message(error: jsonschema.ValidationError) -> tuple[str, str]:
    """Turn a jsonschema error into (field, short problem) without echoing values."""
    where = field_path(error.absolute_path) or "(top level)"
    # jsonschema types these as "value or Unset"; a ValidationError from
    # iter_errors always has them set.
    validator, expected = str(error.validator), str(error.validator_value)
    instance: Any = error.instance
    schema: Any = error.schema
    if validator == "type":
        return where, f"expected {_TYPE_NAMES.get(expected, expected)}"
    if validator == "minLength":
        return where, "must not be empty"
    if validator == "enum":
        choices: Any = error.validator_value
        return where, "expected one of " + ", ".join(map(str, choices))
    if validator == "minimum":
        return where, "expected a Talon.One audience id (a whole number, 1 or more)"
    if validator == "maximum":
        return where, f"expected a Talon.One audience id (at most {MAX_AUDIENCE_ID}, 2**63 - 1)"
    if validator == "additionalProperties":
        extra = sorted(set(instance) - set(schema.get("properties", {})))
        # A key pasted where a name belongs must not be echoed: show only names
        # that look like a setting's (letters and underscores, short).
        shown = extra[0] if _SETTING_NAME.fullmatch(extra[0]) else "(unknown name, not shown)"
        return field_path([*error.absolute_path, shown]), (
            "unknown setting (expected apiKey, applicationDomain, deployment, customAttributes, "
            "managementKey, engageAudiences or audienceIds)"
        )
    return where, error.message  # pragma: no cover - schema has no other keywords


class _WideInt(int):
    """An integer beyond 64 bits, as read: no setting takes one, and jsonschema's messages
    ``repr`` the value, which fails past Python's 4,300-digit limit."""

    def __repr__(self) -> str:
        return "<an integer beyond 64 bits>"

    __str__ = __repr__


def _narrow(value: Any) -> Any:
    """``value`` with every integer beyond 64 bits made a :class:`_WideInt` (the depth is
    at most :data:`talon_classic.jsonio.MAX_NESTING`)."""
    if isinstance(value, dict):
        return {key: _narrow(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_narrow(item) for item in value]
    if type(value) is int and value.bit_length() > 64:
        return _WideInt(value)
    return value


def validate_document(doc: Any, source: str) -> dict[str, Any]:
    """Check a settings document against the shipped JSON Schema."""
    error = first_error("settings", doc)
    if error is not None:
        where, problem = _schema_message(error)
        raise SettingsError(f"{source}: {where}: {problem}")
    if "applicationDomain" in doc and "deployment" in doc and (
        normalise_domain(doc["applicationDomain"], source)
        != normalise_domain(doc["deployment"], source, "deployment")
    ):
        raise SettingsError(
            f"{source}: deployment: differs from applicationDomain (give only one of them)"
        )
    return doc


def _is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalise_domain(value: str, source: str, name: str = "applicationDomain") -> str:
    """Return ``scheme://host[:port]`` or raise a clear SettingsError.

    https is required; plain http is allowed for loopback hosts only (the
    local emulator). A trailing slash is dropped; any other path, a query or
    a fragment is rejected, since the client appends ``/v2/...`` itself.
    """
    try:
        parts = urlsplit(value.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise SettingsError(f"{source}: {name}: not a valid URL") from None
    if parts.scheme not in ("https", "http") or not host:
        raise SettingsError(
            f"{source}: {name}: must be an https:// URL such as https://mycompany.talon.one"
        )
    if parts.scheme == "http" and not _is_loopback(host):
        raise SettingsError(
            f"{source}: {name}: must use https:// (plain http is allowed only for "
            "loopback hosts: localhost, 127.0.0.0/8 and ::1)"
        )
    if parts.username or parts.password:
        raise SettingsError(f"{source}: {name}: must not contain credentials")
    if parts.path.rstrip("/") or parts.query or parts.fragment:
        raise SettingsError(
            f"{source}: {name}: must be the deployment's base URL without a path "
            f"(e.g. {parts.scheme}://{parts.netloc})"
        )
    return f"{parts.scheme}://{parts.netloc.lower()}"


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and schema-check one settings JSON file (at most :data:`MAX_SETTINGS_BYTES`).

    The text is read by :func:`talon_classic.jsonio.loads`, so any nesting
    depth and any number of digits is one line, never a traceback.
    """
    source = os.fspath(path)
    label = os.path.basename(source)
    try:
        with open(source, "rb") as fh:
            data = fh.read(MAX_SETTINGS_BYTES + 1)
        text = data.decode("utf-8-sig")  # a BOM, as Windows editors write, is not JSON
    except FileNotFoundError:
        raise SettingsError(f"{label}: file not found ({source})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{label}: cannot read: {exc.__class__.__name__}") from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise SettingsError(
            f"{label}: too large (more than {MAX_SETTINGS_BYTES:,} bytes): is it the settings "
            "file?"
        )
    try:
        doc = loads(text)
    except BadLine as exc:
        raise SettingsError(f"{label}: not valid JSON: {exc}") from None
    return validate_document(_narrow(doc), label)


def load_settings(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    api_key: str | None = None,
    application_domain: str | None = None,
    custom_attributes: Iterable[str] | None = None,
    management_key: str | None = None,
    engage_audiences: str | None = None,
) -> Settings:
    """Merge file < environment < explicit values and validate the result.

    ``custom_attributes`` given explicitly replaces (does not extend) the
    lists from the file and the environment, as a flag should.
    """
    env = os.environ if env is None else env
    merged: dict[str, tuple[Any, str]] = {}
    if path is not None:
        label = os.path.basename(os.fspath(path))
        doc = read_settings_file(path)
        for key, value in doc.items():
            merged["applicationDomain" if key == "deployment" else key] = (value, label)
    if env.get(ENV_API_KEY):
        merged["apiKey"] = (env[ENV_API_KEY], ENV_API_KEY)
    if env.get(ENV_DOMAIN):
        merged["applicationDomain"] = (env[ENV_DOMAIN], ENV_DOMAIN)
    if env.get(ENV_MANAGEMENT_KEY):
        merged["managementKey"] = (env[ENV_MANAGEMENT_KEY], ENV_MANAGEMENT_KEY)
    if env.get(ENV_ENGAGE_AUDIENCES):
        merged["engageAudiences"] = (env[ENV_ENGAGE_AUDIENCES].strip(), ENV_ENGAGE_AUDIENCES)
    if env.get(ENV_ATTRIBUTES):
        items = [a.strip() for a in env[ENV_ATTRIBUTES].split(",") if a.strip()]
        if not items:  # only separators: almost surely a mistake, and it would drop every trait
            raise SettingsError(
                f"{ENV_ATTRIBUTES}: customAttributes: no attribute names in it "
                "(comma-separated, e.g. email,plan); unset it to use the file's list"
            )
        merged["customAttributes"] = (items, ENV_ATTRIBUTES)
    if api_key is not None:
        merged["apiKey"] = (api_key, "--api-key")
    if application_domain is not None:
        merged["applicationDomain"] = (application_domain, "--application-domain")
    if custom_attributes is not None:
        merged["customAttributes"] = (list(custom_attributes), "--custom-attribute")
    if management_key is not None:
        merged["managementKey"] = (management_key, "--management-key")
    if engage_audiences is not None:
        merged["engageAudiences"] = (engage_audiences, "--engage-audiences")

    for key, (value, source) in merged.items():
        validate_document({key: value}, source)

    domain = None
    if "applicationDomain" in merged:
        value, source = merged["applicationDomain"]
        domain = normalise_domain(value, source)
    keys: dict[str, str | None] = {}
    for name in ("apiKey", "managementKey"):
        value, source = merged.get(name, (None, ""))
        keys[name] = check_secret(value, name, source) if value is not None else None
    attrs = merged.get("customAttributes", ([], ""))[0]
    return Settings(
        api_key=keys["apiKey"],
        application_domain=domain,
        custom_attributes=tuple(dict.fromkeys(attrs)),
        management_key=keys["managementKey"],
        engage_audiences=merged.get("engageAudiences", ("attributes", ""))[0],
        audience_ids={key: int(value)  # 5.0 is an integer to JSON Schema
                      for key, value in merged.get("audienceIds", ({}, ""))[0].items()},
    )
