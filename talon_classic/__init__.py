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

from talon_classic.audiences import Audience, MembershipAction, MembershipOutcome  # noqa: E402
from talon_classic.bulk import Options, Pipeline  # noqa: E402
from talon_classic.client import BulkOutcome, Client  # noqa: E402
from talon_classic.exceptions import (  # noqa: E402
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
from talon_classic.ledger import Ledger  # noqa: E402
from talon_classic.management import ManagementClient  # noqa: E402
from talon_classic.schema import Schema, read_schema_file  # noqa: E402
from talon_classic.settings import Settings, load_settings  # noqa: E402
from talon_classic.summary import Summary  # noqa: E402
from talon_classic.transform import Engine, Result, transform  # noqa: E402

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
