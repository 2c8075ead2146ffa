"""`ollana usage`: what each device (or model) used of this server, from its usage store."""

from __future__ import annotations

import json
from typing import Any, cast

import click

from ollana.admin.usage import BY, DEFAULT_SINCE, parse_since, usage_document
from ollana.cli.options import chosen_home, home_options
from ollana.usage import Grouping, UsageStoreError

__all__ = ["usage"]


@click.command()
@click.option(
    "--since",
    default=DEFAULT_SINCE,
    show_default=True,
    metavar="SPAN|DATE",
    help="How far back: 30m, 24h, 7d, 2w, or a date (YYYY-MM-DD, UTC).",
)
@click.option("--by", type=click.Choice(BY), default="device", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@home_options
def usage(since: str, by: str, as_json: bool) -> None:
    """Requests and tokens per device, model or day on this server.

    Read from usage.sqlite in the data dir, which a running server writes every few
    seconds: it works whether or not the server runs.
    """
    try:
        start = parse_since(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    try:
        document = usage_document(chosen_home(), start, cast(Grouping, by))
    except UsageStoreError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    _print(document)


def _print(document: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=False)
    rows: list[dict[str, Any]] = document["rows"]
    if not rows:
        console.print(f"No usage recorded since {document['since']} ({document['file']}).")
        return
    by = document["by"]
    table = Table(box=None, padding=(0, 2, 0, 0), title_justify="left")
    keys = ["model"] if by == "model" else ["day", "device", "name"] if by == "day" else [
        "device", "name"
    ]  # fmt: skip
    for key in keys:
        table.add_column(key.capitalize())
    for title in ("Requests", "Prompt tokens", "Generated tokens", "Generation", "Errors"):
        table.add_column(title, justify="right")
    totals = [0, 0, 0, 0.0, 0]
    for row in rows:
        cells = [_cell(k, row[k]) for k in keys]
        values = (row["requests"], row["prompt_tokens"], row["generated_tokens"],
                  row["generation_seconds"], row["errors"])  # fmt: skip
        for i, value in enumerate(values):
            totals[i] += value
        table.add_row(*cells, *_numbers(values))
    if len(rows) > 1:
        table.add_row("Total", *[""] * (len(keys) - 1), *_numbers(totals), style="bold")
    console.print(f"Usage since {document['since']} by {by}")
    console.print(table)


def _cell(key: str, value: object) -> str:
    if key == "device":
        return str(value)[:8] or "anonymous"  # no certificate: open mode
    return str(value) or "-"


def _numbers(values: tuple[Any, ...] | list[Any]) -> list[str]:
    requests, prompt, generated, seconds, errors = values
    return [f"{requests:,}", f"{prompt:,}", f"{generated:,}", _duration(seconds), f"{errors:,}"]


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
