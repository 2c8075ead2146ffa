"""`ollana serve`: run in server or client mode."""

from __future__ import annotations

import click

__all__ = ["serve"]


@click.command()
def serve() -> None:
    """Run ollana: server mode next to an Ollama, client mode elsewhere."""
    raise click.ClickException("ollana serve is not available yet")
