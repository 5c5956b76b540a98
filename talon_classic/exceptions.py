"""Every error talon-classic raises on purpose, in one place.

All derive from :class:`TalonClassicError`, so a caller can catch one type.
No message built here ever contains an API key: the classes only take the
parts of a failure that are safe to show.

Any other exception may quote what it was given, e.g. ``requests`` quotes
a header it refuses, ``Authorization`` included. :func:`shown` and
:func:`logged` are how such an error is told: shown to anyone (an
answer, ``/health``) only by its class name; logged with anything that
looks like a credential removed.
"""

from __future__ import annotations

import re
from typing import Any

#: An authorization scheme and its credential: to the closing quote, else to the end
#: (a key with a newline in it spans lines). Schemes as sent, case-sensitive.
_CREDENTIAL = re.compile(r"""(\b(?:ApiKey-v1|ManagementKey-v1|Bearer|Basic|Digest)\s+)[^'"]*""")
#: ``Authorization: ...``, ``'Authorization': '...'``, ``authorization=...``.
_HEADER = re.compile(r"""(?i)(\bauthorization\b['"]?\s*[:=]\s*['"]?)[^'",}]*""")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_LOGGED = 500


def scrub_credentials(text: str) -> str:
    """``text`` on one line, without anything that looks like an Authorization header value."""
    text = _HEADER.sub(r"\1[redacted]", text)
    text = _CREDENTIAL.sub(r"\1[redacted]", text)
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= MAX_LOGGED else text[:MAX_LOGGED] + "..."


def shown(exc: BaseException) -> str:
    """What may be shown to anyone: talon-classic's own message, else only the class name."""
    if isinstance(exc, TalonClassicError):
        return scrub_credentials(str(exc))
    return f"unexpected error ({type(exc).__name__}); see the log"


def first_line(exc: BaseException, limit: int = 300) -> str:
    """A library's error (DuckDB's, SQLite's, Spark's) as the first line of its message, at
    most ``limit`` characters; its class name when it says nothing."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else exc.__class__.__name__


def logged(exc: BaseException) -> str:
    """One log line: the class name and the message, credentials removed (no traceback)."""
    if isinstance(exc, TalonClassicError):
        return scrub_credentials(str(exc))
    return f"{type(exc).__name__}: {scrub_credentials(str(exc))}"


class TalonClassicError(Exception):
    """Root of talon-classic's own errors."""


class SettingsError(TalonClassicError):
    """The settings are missing, malformed or unusable.

    The message is one line: ``"{source}: {field}: {problem}"``.
    """


class InputError(TalonClassicError):
    """An input file cannot be opened or read at all."""


class CheckpointError(TalonClassicError):
    """A checkpoint cannot be resumed: absent, unreadable, or written for another run."""


class LedgerError(TalonClassicError):
    """The ordering ledger (the state file) cannot be used: unreadable, locked, not a
    database, or written for another deployment or id prefix.

    The message is one line naming the file and the way out (``--state FILE``,
    ``--no-state``, or for ``serve`` another ``--spool``). ``reason`` is
    SQLite's short reason when a write failed ("disk full"), "closed" for a record or
    lookup after :meth:`~talon_classic.ledger.Ledger.close` (a thread still running when
    the run ended: the state file is fine), else None.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class DeadLetterError(TalonClassicError):
    """The dead-letter file cannot be written (a full disk, say): one line naming it.

    The events that were to go there are not marked delivered, so ``--resume``
    (or the next run) sends them again; the run stops."""


class SpoolError(TalonClassicError):
    """The server's spool cannot be opened: a directory, not a database, or out of reach."""


class ServeError(TalonClassicError):
    """An HTTP server (``serve``, the emulator) cannot listen where it was told to."""

    def __init__(self, message: str, host: str | None = None, port: int | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.port = port


class AddressInUse(ServeError):
    """Another program already listens on the host and port asked for."""


class DeliveryError(TalonClassicError):
    """Talon.One did not accept a request."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AuthError(DeliveryError):
    """401/403: the key is wrong or lacks rights; retrying cannot help."""


class RejectedError(DeliveryError):
    """400/404/422: Talon.One refused the content; it is not retried.

    ``message`` and ``errors`` are the server's own, kept for the dead-letter
    file so a user can see which attribute or value was at fault.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        integration_id: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.errors = errors or []
        self.integration_id = integration_id


class AudienceNotFound(RejectedError):
    """404: no audience with this id in the deployment (never created, or deleted).

    ``audience_id`` is the id asked for; the message is Talon.One's, scrubbed.
    """

    def __init__(self, message: str, audience_id: int, errors: list[dict[str, Any]] | None = None,
                 integration_id: str | None = None) -> None:
        super().__init__(message, 404, errors, integration_id)
        self.audience_id = audience_id


class AudienceExists(RejectedError):
    """409 on create: an audience with this ``integration`` and ``integrationId`` exists.

    The message keeps what Talon.One said; ``integration`` and
    ``audience_integration_id`` are what was asked for, so the caller can
    look the existing audience up (Management API ``GET /v1/audiences``).
    ``ours`` is True when the 409 answered a resend after an attempt whose
    answer was lost: then it is the audience that very attempt created, not
    someone else's.
    """

    def __init__(self, message: str, integration: str | None, audience_integration_id: str | None,
                 errors: list[dict[str, Any]] | None = None, *, ours: bool = False) -> None:
        super().__init__(message, 409, errors)
        self.integration = integration
        self.audience_integration_id = audience_integration_id
        self.ours = ours


class RetriesExhausted(DeliveryError):
    """A retryable failure (409/429/5xx/timeout) outlasted every attempt."""


class OutcomeUnknown(RetriesExhausted):
    """A request that must not be carried out twice (creating or deleting an audience) may
    have been carried out, and is not sent again.

    Its answer was lost after it was sent (a read timeout, a connection closed
    before or during the answer) or was a server error that does not say the
    request was left alone (a 5xx other than 503). ``status`` is that
    answer's, None when none came. The message says what may have happened.
    """


class BadLine(TalonClassicError, ValueError):
    """JSON text that cannot be read: ``reason`` is the skip code (``invalid_json``...).

    The message is short and never quotes the text: ``Expecting value: column 7``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Unserialisable(TalonClassicError, ValueError):
    """A value that is not JSON data (a set, bytes, a circular reference...), with where it is.

    Never raised for anything :func:`talon_classic.jsonio.loads` returned.
    """


class SchemaError(TalonClassicError):
    """An attribute schema (a ``--schema`` file, the cache, an API answer) is unusable.

    The message is one line naming the file, the item and the field:
    ``schema.json: data[3]: missing "type"``.
    """


class CompactError(TalonClassicError):
    """A compaction could not finish (disk full, out of memory, a failed Spark job).

    Nothing is written to the output when it is raised: the output appears
    only once complete.
    """


class MissingDependency(TalonClassicError):
    """An optional part needs something not installed here (pyspark, a Java runtime).

    The message says what to install.
    """


class WorkerError(TalonClassicError):
    """A worker process (``identify --workers``) ended unexpectedly or failed.

    The message is one line naming the worker and what happened (killed by a
    signal, an exit status, an unexpected error in it).
    """
