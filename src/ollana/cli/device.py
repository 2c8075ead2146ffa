"""`ollana device`: show this device's ID, list, allow and disable peers."""

from __future__ import annotations

import click

__all__ = ["device"]


@click.group()
def device() -> None:
    """Show this device's ID; list, allow and disable peers."""
