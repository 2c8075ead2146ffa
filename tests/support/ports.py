"""Loopback ports the OS says are free, for processes that cannot report the one they bound."""

from __future__ import annotations

import socket

__all__ = ["free_port", "refused_address"]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free now: nothing listens on it (until someone binds it)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_address() -> str:
    """`127.0.0.1:port` where nothing listens: a connection to it is refused."""
    return f"127.0.0.1:{free_port()}"
