"""`ollana serve`: run in server or client mode."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from ollana.config import ConfigError, load_settings
from ollana.logs import setup_logging
from ollana.modes import ClientMode, ServerMode
from ollana.proxy.listener import ListenError

__all__ = ["serve"]


@click.command()
@click.option("--mode", type=click.Choice(["auto", "server", "client"]), help="Default: auto.")
@click.option(
    "--force-server-mode", is_flag=True, default=None, help="Server mode even if no Ollama answers."
)
@click.option("--listen", metavar="HOST:PORT", help="Client 127.0.0.1:11434, server 0.0.0.0:11435.")
@click.option("--ollama", metavar="URL", help="Server: the local Ollama (default: OLLAMA_HOST).")
@click.option(
    "--server",
    "servers",
    multiple=True,
    metavar="HOST:PORT[@PRIO]",
    help="Client: a static server.",
)
@click.option("--discovery-port", type=int, metavar="PORT", help="UDP discovery port (11436).")
@click.option(
    "--no-discovery", "discovery", flag_value=False, default=None, help="No UDP discovery."
)
@click.option(
    "--discovery-target",
    "discovery_targets",
    multiple=True,
    metavar="ADDR",
    help="Extra discovery address.",
)
@click.option(
    "--announce-interval", metavar="SECONDS", help="Server: seconds between announces (5)."
)
@click.option(
    "--admin-listen", metavar="HOST:PORT|off", help="Admin API and dashboard (127.0.0.1:11437)."
)
@click.option(
    "--open", "open_", is_flag=True, default=None, help="Server: accept any device (still TLS)."
)
@click.option("--read-only", is_flag=True, default=None, help="Server: refuse model management.")
@click.option(
    "--allow-management", is_flag=True, default=None, help="Server: with --open, allow it."
)
@click.option("--priority", type=int, help="Server: announced priority (higher wins).")
@click.option("--retry-buffer", metavar="SIZE", help="Client: bodies kept for retry (16M).")
@click.option("--wait-for-server", metavar="SECONDS", help="Client: wait for a server (5).")
@click.option("--grace", metavar="SECONDS", help="Drain time on stop (30).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML config file.")
@click.option("--home", type=click.Path(path_type=Path), help="Identity dir (OLLANA_HOME).")
@click.option(
    "-d", "--daemon", is_flag=True, default=None, help="Detach and run in the background."
)
@click.option("--pid-file", type=click.Path(path_type=Path), help="Daemon: pid file.")
@click.option("--log-file", type=click.Path(path_type=Path), help="Log to a file.")
@click.option("--log-level", metavar="LEVEL", help="trace|debug|info|warn|error (OLLANA_LOG).")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log line format.")
def serve(config_file: Path | None, open_: bool | None, **flags: Any) -> None:
    """Run ollana: server mode next to an Ollama, client mode elsewhere."""
    flags["open"] = open_
    try:
        settings = load_settings(flags, config_file=config_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    setup_logging(settings.log_level, settings.log_format, settings.log_file)
    if settings.daemon:
        raise click.ClickException("daemon mode (-d) is not available yet")

    def ready(mode: ClientMode | ServerMode) -> None:
        scheme = "https" if mode.mode == "server" else "http"
        address = settings.listen_address(mode.mode == "server")
        click.echo(f"ollana {mode.mode} listening on {scheme}://{address.host}:{mode.port}")
        sys.stdout.flush()

    from ollana.runner import run

    try:
        code = run(settings, ready)
    except ListenError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)
