"""`ollana discover`: the servers that answer on the LAN now."""

from __future__ import annotations

import click

__all__ = ["discover"]


@click.command()
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds to listen.")
@click.option("--json", "as_json", is_flag=True, help="Print the servers as JSON.")
def discover(timeout: float, as_json: bool) -> None:
    """List the ollana servers that answer on the LAN now."""
    raise click.ClickException("ollana discover is not available yet")
