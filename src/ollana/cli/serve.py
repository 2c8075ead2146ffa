"""`ollana serve`: run in server or client mode."""

from __future__ import annotations

import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import click

from ollana.cli.options import LOG_LEVEL_CHOICE, home_options
from ollana.cli.options import settings as load_settings
from ollana.config import ConfigError, HostPort, Settings, check_mode
from ollana.daemon import (
    AlreadyRunning,
    PidFile,
    ReadyPipe,
    default_log_file,
    default_pid_file,
    detach,
    redirect_output,
)
from ollana.filemodes import unsafe_directory
from ollana.http.listener import ListenError
from ollana.identity import IdentityError, StoreError
from ollana.logs import setup_logging
from ollana.modes import ClientMode, ServerMode

__all__ = ["serve"]

log = logging.getLogger(__name__)


@click.command(short_help="Run ollana: server mode next to an Ollama, else client mode.")
@click.option(
    "--mode",
    type=click.Choice(["auto", "server", "client"]),
    help="auto (default): server mode if an Ollama answers at --ollama, else client mode."
    " server: serve --ollama even if it does not answer yet.",
)
@click.option(
    "--force-server-mode",
    is_flag=True,
    default=None,
    hidden=True,
    help="The same as --mode server (kept for old scripts).",
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
    "--limit",
    "limits",
    multiple=True,
    metavar="NAME=VALUE",
    help="A limit from docs/limits.md, e.g. header_timeout=5.",
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
@click.option("--name", metavar="NAME", help="This device's name for people (the hostname).")
@click.option(
    "--ollama-parallel",
    type=int,
    metavar="N",
    help="Server: requests Ollama runs at once (OLLAMA_NUM_PARALLEL, else 1); more wait"
    " in a fair queue. 0: no queue.",
)
@click.option("--max-queue", type=int, metavar="N", help="Server: more waiting get 503 (512).")
@click.option(
    "--no-usage", "usage", flag_value=False, default=None, help="Server: do not record usage."
)
@click.option("--retry-buffer", metavar="SIZE", help="Client: bodies kept for retry (16M).")
@click.option("--wait-for-server", metavar="SECONDS", help="Client: wait for a server (5).")
@click.option(
    "--grace", metavar="SECONDS", help="On stop, time in-flight requests get to finish (30)."
)
@home_options
@click.option(
    "-d",
    "--daemon",
    is_flag=True,
    default=None,
    help="Run in the background; returns once listening (or with the reason it could not).",
)
@click.option(
    "--pid-file",
    type=click.Path(dir_okay=False),
    help=f"Pid file, locked while running. With -d, default: {default_pid_file()}",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False),
    help=f"Append the log here; reopened on SIGHUP. With -d, default: {default_log_file()}",
)
@click.option("--log-level", type=LOG_LEVEL_CHOICE, help="Default: info (OLLANA_LOG).")
@click.option("--log-format", type=click.Choice(["text", "json"]), help="Log line format.")
def serve(open_: bool | None, **flags: Any) -> None:
    """Run ollana: server mode next to an Ollama, client mode elsewhere.

    SIGTERM or SIGINT (Ctrl-C; Ctrl-Break on Windows) stops it gracefully: no new
    connections, in-flight requests finish within --grace, then exit 0. A second one exits
    at once.
    """
    flags["open"] = open_
    flags["timings.announce_interval"] = flags.pop("announce_interval", None)
    for item in flags.pop("limits", None) or ():
        name, eq, value = item.partition("=")
        if not eq:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint="--limit")
        flags[f"limits.{name.strip().replace('-', '_')}"] = value
    settings = _absolute(load_settings(flags))
    try:
        check_mode(settings, settings.mode)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    pipe: ReadyPipe | None = None
    if settings.daemon:
        settings = dataclasses.replace(
            settings,
            pid_file=settings.pid_file or default_pid_file(),
            log_file=settings.log_file or default_log_file(),
        )
    _check_places(settings)
    if settings.daemon:
        assert settings.pid_file is not None and settings.log_file is not None
        try:
            pipe = detach(settings.pid_file, settings.log_file, sys.argv[1:])
        except OSError as exc:
            raise click.ClickException(f"cannot run in the background: {exc}") from None
    try:
        setup_logging(settings.log_level, settings.log_format, settings.log_file)
    except OSError as exc:
        raise click.ClickException(f"cannot open the log file: {exc}") from None
    try:
        code = _run(settings, pipe)
    except (AlreadyRunning, ConfigError, ListenError, IdentityError, StoreError, OSError) as exc:
        # A ListenError's text is whole (who holds the port, the flag): no "[Errno 98]" before it.
        message = exc.strerror if isinstance(exc, ListenError) and exc.strerror else str(exc)
        if pipe is None:
            raise click.ClickException(message) from None
        log.error("exiting: %s", message)
        pipe.error(message)
        code = 1
    except Exception as exc:
        if pipe is None:
            raise
        log.exception("exiting on an unexpected error")
        pipe.error(f"{type(exc).__name__}: {exc} (see {settings.log_file})")
        code = 1
    finally:
        if pipe is not None:
            pipe.close()
    sys.exit(code)


def _run(settings: Settings, pipe: ReadyPipe | None) -> int:
    """Hold the pid file (if any) and run until stopped."""
    from ollana.cli.running import check_before_start
    from ollana.runner import run

    def ready(mode: ClientMode | ServerMode) -> None:
        scheme = "https" if mode.mode == "server" else "http"
        address = settings.listen_address(mode.mode == "server")
        line = f"ollana {mode.mode} listening on {scheme}://{HostPort(address.host, mode.port)}"
        if pipe is not None:
            pipe.ready(line)
        else:
            click.echo(line)
            sys.stdout.flush()

    def hangup() -> None:
        if pipe is not None and settings.log_file is not None:
            redirect_output(settings.log_file)  # stray output and tracebacks follow the log

    pid_file = PidFile(settings.pid_file) if settings.pid_file is not None else None
    if pid_file is not None:
        pid_file.acquire()
        if pid_file.replaced:
            log.warning("replaced a stale pid file (pid %d is gone)", pid_file.replaced)
    try:
        return run(
            settings,
            ready,
            on_abort=pid_file.release if pid_file is not None else None,
            on_hangup=hangup,
            check=check_before_start,
        )
    finally:
        if pid_file is not None:
            pid_file.release()


def _check_places(settings: Settings) -> None:
    """Refuse a pid or log file in a directory other users can write (they could put a link
    there), naming the fix."""
    for path, what in ((settings.pid_file, "the pid file"), (settings.log_file, "the log file")):
        why = unsafe_directory(path.parent, what) if path is not None else None
        if why is not None:
            raise click.ClickException(why)


def _absolute(settings: Settings) -> Settings:
    """Make every path setting absolute, as a daemon leaves the working directory."""
    paths: dict[str, Any] = {
        f.name: value.absolute()
        for f in dataclasses.fields(settings)
        if isinstance(value := getattr(settings, f.name), Path)
    }
    return dataclasses.replace(settings, **paths)
