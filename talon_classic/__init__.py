"""talon-classic: Segment identify events to Talon.One customer profiles.

The package does the job of Segment's classic Talon.One destination: it maps
identify events to customer-profile upserts (:class:`Engine`, in
:mod:`talon_classic.transform`), delivers them through the Talon.One
Integration API (:class:`Client`), and runs whole bulk jobs
(:class:`Pipeline` with :class:`Options`), keeping what Talon.One
acknowledged between runs in a :class:`Ledger`. Every error it raises on purpose
derives from :class:`TalonClassicError`.
"""

__version__ = "0.1.0"

import importlib  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:  # what type checkers and readers see; at run time, imported on use
    from talon_classic.audiences import Audience, MembershipAction, MembershipOutcome
    from talon_classic.bulk import Options, Pipeline
    from talon_classic.client import BulkOutcome, Client
    from talon_classic.exceptions import (
        AddressInUse,
        AudienceExists,
        AudienceNotFound,
        AuthError,
        BadLine,
        CheckpointError,
        CompactError,
        DeadLetterError,
        DeliveryError,
        InputError,
        LedgerError,
        MissingDependency,
        OutcomeUnknown,
        RejectedError,
        RetriesExhausted,
        SchemaError,
        ServeError,
        SettingsError,
        SpoolError,
        TalonClassicError,
        Unserialisable,
        WorkerError,
    )
    from talon_classic.ledger import Ledger
    from talon_classic.management import ManagementClient
    from talon_classic.schema import Schema, read_schema_file
    from talon_classic.settings import Settings, load_settings
    from talon_classic.summary import Summary
    from talon_classic.transform import Engine, Result, transform

#: Where each public name lives: imported on first use (PEP 562), so that
#: ``import talon_classic`` (and the ``talon-classic`` program's start, see
#: :mod:`talon_classic.console`) loads nothing it does not need.
_WHERE = {
    "Audience": "talon_classic.audiences",
    "MembershipAction": "talon_classic.audiences",
    "MembershipOutcome": "talon_classic.audiences",
    "Options": "talon_classic.bulk",
    "Pipeline": "talon_classic.bulk",
    "BulkOutcome": "talon_classic.client",
    "Client": "talon_classic.client",
    "AddressInUse": "talon_classic.exceptions",
    "AudienceExists": "talon_classic.exceptions",
    "AudienceNotFound": "talon_classic.exceptions",
    "AuthError": "talon_classic.exceptions",
    "BadLine": "talon_classic.exceptions",
    "CheckpointError": "talon_classic.exceptions",
    "CompactError": "talon_classic.exceptions",
    "DeadLetterError": "talon_classic.exceptions",
    "DeliveryError": "talon_classic.exceptions",
    "InputError": "talon_classic.exceptions",
    "LedgerError": "talon_classic.exceptions",
    "MissingDependency": "talon_classic.exceptions",
    "OutcomeUnknown": "talon_classic.exceptions",
    "RejectedError": "talon_classic.exceptions",
    "RetriesExhausted": "talon_classic.exceptions",
    "SchemaError": "talon_classic.exceptions",
    "ServeError": "talon_classic.exceptions",
    "SettingsError": "talon_classic.exceptions",
    "SpoolError": "talon_classic.exceptions",
    "TalonClassicError": "talon_classic.exceptions",
    "Unserialisable": "talon_classic.exceptions",
    "WorkerError": "talon_classic.exceptions",
    "Ledger": "talon_classic.ledger",
    "ManagementClient": "talon_classic.management",
    "Schema": "talon_classic.schema",
    "read_schema_file": "talon_classic.schema",
    "Settings": "talon_classic.settings",
    "load_settings": "talon_classic.settings",
    "Summary": "talon_classic.summary",
    "Engine": "talon_classic.transform",
    "Result": "talon_classic.transform",
    "transform": "talon_classic.transform",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'talon_classic' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


class _Package(types.ModuleType):
    """This package as a module object. The public function :func:`transform` has the
    name of the module that defines it, and importing that module (on first use, from
    anywhere) sets the package's attribute of that name to the module; here the
    function keeps it, as when every public name was imported at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "transform" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = [
    "__version__",
    "AddressInUse",
    "Audience",
    "AudienceExists",
    "AudienceNotFound",
    "AuthError",
    "BadLine",
    "BulkOutcome",
    "CheckpointError",
    "CompactError",
    "Client",
    "DeadLetterError",
    "DeliveryError",
    "Engine",
    "InputError",
    "Ledger",
    "LedgerError",
    "MissingDependency",
    "ManagementClient",
    "MembershipAction",
    "MembershipOutcome",
    "Options",
    "OutcomeUnknown",
    "Pipeline",
    "RejectedError",
    "Result",
    "RetriesExhausted",
    "Schema",
    "SchemaError",
    "ServeError",
    "Settings",
    "SettingsError",
    "SpoolError",
    "Summary",
    "TalonClassicError",
    "Unserialisable",
    "WorkerError",
    "load_settings",
    "read_schema_file",
    "transform",
]
