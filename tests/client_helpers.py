"""What the client's tests share: a client on the emulator, and a clock that does not wait."""

from __future__ import annotations

from talon_classic.client import Client

#: An API key shaped like Talon.One's, to look for in what must never show it.
KEY = "secret-key-0123456789-wxyz"


class FakeSleep:
    """Records the waits instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def client_for(emu, **kw) -> Client:
    """A client on the emulator ``emu``, with no rate limit unless told."""
    kw.setdefault("rate_limit", 0)
    return Client(emu.url, emu.api_key, **kw)
