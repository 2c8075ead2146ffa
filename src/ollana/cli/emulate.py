"""`ollana emulate`: an Ollama-API server with a deterministic model."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from ollana import lifecycle
from ollana.cli.options import LOG_LEVEL_CHOICE
from ollana.config import DEFAULT_OLLAMA_PORT, HostPort, parse_host_port
from ollana.emulator import DEFAULT_MODELS, EmulatorConfig, ModelStore, run_emulator
from ollana.logs import setup_logging

__all__ = ["emulate"]


def _listen(ctx: click.Context, param: click.Parameter, value: str) -> HostPort:
    try:
        return parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


async def _serve(config: EmulatorConfig, address: HostPort) -> None:
    """Run until SIGINT or SIGTERM (or Ctrl-C where the OS has no signals)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        # Windows has no loop signal handlers; Ctrl-C arrives as KeyboardInterrupt there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, task.cancel)

    def ready(port: int) -> None:
        click.echo(f"Ollama emulator listening on http://{HostPort(address.host, port)}")
        sys.stdout.flush()

    with contextlib.suppress(asyncio.CancelledError):
        await run_emulator(config, address.host, address.port, ready=ready)


@click.command(short_help="An Ollama-API server with a deterministic model.")
@click.option(
    "--listen",
    default=f"127.0.0.1:{DEFAULT_OLLAMA_PORT}",
    show_default=True,
    callback=_listen,
    metavar="HOST:PORT",
    help="Address to serve on (port 0 picks a free one).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    metavar="NAME",
    help=f"A model to have installed (repeatable; default: {', '.join(DEFAULT_MODELS)}).",
)
@click.option(
    "--tokens-per-second",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="N",
    help="Pace answers at N tokens a second (default: as fast as possible).",
)
@click.option(
    "--parallel",
    type=click.IntRange(min=0),
    default=0,
    metavar="N",
    help="Run N generations at once, the rest in turn, as OLLAMA_NUM_PARALLEL (0: no limit).",
)
@click.option(
    "--signed-out",
    is_flag=True,
    help="Act as an Ollama not signed in to ollama.com: cloud models and /api/me answer 401.",
)
@click.option(
    "--log-level",
    type=LOG_LEVEL_CHOICE,
    default="info",
    show_default=True,
)
def emulate(
    *,
    listen: HostPort,
    models: tuple[str, ...],
    tokens_per_second: float | None,
    signed_out: bool,
    parallel: int,
    log_level: str,
) -> None:
    """Run an Ollama-API server with a deterministic model (tests, benchmarks, demo)."""
    setup_logging(log_level.lower())
    try:
        config = EmulatorConfig(
            models=models or DEFAULT_MODELS,
            tokens_per_second=tokens_per_second,
            parallel=parallel,
            signed_in=not signed_out,
        )
        ModelStore(config.models)  # a bad name is a usage error, not a crash once running
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from None
    with contextlib.suppress(KeyboardInterrupt):
        try:
            lifecycle.run(_serve(config, listen))
        except OSError as exc:
            raise click.ClickException(
                f"cannot listen on {listen}: {exc.strerror or exc}"
            ) from None
