"""How errors are told: our own messages as they are, anything else without credentials."""

from __future__ import annotations

import pytest

from talon_classic.exceptions import (
    DeliveryError,
    first_line,
    logged,
    scrub_credentials,
    shown,
)

KEY = "sk-live-0123456789abcdef"


@pytest.mark.parametrize("text", [
    # requests refusing a header with a newline in it
    "Invalid leading whitespace, reserved character(s), or return character(s) in header "
    f"value: 'ApiKey-v1 {KEY}\\n'",
    f"Invalid header value b'ApiKey-v1 {KEY}\\n'",  # http.client
    f"Authorization: ApiKey-v1 {KEY}\nx-more: {KEY}",  # a raw header, spanning lines
    f"{{'Authorization': 'ApiKey-v1 {KEY}', 'Content-Type': 'application/json'}}",
    f"authorization={KEY}",
    f"sent Bearer {KEY}",
    f"ManagementKey-v1 {KEY}",
])
def test_scrub_removes_authorization_values(text: str) -> None:
    out = scrub_credentials(text)
    assert KEY not in out and "[redacted]" in out
    assert "\n" not in out


def test_scrub_keeps_ordinary_text_and_bounds_it() -> None:
    assert scrub_credentials("basic auth is off; 3 profiles kept") == "basic auth is off; 3 profiles kept"
    assert scrub_credentials("a\tb\x00") == "a\\x09b\\x00"
    assert len(scrub_credentials("x" * 10_000)) < 600


def test_shown_and_logged() -> None:
    leak = ValueError(f"Invalid header value b'ApiKey-v1 {KEY}'")
    assert shown(leak) == "unexpected error (ValueError); see the log"
    assert logged(leak) == "ValueError: Invalid header value b'ApiKey-v1 [redacted]'"
    own = DeliveryError("unexpected answer 501 from Talon.One: Not Implemented", 501)
    assert shown(own) == logged(own) == "unexpected answer 501 from Talon.One: Not Implemented"


def test_first_line_keeps_a_librarys_error_to_one_short_line() -> None:
    assert first_line(RuntimeError("Catalog Error: no such table\nLINE 1: SELECT ...")) == \
        "Catalog Error: no such table"
    assert first_line(ValueError("x" * 500)) == "x" * 300
    assert first_line(ValueError("x" * 500), 200) == "x" * 200
    assert first_line(OSError()) == "OSError"  # says nothing: its name
    assert first_line(ValueError("  \n  ")) == "ValueError"
