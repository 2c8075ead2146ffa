"""`ollana status`: the running ollana's state."""

from __future__ import annotations

import click

__all__ = ["status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(as_json: bool) -> None:
    """Show the running ollana: mode, servers, models, counters."""
    raise click.ClickException("ollana status is not available yet")
