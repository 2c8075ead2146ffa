"""Options every command takes the same way: --home and --config, and the settings they give.

Both may be given on a group and on its commands (`ollana device --home X show` and
`ollana device show --home X`); the one nearest the end of the line wins.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, TypeVar

import click

from ollana.config import LOG_LEVELS, ConfigError, Settings, default_home, load_settings

__all__ = ["LOG_LEVEL_CHOICE", "chosen_config", "chosen_home", "home_options", "settings"]

F = TypeVar("F", bound=Callable[..., object])

_HOME: Final = "ollana.home"
_CONFIG: Final = "ollana.config"

# One list of log levels for every command that takes --log-level, as the settings parse them.
LOG_LEVEL_CHOICE: Final = click.Choice(LOG_LEVELS, case_sensitive=False)


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Path | None], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
        if value is not None:
            ctx.meta[key] = value  # meta is shared by a group's context and its commands'

    return callback


def home_options(command: F) -> F:
    """Add --home and --config to a command or group."""
    command = click.option(
        "--config",
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember(_CONFIG),
        help="TOML config file  [default: OLLANA_CONFIG, else HOME/config.toml]",
    )(command)
    return click.option(
        "--home",
        type=click.Path(file_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember(_HOME),
        help="Identity, allow list and config  [default: OLLANA_HOME, else the data dir]",
    )(command)


def chosen_home() -> Path:
    """The home given with --home, else OLLANA_HOME, else the data dir."""
    given = click.get_current_context().meta.get(_HOME)
    return given.expanduser() if isinstance(given, Path) else default_home()


def chosen_config() -> Path | None:
    """The config file given with --config, if one was."""
    given = click.get_current_context().meta.get(_CONFIG)
    return given if isinstance(given, Path) else None


def settings(flags: Mapping[str, object] | None = None) -> Settings:
    """The settings for this command line, with its --home and --config; a usage error if bad."""
    merged = dict(flags or {})
    home = click.get_current_context().meta.get(_HOME)
    if home is not None:
        merged["home"] = str(home)
    try:
        return load_settings(merged, config_file=chosen_config())
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
