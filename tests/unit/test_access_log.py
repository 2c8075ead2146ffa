"""The access log's batches: complete lines, in order, written by size, timer, close or record."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollana.logs import (
    ACCESS_LOGGER,
    BatchedFileHandler,
    BatchedStreamHandler,
    JSONFormatter,
    TextFormatter,
    access_log,
    reopen_logs,
    setup_logging,
)
from tests.support.logstate import restored_logging
from tests.support.waiting import until


@pytest.fixture(autouse=True)
def _restore_root() -> Iterator[None]:
    """setup_logging() reconfigures the root logger: put pytest's back afterwards."""
    with restored_logging():
        yield


def log_file(tmp_path: Path, fmt: str = "text", *, size: int, interval: float) -> Path:
    """Log to a file as `ollana serve --log-file` does, with the batch limits given."""
    path = tmp_path / "ollana.log"
    setup_logging("info", fmt, path)
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, BatchedFileHandler)
    handler.flush_size, handler.flush_interval = size, interval
    return path


def request(n: int) -> None:
    access_log(f"127.0.0.1:{40000 + n}", "GET", f"/api/tags/{n}", 200, n / 1000, server="s1")


def paths(path: Path) -> list[str]:
    """The request paths of the access lines in a text log file, in file order."""
    return re.findall(r" GET (/api/tags/\d+) 200 ", path.read_text())


async def test_lines_wait_for_a_full_batch_and_arrive_complete_and_in_order(
    tmp_path: Path,
) -> None:
    path = log_file(tmp_path, size=4000, interval=3600)
    request(0)
    assert path.read_text() == ""  # held: no timer can have run, the batch is not full
    n = 1
    while path.read_text() == "":
        request(n)
        n += 1
    lines = path.read_text().splitlines(keepends=True)
    assert sum(map(len, lines)) >= 4000
    assert all(line.endswith("s via s1\n") for line in lines)
    assert paths(path) == [f"/api/tags/{i}" for i in range(n)]


async def test_a_timer_writes_what_waits(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=0.05)
    for n in range(3):
        request(n)
    assert path.read_text() == ""
    await until(lambda: len(paths(path)) == 3, "the timer's write")
    assert paths(path) == ["/api/tags/0", "/api/tags/1", "/api/tags/2"]
    request(3)  # the next batch gets a timer of its own
    await until(lambda: len(paths(path)) == 4, "the second timer's write")


async def test_close_writes_what_waits(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=3600)
    request(0)
    request(1)
    handler = logging.getLogger().handlers[0]
    handler.close()
    handler.close()  # twice is fine
    assert paths(path) == ["/api/tags/0", "/api/tags/1"]


async def test_a_new_setup_writes_what_the_old_handler_held(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=3600)
    request(0)
    setup_logging("info", "text", path)
    assert paths(path) == ["/api/tags/0"]


@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING, logging.ERROR])
async def test_any_other_record_comes_after_the_lines_before_it(tmp_path: Path, level: int) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=3600)
    request(0)
    request(1)
    logging.getLogger("ollana.test").log(level, "something happened")
    request(2)
    lines = path.read_text().splitlines()
    assert len(lines) == 3  # the record is written at once, the lines before it first
    assert lines[-1].endswith("ollana.test: something happened")
    assert paths(path) == ["/api/tags/0", "/api/tags/1"]


async def test_nothing_is_written_or_held_when_info_is_off(tmp_path: Path) -> None:
    path = tmp_path / "ollana.log"
    setup_logging("warn", "text", path)
    request(0)
    logging.getLogger().handlers[0].flush()
    assert path.read_text() == ""
    logging.getLogger("ollana.test").warning("only this")
    assert path.read_text().splitlines()[0].endswith("ollana.test: only this")


def test_without_an_event_loop_lines_are_written_at_once(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=3600)
    request(0)
    assert paths(path) == ["/api/tags/0"]


async def test_sighup_reopen_puts_held_lines_in_the_old_file(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=3600)
    request(0)
    path.rename(tmp_path / "old.log")
    assert reopen_logs() == [path]
    request(1)
    logging.getLogger().handlers[0].flush()
    assert paths(tmp_path / "old.log") == ["/api/tags/0"]
    assert paths(path) == ["/api/tags/1"]


async def test_a_batch_after_rotation_goes_to_the_new_file(tmp_path: Path) -> None:
    path = log_file(tmp_path, size=1 << 20, interval=0.05)
    request(0)
    await until(lambda: paths(path) == ["/api/tags/0"], "the first batch")
    path.rename(tmp_path / "ollana.log.1")
    request(1)
    await until(lambda: path.exists() and paths(path) == ["/api/tags/1"], "the new file")
    assert paths(tmp_path / "ollana.log.1") == ["/api/tags/0"]


async def test_fast_lines_equal_what_logging_itself_writes() -> None:
    for fmt in ("text", "json"):
        setup_logging("info", fmt)
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, BatchedStreamHandler)
        buffer = io.StringIO()
        handler.setStream(buffer)
        access_log("[::1]:5", "POST", '/a "b"\\ü\t', 404, 0.0004, route="loaded")
        handler.addFilter(lambda record: True)  # a filter: lines go through logging
        access_log("[::1]:5", "POST", '/a "b"\\ü\t', 404, 0.0004, route="loaded")
        handler.flush()
        fast, slow = buffer.getvalue().splitlines()
        if fmt == "json":
            fast_entry, slow_entry = json.loads(fast), json.loads(slow)
            assert fast_entry.pop("ts") <= slow_entry.pop("ts")
            assert fast_entry == slow_entry
            assert list(fast_entry) == list(slow_entry)
            assert fast_entry["path"] == '/a "b"\\ü\t' and fast_entry["server"] is None
        else:
            stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z "
            assert re.match(stamp, fast) and re.match(stamp, slow)
            assert fast[24:] == slow[24:]
            assert fast.endswith(
                f'INFO  {ACCESS_LOGGER}: [::1]:5 POST /a "b"\\ü\\t 404 0.000s (loaded)'
            )


def test_text_line_of_a_known_moment() -> None:
    line = TextFormatter().access_line(
        1700000000.25, "p GET / 200 0.100s", ("p", "GET", "/", 200, 0.1, None, None)
    )
    assert line == f"2023-11-14 22:13:20.250Z INFO  {ACCESS_LOGGER}: p GET / 200 0.100s\n"


@given(
    created=st.floats(min_value=0, max_value=4e9),
    msg=st.text(),
    peer=st.text(),
    method=st.text(),
    path=st.text(),
    status=st.integers(min_value=100, max_value=599),
    duration=st.floats(min_value=0, max_value=1e6),
    server=st.none() | st.text(),
    route=st.none() | st.text(),
)
def test_json_access_line_is_what_the_formatter_makes_of_the_record(
    created: float,
    msg: str,
    peer: str,
    method: str,
    path: str,
    status: int,
    duration: float,
    server: str | None,
    route: str | None,
) -> None:
    formatter = JSONFormatter()
    record = logging.makeLogRecord(
        {
            "name": ACCESS_LOGGER, "levelno": logging.INFO, "levelname": "INFO", "msg": msg,
            "created": created, "peer": peer, "method": method, "path": path,
            "status": status, "duration": round(duration, 6), "server": server, "route": route,
        }
    )  # fmt: skip
    fields = (peer, method, path, status, duration, server, route)
    assert formatter.access_line(created, msg, fields) == formatter.format(record) + "\n"


class BrokenOnce(io.StringIO):
    """A stream whose first write fails, as a full disk would."""

    failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise OSError(28, "No space left on device")
        return super().write(text)


async def test_a_failed_write_is_reported_and_later_lines_still_arrive(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = BrokenOnce()
    handler = BatchedStreamHandler(stream, flush_size=1 << 20, flush_interval=3600)
    handler.setFormatter(TextFormatter())
    handler.write_line("one\n")
    handler.flush()  # fails: reported, not raised
    handler.write_line("two\n")
    handler.close()
    assert stream.getvalue() == "two\n"
    reported = capsys.readouterr().err
    assert "No space left on device" in reported and "1 access line(s) lost" in reported
