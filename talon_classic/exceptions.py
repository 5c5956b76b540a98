"""Every error talon-classic raises on purpose, in one place.

All derive from :class:`TalonClassicError`, so a caller can catch one type.
No message built here ever contains an API key: the classes only take the
parts of a failure that are safe to show.
"""

from __future__ import annotations

from typing import Any


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


class RetriesExhausted(DeliveryError):
    """A retryable failure (409/429/5xx/timeout) outlasted every attempt."""


class CompactError(TalonClassicError):
    """A compaction could not finish (disk full, out of memory, a failed Spark job).

    Nothing is written to the output when it is raised: the output appears
    only once complete.
    """


class MissingDependency(TalonClassicError):
    """An optional part needs something not installed here (pyspark, a Java runtime).

    The message says what to install.
    """
