"""`ollana serve -d` as real processes: start, pid file, log file, refusal, stale files, stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.integration.test_shutdown import (
    COMMON,
    WAIT,
    ConnectionPool,
    assert_refused,
    completed,
    held_request,
    pair,
    read_rest,
    wait_for_line,
)
from tests.support import OllanaProcess, ollana_env
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX daemons (fork, setsid, signals); Windows detaches"
)

STARTED = re.compile(r"listening on http://127\.0\.0\.1:(?P<port>\d+) \(pid (?P<pid>\d+), log ")
CLIENT = ("--mode", "client", "--server", "127.0.0.1:1", "--wait-for-server", "0")


@dataclass
class Result:
    """What `ollana serve -d …` said and returned."""

    code: int
    out: str
    err: str

    @property
    def pid(self) -> int:
        match = STARTED.search(self.out)
        assert match, (self.out, self.err)
        return int(match["pid"])

    @property
    def port(self) -> int:
        match = STARTED.search(self.out)
        assert match, (self.out, self.err)
        return int(match["port"])


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    return False


async def wait_gone(pid: int) -> None:
    await until(lambda: gone(pid), f"pid {pid} gone", WAIT)


class Daemons:
    """Starts `ollana serve -d`; every daemon it saw is killed at the end of the test."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.home = tmp / "home"
        self.pid_file = tmp / "run" / "ollana.pid"
        self.log_file = tmp / "logs" / "ollana.log"
        self.pids: set[int] = set()

    async def start(
        self, *args: str, files: bool = True, env: dict[str, str] | None = None
    ) -> Result:
        """Run `ollana serve -d ARGS…` (with this test's pid and log files) to its end."""
        paths = ("--pid-file", str(self.pid_file), "--log-file", str(self.log_file))
        # Default paths, where a test uses them, must not be the real user's.
        env = {
            "HOME": str(self.tmp / "user"),
            "XDG_STATE_HOME": str(self.tmp / "xdg"),
            **(env or {}),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ollana", "serve", "-d", *COMMON, *args,
            *(paths if files else ()),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=ollana_env(self.home, env),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
        result = Result(await proc.wait(), out.decode(), err.decode())
        if STARTED.search(result.out):
            self.pids.add(result.pid)
        return result

    def kill_all(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.kill_all()


async def test_start_returns_once_listening_and_sigterm_cleans_up(daemons: Daemons) -> None:
    started = await daemons.start(*CLIENT)
    assert started.code == 0, started.err
    assert f"log {daemons.log_file})" in started.out
    pid = started.pid
    # Listening already: the very first request is answered.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{started.port}/api/version") as response,
    ):
        assert "X-Ollana-Version" in response.headers
    assert daemons.pid_file.read_text() == f"{pid}\n"
    assert not gone(pid)
    assert os.getsid(pid) != os.getsid(0)  # its own session: no terminal of ours
    await wait_for_line(daemons.log_file, "client listening on")

    os.kill(pid, signal.SIGTERM)
    await wait_gone(pid)
    assert not daemons.pid_file.exists()
    await wait_for_line(daemons.log_file, "SIGTERM: no longer accepting")
    await wait_for_line(daemons.log_file, "stopped after")


async def test_refuses_to_start_when_running(daemons: Daemons) -> None:
    first = await daemons.start(*CLIENT)
    assert first.code == 0, first.err
    second = await daemons.start(*CLIENT)
    assert second.code == 1
    assert f"already running (pid {first.pid} holds {daemons.pid_file})" in second.err
    assert second.out == ""
    assert not gone(first.pid)
    assert daemons.pid_file.read_text() == f"{first.pid}\n"
    await wait_for_line(daemons.log_file, "exiting: ollana is already running")


async def test_foreground_pid_file_is_held_and_refused_while_a_daemon_runs(
    daemons: Daemons, tmp_path: Path
) -> None:
    own = tmp_path / "fg.pid"
    async with await OllanaProcess.start(
        "serve", *COMMON, *CLIENT, "--pid-file", str(own), home=daemons.home
    ) as foreground:
        assert own.read_text() == f"{foreground.proc.pid}\n"
        refused = await daemons.start(
            *CLIENT, "--pid-file", str(own), "--log-file", str(daemons.log_file), files=False
        )
        assert refused.code == 1
        assert f"already running (pid {foreground.proc.pid} holds {own})" in refused.err
        assert await foreground.stop() == 0
    assert not own.exists()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return int(done.stdout)


@pytest.mark.parametrize("content", ["dead", "garbage", "empty"])
async def test_stale_pid_file_is_replaced(daemons: Daemons, content: str) -> None:
    old = dead_pid()
    text = {"dead": f"{old}\n", "garbage": "not a pid\n", "empty": ""}[content]
    daemons.pid_file.parent.mkdir(parents=True)
    daemons.pid_file.write_text(text)
    started = await daemons.start(*CLIENT)
    assert started.code == 0, started.err
    assert daemons.pid_file.read_text() == f"{started.pid}\n"
    if content == "dead":
        await wait_for_line(daemons.log_file, rf"replaced a stale pid file \(pid {old} is gone\)")


async def test_racing_daemons_only_one_wins(daemons: Daemons) -> None:
    results = await asyncio.gather(*(daemons.start(*CLIENT) for _ in range(4)))
    winners = [r for r in results if r.code == 0]
    assert len(winners) == 1, results
    for loser in (r for r in results if r.code != 0):
        assert "already running" in loser.err
    assert daemons.pid_file.read_text() == f"{winners[0].pid}\n"


async def test_port_in_use_is_reported_by_the_starting_process(daemons: Daemons) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await daemons.start(*CLIENT, "--listen", f"127.0.0.1:{port}")
    assert result.code == 1
    assert f"127.0.0.1:{port} is already in use" in result.err
    assert result.out == ""
    assert not daemons.pid_file.exists()
    await wait_for_line(daemons.log_file, "already in use")


async def test_bad_config_is_reported_before_detaching(daemons: Daemons, tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("grace = [\n")
    result = await daemons.start(*CLIENT, "--config", str(config))
    assert result.code != 0
    assert "invalid TOML" in result.err
    assert not daemons.pid_file.exists()
    assert not daemons.log_file.exists()


async def test_unwritable_log_file_is_reported_before_detaching(
    daemons: Daemons, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")
    log_file = tmp_path / "a-file" / "ollana.log"
    result = await daemons.start(
        *CLIENT, "--pid-file", str(daemons.pid_file), "--log-file", str(log_file), files=False
    )
    assert result.code == 1
    assert "cannot run in the background" in result.err and str(tmp_path / "a-file") in result.err
    assert result.out == ""


async def test_sighup_reopens_the_log_file(daemons: Daemons) -> None:
    started = await daemons.start(*CLIENT)
    assert started.code == 0, started.err
    await wait_for_line(daemons.log_file, "client listening on")
    rotated = daemons.log_file.with_suffix(".log.1")
    daemons.log_file.rename(rotated)
    os.kill(started.pid, signal.SIGHUP)
    await wait_for_line(daemons.log_file, f"SIGHUP: reopened {daemons.log_file}")
    assert not gone(started.pid)
    assert "client listening on" in rotated.read_text()
    assert "client listening on" not in daemons.log_file.read_text()


@pytest.mark.skipif(sys.platform != "linux", reason="XDG directories are a Linux convention")
async def test_default_paths_are_in_the_user_state_dir(daemons: Daemons, tmp_path: Path) -> None:
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    pid_file = tmp_path / "state" / "ollana" / "ollana.pid"
    log_file = tmp_path / "state" / "ollana" / "log" / "ollana.log"
    started = await daemons.start(*CLIENT, files=False, env=env)
    assert started.code == 0, started.err
    assert f"log {log_file})" in started.out
    assert pid_file.read_text() == f"{started.pid}\n"
    await wait_for_line(log_file, "client listening on")
    help_text = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", "--help",
        stdout=asyncio.subprocess.PIPE, env=ollana_env(daemons.home, {**env, "COLUMNS": "200"}),
    )  # fmt: skip
    out, _ = await help_text.communicate()
    unwrapped = "".join(out.decode().split())
    assert str(pid_file) in unwrapped and str(log_file) in unwrapped


@contextlib.asynccontextmanager
async def server_for_daemon(tmp: Path, upstream: ConnectionPool) -> AsyncIterator[tuple[Path, int]]:
    """A paired server in front of `upstream`; yields the client's home and the server port."""
    homes = pair(tmp)
    async with await OllanaProcess.start(
        "serve", *COMMON, "--mode", "server", "--ollama", upstream.url,
        home=homes.server, log=tmp / "server.log",
    ) as server:  # fmt: skip
        yield homes.client, server.port


@pytest.mark.parametrize("signals", [1, 2], ids=["drains", "second-signal"])
async def test_daemon_stops_in_stages_too(daemons: Daemons, tmp_path: Path, signals: int) -> None:
    async with ConnectionPool() as upstream, server_for_daemon(tmp_path, upstream) as (home, port):
        daemons.home = home
        started = await daemons.start(
            "--mode", "client", "--server", f"127.0.0.1:{port}", "--wait-for-server", "20",
            "--grace", "10" if signals == 1 else "600",
        )  # fmt: skip
        assert started.code == 0, started.err
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{started.port}/api/generate", json=held_request()
            ) as response,
        ):
            assert response.status == 200, await response.text()
            await response.content.readline()
            await asyncio.wait_for(upstream.held.wait(), WAIT)
            os.kill(started.pid, signal.SIGTERM)
            await wait_for_line(daemons.log_file, "SIGTERM: no longer accepting connections")
            await assert_refused(started.port)
            if signals == 2:
                os.kill(started.pid, signal.SIGTERM)
                await wait_gone(started.pid)
            upstream.release.set()
            rest = await read_rest(response)
        await wait_gone(started.pid)
        assert completed(rest) == (signals == 1)
        assert not daemons.pid_file.exists()
