"""`ollana emulate`: an Ollama-API server with a deterministic model."""

from __future__ import annotations

import click

__all__ = ["emulate"]


@click.command()
def emulate() -> None:
    """Run an Ollama-API server with a deterministic model (tests, benchmarks, demo)."""
    raise click.ClickException("ollana emulate is not available yet")
