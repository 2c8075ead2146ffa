"""Logging: formats, the access line, levels from the environment, files that get rotated."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollana.config import load_settings
from ollana.logs import (
    ACCESS_LOGGER,
    JSONFormatter,
    access_log,
    escape_text,
    reopen_logs,
    setup_logging,
)
from tests.support.logstate import QUIETED, restored_logging


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    """setup_logging() reconfigures the root logger: put pytest's back afterwards."""
    with restored_logging():
        yield


class Capture(logging.Handler):
    """Keeps the records it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def stream_root(fmt: str, level: str = "info") -> io.StringIO:
    """Configure logging as a process would, then point the handler at a buffer."""
    setup_logging(level, fmt)
    buffer = io.StringIO()
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    return buffer


def test_json_lines_carry_extra_fields_and_exceptions() -> None:
    buffer = stream_root("json")
    logging.getLogger("ollana.test").warning("hello %s", "there", extra={"peer": "10.0.0.2:5"})
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        logging.getLogger("ollana.test").exception("failed")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2  # one line per event, even with a multi-line traceback
    first, second = map(json.loads, lines)
    assert first["level"] == "warning" and first["logger"] == "ollana.test"
    assert (first["msg"], first["peer"]) == ("hello there", "10.0.0.2:5")
    assert isinstance(first["ts"], float)
    assert "exc" not in first
    assert second["msg"] == "failed" and "ValueError: boom" in second["exc"]


def test_json_formatter_renders_values_json_cannot() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.path = Path("/a/b")
    assert json.loads(JSONFormatter().format(record))["path"] == "/a/b"


def test_text_lines_have_a_utc_timestamp() -> None:
    buffer = stream_root("text")
    logging.getLogger("ollana.test").info("started")
    line = buffer.getvalue().rstrip("\n")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z INFO  ollana\.test: started", line
    ), line


def test_access_line_in_text_and_json() -> None:
    buffer = stream_root("text")
    access_log(
        "127.0.0.1:50000", "POST", "/api/chat", 200, 1.23456, server="3f2a9c01", route="loaded"
    )
    assert (
        buffer.getvalue()
        .rstrip()
        .endswith(
            f"{ACCESS_LOGGER}: 127.0.0.1:50000 POST /api/chat 200 1.235s via 3f2a9c01 (loaded)"
        )
    )
    buffer = stream_root("json")
    access_log("127.0.0.1:50001", "GET", "/api/tags", 503, 0.5)
    entry = json.loads(buffer.getvalue())
    assert entry["logger"] == ACCESS_LOGGER
    assert {k: entry[k] for k in ("peer", "method", "path", "status", "duration", "server")} == {
        "peer": "127.0.0.1:50001", "method": "GET", "path": "/api/tags", "status": 503,
        "duration": 0.5, "server": None,
    }  # fmt: skip


class Unprintable:
    def __str__(self) -> str:
        raise AssertionError("formatted although the level filters the line out")

    __format__ = __repr__ = __str__  # type: ignore[assignment]


def test_access_log_does_nothing_when_filtered_out() -> None:
    setup_logging("warn")
    capture = Capture()
    logging.getLogger().addHandler(capture)
    access_log(Unprintable(), "GET", "/", 200, 0.1, server=Unprintable())  # type: ignore[arg-type]
    assert capture.records == []
    setup_logging("info")
    logging.getLogger().addHandler(capture)
    access_log("p", "GET", "/", 200, 0.1)
    assert [r.getMessage() for r in capture.records] == ["p GET / 200 0.100s"]


@pytest.mark.parametrize(
    ("env", "level"),
    [
        ({"OLLANA_LOG": "debug"}, logging.DEBUG),
        ({"RUST_LOG": "trace"}, logging.DEBUG),
        ({"RUST_LOG": "hyper=trace,ollana=warn"}, logging.WARNING),
        ({"RUST_LOG": "debug", "OLLANA_LOG": "error"}, logging.ERROR),
        ({"OLLANA_LOG": "off"}, logging.CRITICAL + 10),
        ({}, logging.INFO),
    ],
)
def test_level_from_the_environment(env: dict[str, str], level: int, tmp_path: Path) -> None:
    settings = load_settings({"home": str(tmp_path)}, env=env)
    setup_logging(settings.log_level, settings.log_format)
    assert logging.getLogger().level == level


def test_libraries_stay_quiet_unless_debugging() -> None:
    setup_logging("info")
    assert all(logging.getLogger(n).level == logging.WARNING for n in QUIETED)
    setup_logging("debug")
    assert all(logging.getLogger(n).level == logging.DEBUG for n in QUIETED)


def test_log_file_appends_and_old_handlers_are_closed(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "ollana.log"
    path.parent.mkdir()
    path.write_text("from before\n")
    setup_logging("info", "text", path)
    first = logging.getLogger().handlers[0]
    assert isinstance(first, logging.FileHandler)
    logging.getLogger("ollana.test").info("one")
    setup_logging("info", "text", path)
    assert first.stream is None or first.stream.closed
    logging.getLogger("ollana.test").info("two")
    lines = path.read_text().splitlines()
    assert lines[0] == "from before"
    assert [line.rsplit(": ", 1)[1] for line in lines[1:]] == ["one", "two"]


@pytest.mark.skipif(sys.platform == "win32", reason="an open file cannot be renamed on Windows")
def test_log_file_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "ollana.log"
    setup_logging("info", "text", path)
    log = logging.getLogger("ollana.test")
    log.info("before rotation")
    path.rename(tmp_path / "ollana.log.1")
    log.info("after rotation")  # the watched file is gone: a new one is opened
    assert "before rotation" in (tmp_path / "ollana.log.1").read_text()
    assert "after rotation" in path.read_text()


@pytest.mark.skipif(sys.platform == "win32", reason="an open file cannot be renamed on Windows")
def test_reopen_logs_starts_a_new_file(tmp_path: Path) -> None:
    path = tmp_path / "ollana.log"
    setup_logging("info", "json", path)
    logging.getLogger("ollana.test").info("one")
    path.rename(tmp_path / "old.log")
    assert reopen_logs() == [path]
    assert path.exists() and path.read_text() == ""
    logging.getLogger("ollana.test").info("two")
    assert [json.loads(x)["msg"] for x in path.read_text().splitlines()] == ["two"]
    assert [json.loads(x)["msg"] for x in (tmp_path / "old.log").read_text().splitlines()] == [
        "one"
    ]


def test_reopen_logs_without_a_file_does_nothing() -> None:
    setup_logging("info")
    assert reopen_logs() == []


FORGED = "/x\n2026-01-01 00:00:00.000Z WARN  ollana.identity.trust: device cda90715 allowed"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_network_text_cannot_start_a_line_of_its_own(fmt: str) -> None:
    buffer = stream_root(fmt)
    access_log("192.0.2.9:5", "GET", FORGED + "\x1b[2J\u2028\u202e", 404, 0.001)
    logging.getLogger("ollana.cluster").info("server %s is not paired", "evil\r\n\x85name")
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2, lines
    if fmt == "text":
        assert "/x\\n2026-01-01" in lines[0] and "\\x1b[2J\\u2028\\u202e 404" in lines[0]
        assert lines[1].endswith("server evil\\r\\n\\x85name is not paired")
        assert all(line.isprintable() for line in lines)
    else:
        assert json.loads(lines[0])["path"] == FORGED + "\x1b[2J\u2028\u202e"


def test_clean_text_is_returned_as_it_is() -> None:
    text = "GET /api/chat caf\u00e9 \u4e2d\u6587"
    assert escape_text(text) is text
    assert escape_text("a\tb\x00\x7f\u200b\U000e0001") == "a\\tb\\x00\\x7f\\u200b\\U000e0001"


def test_a_traceback_keeps_its_lines() -> None:
    buffer = stream_root("text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("ollana.test").exception("failed for %s", "a\nb")
    text = buffer.getvalue()
    assert "failed for a\\nb\nTraceback" in text
