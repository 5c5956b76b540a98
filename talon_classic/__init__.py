"""talon-classic: Segment identify events to Talon.One customer profiles.

The package does the job of Segment's classic Talon.One destination: it maps
identify events to customer-profile upserts (:mod:`talon_classic.transform`)
and delivers them through the Talon.One Integration API
(:mod:`talon_classic.client`), in bulk where it can.
"""

__version__ = "0.1.0"

from talon_classic.exceptions import (  # noqa: E402
    AuthError,
    RejectedError,
    RetriesExhausted,
    SettingsError,
    TalonClassicError,
)
from talon_classic.settings import Settings, load_settings  # noqa: E402
from talon_classic.transform import Engine, Result, transform  # noqa: E402

__all__ = [
    "__version__",
    "AuthError",
    "Engine",
    "RejectedError",
    "Result",
    "RetriesExhausted",
    "Settings",
    "SettingsError",
    "TalonClassicError",
    "load_settings",
    "transform",
]
