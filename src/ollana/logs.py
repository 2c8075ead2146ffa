"""Logging setup: one line per event, text or JSON, to stderr or a file that survives rotation.

Request lines go through `access_log()` on the logger named `ollana.access`; they carry the
peer, method, path, status and duration (and the server and route in client mode), never a
body.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Final

__all__ = ["ACCESS_LOGGER", "LEVELS", "JSONFormatter", "access_log", "reopen_logs", "setup_logging"]

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

ACCESS_LOGGER: Final = "ollana.access"
_access = logging.getLogger(ACCESS_LOGGER)

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"

# What every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, the `extra` fields, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a single line of JSON."""
        entry: dict[str, object] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def access_log(
    peer: str,
    method: str,
    path: str,
    status: int,
    duration: float,
    *,
    server: str | None = None,
    route: str | None = None,
) -> None:
    """Log one finished request at INFO on `ollana.access`; a no-op when INFO is filtered out.

    `path` should be the path without its query string; `duration` is in seconds.
    """
    if not _access.isEnabledFor(logging.INFO):
        return
    via = f" via {server}" if server else ""
    how = f" ({route})" if route else ""
    _access.info(
        "%s %s %s %d %.3fs%s%s",
        peer, method, path, status, duration, via, how,
        extra={
            "peer": peer, "method": method, "path": path, "status": status,
            "duration": round(duration, 6), "server": server, "route": route,
        },
    )  # fmt: skip


def _file_handler(path: Path) -> logging.FileHandler:
    path.parent.mkdir(parents=True, exist_ok=True)
    if sys.platform == "win32":
        # An open file cannot be renamed on Windows, so there is no rotation to watch for.
        handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    else:
        # Reopens the file when logrotate (or anyone) moves or deletes it.
        handler = logging.handlers.WatchedFileHandler(path, mode="a", encoding="utf-8")
    return handler


def setup_logging(level: str = "info", fmt: str = "text", file: Path | None = None) -> None:
    """Configure the root logger for a process of ollana; replaces (and closes) old handlers."""
    handler: logging.Handler = (
        _file_handler(file) if file is not None else logging.StreamHandler(sys.stderr)
    )
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        formatter = logging.Formatter(TEXT_FORMAT)
        formatter.converter = time.gmtime
        formatter.default_msec_format = "%s.%03dZ"
        handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        if isinstance(old, logging.FileHandler):
            old.close()
    root.addHandler(handler)
    root.setLevel(LEVELS.get(level, logging.INFO))
    # Libraries stay quiet unless we are debugging.
    quiet = logging.WARNING if root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiohttp.access", "aiohttp.server", "asyncio"):
        logging.getLogger(name).setLevel(max(quiet, root.level))


def reopen_logs() -> list[Path]:
    """Reopen every log file of the root logger (on SIGHUP, after rotation); returns them."""
    reopened: list[Path] = []
    for handler in logging.getLogger().handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        handler.acquire()
        try:
            old = handler.setStream(handler._open())
            if old is not None:
                old.close()
            if isinstance(handler, logging.handlers.WatchedFileHandler):
                handler._statstream()  # remember the new file, or the next line reopens it again
        finally:
            handler.release()
        reopened.append(Path(handler.baseFilename))
    return reopened
