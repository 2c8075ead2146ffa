"""The `ollana` command line: one click group, a module per command."""

from __future__ import annotations

import click

from ollana import __version__
from ollana.cli.demo import demo
from ollana.cli.device import device
from ollana.cli.discover import discover
from ollana.cli.emulate import emulate
from ollana.cli.serve import serve
from ollana.cli.status import status

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="ollana")
def main() -> None:
    """Every Ollama on your LAN, at 127.0.0.1:11434 on every machine."""


for _command in (serve, device, status, discover, emulate, demo):
    main.add_command(_command)
