"""`ollana demo`: emulator + server + client on this machine, one streamed answer."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import click

__all__ = ["demo"]


@click.command(short_help="Emulated Ollama, server and client here; one streamed answer.")
def demo() -> None:
    """Start an emulated Ollama, a server and a client here, and stream one answer.

    Prints each one's address and dashboard; runs until Ctrl-C.
    """
    from ollana.demo import run_demo
    from ollana.logs import setup_logging

    setup_logging("warning")

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(click.echo, write))
    click.echo("\nstopped")
