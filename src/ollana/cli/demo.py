"""`ollana demo`: emulator + server + client on this machine, one streamed answer."""

from __future__ import annotations

import click

__all__ = ["demo"]


@click.command()
def demo() -> None:
    """Start an emulated Ollama, a server and a client here, and stream one answer."""
    raise click.ClickException("ollana demo is not available yet")
