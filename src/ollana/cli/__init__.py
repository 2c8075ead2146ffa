"""The `ollana` command line: one click group, a module per command.

A command's module is imported when that command runs (or help lists it): `ollana serve`
stays a long-running process, and it need not hold what `status` (rich), `emulate` or
`device` bring in.
"""

from __future__ import annotations

import importlib
from typing import Final

import click

from ollana import __version__

__all__ = ["COMMANDS", "main"]

# Each command lives in ollana.cli.<name>, as a click command of the same name.
COMMANDS: Final = (
    "serve",
    "device",
    "pair",
    "status",
    "usage",
    "discover",
    "emulate",
    "demo",
)


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted, as click lists them."""
        return sorted({*self.commands, *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module the first time."""
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            module = importlib.import_module(f"{__name__}.{cmd_name}")
            command = getattr(module, cmd_name)
            assert isinstance(command, click.Command)
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="ollana")
def main() -> None:
    """Every Ollama on your LAN, at 127.0.0.1:11434 on every machine."""
