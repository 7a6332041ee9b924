"""Small helpers of the market's tests."""

from __future__ import annotations

import socket


def dead_endpoint() -> tuple[str, str]:
    """A wss URL where nothing listens (a port just freed) and some pin."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"wss://127.0.0.1:{port}", "sha256:" + "11" * 32
