"""Logging setup: one line per event, text or JSON, to stderr or a file that survives rotation.

Request lines go through `access_log()` on the logger named `ollana.access`; they carry the
peer, method, path, status and duration (and the server and route in client mode), never a
body. While logging is as `setup_logging()` left it, an access line skips the LogRecord:
it is formatted once and held with the next ones for a single write, which happens when
`FLUSH_SIZE` characters are waiting, `FLUSH_INTERVAL` seconds after the first of them (a
timer of the running event loop), before any other record is written (so lines stay in
order), and on flush or close (at exit too). Other records are written at once.

Text lines cannot be forged: what the network supplied (paths, headers, device and model
names) may hold a line break or a terminal escape, so the text formatter writes every
character that is not printable as an escape (`\\n`, `\\x1b`, `\\u202e`). JSON lines
escape the same characters as JSON `\\u` escapes, so that the values read back unchanged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import logging.handlers
import os
import sys
import time
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Final, TextIO

from ollana.filemodes import open_private

__all__ = [
    "ACCESS_LOGGER",
    "FLUSH_INTERVAL",
    "FLUSH_SIZE",
    "LEVELS",
    "BatchedFileHandler",
    "BatchedStreamHandler",
    "JSONFormatter",
    "TextFormatter",
    "access_log",
    "escape_text",
    "reopen_logs",
    "setup_logging",
]

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
_root = logging.getLogger()

TEXT_FORMAT: Final = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"

# Access lines wait for one write until this many characters (about bytes: they are
# mostly ASCII) are held, or this many seconds passed since the first of them.
FLUSH_SIZE: Final = 32 * 1024
FLUSH_INTERVAL: Final = 0.2

# peer, method, path, status, duration, server, route
AccessFields = tuple[str, str, str, int, float, str | None, str | None]

# What every LogRecord has; anything else on a record came in through `extra=`.
_STANDARD_ATTRS: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def escape_text(text: str) -> str:
    """text with every non-printable character (controls, line and paragraph separators,
    bidirectional and other format characters) written as a backslash escape."""
    if text.isprintable():  # the common case, clean text: one pass in C
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in "\n\r\t":
        return repr(char)[1:-1]
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_safe(line: str) -> str:
    """A JSON text with the non-printable characters JSON leaves as they are (U+2028, C1,
    bidirectional controls) written as `\\u` escapes, which decode to the same string."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else _json_escape(c) for c in line)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


class TextFormatter(logging.Formatter):
    """`2025-01-31 12:00:00.123Z INFO  ollana.runner: message`, in UTC; one line a record
    (a traceback aside), whatever the message holds."""

    default_msec_format = "%s.%03dZ"

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self.converter = time.gmtime
        self._second: tuple[int, str] = (-1, "")  # one tuple: threads see both or neither

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The line before any traceback, its non-printable characters escaped."""
        return escape_text(super().formatMessage(record))

    def access_line(self, created: float, msg: str, fields: AccessFields) -> str:
        """The line `format()` makes of an access record, with its line end."""
        second = int(created)
        cached, stamp = self._second
        if cached != second:
            stamp = time.strftime(self.default_time_format, time.gmtime(second))
            self._second = (second, stamp)
        return f"{stamp}.{int((created - second) * 1000):03d}Z INFO  {ACCESS_LOGGER}: {msg}\n"


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
        return _json_safe(json.dumps(entry, ensure_ascii=False, default=str))

    def access_line(self, created: float, msg: str, fields: AccessFields) -> str:
        """The line `format()` makes of an access record, with its line end."""
        peer, method, path, status, duration, server, route = fields
        text = encode_basestring  # json.dumps(str, ensure_ascii=False), without its overhead
        return (
            _json_safe(
                f'{{"ts": {round(created, 6)!r}, "level": "info", "logger": "{ACCESS_LOGGER}", '
                f'"msg": {text(msg)}, "peer": {text(peer)}, "method": {text(method)}, '
                f'"path": {text(path)}, "status": {status:d}, "duration": {round(duration, 6)!r}, '
                f'"server": {"null" if server is None else text(server)}, '
                f'"route": {"null" if route is None else text(route)}}}'
            )
            + "\n"
        )


class BatchedStreamHandler(logging.StreamHandler[Any]):
    """A stream handler that also takes preformatted access lines and writes them in batches."""

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        flush_size: int = FLUSH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        super().__init__(stream)
        self._batching(flush_size, flush_interval)

    def _batching(self, flush_size: int, flush_interval: float) -> None:
        self.flush_size = flush_size
        self.flush_interval = flush_interval
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        assert self.lock is not None  # made by Handler.__init__
        self._lock = self.lock

    def write_line(self, line: str) -> None:
        """Hold one formatted line (ending in a newline) for the next batch."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None  # nothing would run a timer: no holding back
        with self._lock:
            self._lines.append(line)
            self._size += len(line)
            if loop is None or self._closing or self._size >= self.flush_size:
                self._write_batch()
            elif self._timer is None or self._timer_loop is not loop:
                self._timer = loop.call_later(self.flush_interval, self._on_timer)
                self._timer_loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        """Write the held lines, then the record: they came first."""
        self._drain()
        super().emit(record)

    def flush(self) -> None:
        """Write the held lines and flush the stream."""
        self.acquire()
        try:
            self._drain()
            super().flush()
        finally:
            self.release()

    def close(self) -> None:
        """Write the held lines, then close as logging's handler does; safe to call twice."""
        self.acquire()
        try:
            self._closing = True
            self._drain()
        finally:
            self.release()
        super().close()

    def _on_timer(self) -> None:
        self.acquire()
        try:
            self._timer = None
            self._write_batch()
        finally:
            self.release()

    def _write_batch(self) -> None:
        """Write the held lines where the next record would go (a moved file is reopened)."""
        self._drain()

    def _drain(self) -> None:
        """Write the held lines to the current stream (under the handler's lock)."""
        if not self._lines:
            return
        text = "".join(self._lines)
        count = len(self._lines)
        self._lines.clear()
        self._size = 0
        try:
            stream = self._stream_for_batch()
            if stream is not None:
                stream.write(text)
                stream.flush()
        except RecursionError:  # as logging.Handler.emit: never hide this one
            raise
        except Exception:
            # As for a record that cannot be written: say so on stderr, drop it, carry on.
            self.handleError(logging.makeLogRecord({"msg": f"{count} access line(s) lost"}))

    def _stream_for_batch(self) -> Any:
        return self.stream


_ACCESS_FORMATTERS: Final = (TextFormatter, JSONFormatter)


class BatchedFileHandler(BatchedStreamHandler, logging.handlers.WatchedFileHandler):
    """A log file, appended to, reopened when logrotate (or anyone) moves or deletes it."""

    def __init__(
        self,
        path: Path,
        *,
        flush_size: int = FLUSH_SIZE,
        flush_interval: float = FLUSH_INTERVAL,
    ) -> None:
        # A line that cannot be encoded is written escaped rather than lost with its batch.
        logging.handlers.WatchedFileHandler.__init__(
            self, path, mode="a", encoding="utf-8", errors="backslashreplace"
        )
        self._batching(flush_size, flush_interval)

    def _open(self) -> Any:
        """The file, appended to: never through a symbolic link, created 0600."""
        fd = open_private(Path(self.baseFilename), os.O_WRONLY | os.O_APPEND)
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def reopenIfNeeded(self) -> None:
        """Reopen the file if it was moved or deleted (an open file cannot be, on Windows)."""
        if sys.platform != "win32":
            super().reopenIfNeeded()

    def _write_batch(self) -> None:
        self.reopenIfNeeded()  # one stat per batch, not per line
        self._drain()

    def _stream_for_batch(self) -> Any:
        # As FileHandler.emit: a closed handler opens its file again to append.
        if self.stream is None:
            self.stream = self._open()
        return self.stream


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
    # As logging would format it (%d takes any number), and quicker than an f-string.
    msg = "%s %s %s %d %.3fs%s%s" % (peer, method, path, status, duration, via, how)  # noqa: UP031
    msg = escape_text(msg)  # the path and the names come from the network
    # Straight to the handler only when the record would reach it alone, unfiltered;
    # otherwise (a handler added, a filter, a formatter of someone else) as any record.
    handlers = _root.handlers
    if len(handlers) == 1 and not (_access.handlers or _access.filters) and _access.parent is _root:
        sink = handlers[0]
        formatter = sink.formatter
        if (
            isinstance(sink, BatchedStreamHandler)
            and isinstance(formatter, _ACCESS_FORMATTERS)
            and sink.level <= logging.INFO
            and not sink.filters
        ):
            fields = (peer, method, path, status, duration, server, route)
            sink.write_line(formatter.access_line(time.time(), msg, fields))
            return
    _access.info(
        msg,
        extra={
            "peer": peer, "method": method, "path": path, "status": status,
            "duration": round(duration, 6), "server": server, "route": route,
        },
    )  # fmt: skip


def setup_logging(level: str = "info", fmt: str = "text", file: Path | None = None) -> None:
    """Configure the root logger for a process of ollana; replaces (and closes) old handlers."""
    handler: BatchedStreamHandler
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handler = BatchedFileHandler(file)
    else:
        handler = BatchedStreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    for old in list(_root.handlers):
        _root.removeHandler(old)
        if isinstance(old, logging.FileHandler | BatchedStreamHandler):
            old.close()
    _root.addHandler(handler)
    _root.setLevel(LEVELS.get(level, logging.INFO))
    # Libraries stay quiet unless we are debugging.
    quiet = logging.WARNING if _root.level > logging.DEBUG else logging.DEBUG
    for name in ("aiohttp.access", "aiohttp.server", "asyncio"):
        logging.getLogger(name).setLevel(max(quiet, _root.level))


def reopen_logs() -> list[Path]:
    """Reopen every log file of the root logger (on SIGHUP, after rotation); returns them."""
    reopened: list[Path] = []
    for handler in _root.handlers:
        if not isinstance(handler, logging.FileHandler):
            continue
        handler.acquire()
        try:
            handler.flush()  # what was logged before the signal goes to the old file
            old = handler.setStream(handler._open())
            if old is not None:
                old.close()
            if isinstance(handler, logging.handlers.WatchedFileHandler):
                handler._statstream()  # remember the new file, or the next line reopens it again
        finally:
            handler.release()
        reopened.append(Path(handler.baseFilename))
    return reopened
