"""Logging setup: one line per event, text or JSON, to stderr or a file."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Final

__all__ = ["LEVELS", "setup_logging"]

LEVELS: Final = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "off": logging.CRITICAL + 10,
}


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text", file: Path | None = None) -> None:
    """Configure the root logger for a process of ollana."""
    handler: logging.Handler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(file, encoding="utf-8")
    else:
        handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)-5s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        formatter.default_msec_format = "%s.%03dZ"
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    # Libraries stay quiet unless we are debugging.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiohttp.access", "aiohttp.server", "asyncio"):
        logging.getLogger(name).setLevel(max(quiet, root.level))
