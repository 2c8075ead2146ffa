"""Shared command-line scaffolding: event loop, temporary directory, argument parsing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

__all__ = ["main", "workdir"]


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A temporary directory for configs, certificates, homes and logs."""
    if keep:
        path = Path(tempfile.mkdtemp(prefix="ollana-bench-"))
        print(f"(keeping {path})")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="ollana-bench-") as name:
        yield Path(name)


def main(
    description: str,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, Any]],
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse arguments and run a benchmark on uvloop (when present), as ollana itself runs."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(args))
    else:
        uvloop.run(run(args))
