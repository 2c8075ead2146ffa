"""Putting the root logger back after a test that ran setup_logging()."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["QUIETED", "restored_logging"]

# Loggers setup_logging() sets a level on.
QUIETED = ("aiohttp.access", "aiohttp.server", "asyncio")


@contextlib.contextmanager
def restored_logging() -> Iterator[None]:
    """Restore the root logger's handlers and level, and the quieted loggers' levels."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in QUIETED}
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
