"""Broken files at start: `ollana serve` exits non-zero with one clear line naming the file.

Each case breaks one file of a fresh home (config, allow list, key, certificate) and runs
`ollana serve` as a real process. It must not start, must not print a traceback, and must
say which file is wrong (and, for a key others can read, how to fix it).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ollana.identity import load_identity
from tests.support import ollana_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes and owners")

WAIT = 60.0  # a start fails or succeeds at once; this only bounds a hang
NOBODY = 65534


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str


async def serve(home: Path, *args: str) -> Result:
    """Run `ollana serve` in client mode on free ports; stopped at once if it starts."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", "--mode", "client", "--listen", "127.0.0.1:0",
        "--no-discovery", "--admin-listen", "off", *args,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=ollana_env(home),
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    errors = asyncio.ensure_future(proc.stderr.read())
    out = b""
    try:
        async with asyncio.timeout(WAIT):
            while line := await proc.stdout.readline():
                out += line
                if b"listening on" in line:
                    proc.terminate()  # it started: the assertions say so
            await proc.wait()
            err = await errors
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        errors.cancel()
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def assert_refused(result: Result, path: Path, *more: str) -> None:
    assert result.code != 0, result
    assert "listening on" not in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert str(path) in result.stderr, result.stderr
    for text in more:
        assert text in result.stderr, result.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with an identity and an (empty) allow list, as after `ollana device show`."""
    home = tmp_path / "home"
    load_identity(home)
    (home / "devices.toml").write_text("# nobody yet\n")
    return home


def nested(depth: int = 3000) -> str:
    return "a = " + "[" * depth + "]" * depth + "\n"


Break = Callable[[Path], Path]


def write(name: str, data: bytes | str) -> Break:
    def apply(home: Path) -> Path:
        path = home / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data)
        return path

    return apply


def directory(name: str) -> Break:
    def apply(home: Path) -> Path:
        path = home / name
        path.unlink(missing_ok=True)
        path.mkdir()
        return path

    return apply


CASES: dict[str, Break] = {
    "config: not TOML": write("config.toml", "listen = \n"),
    "config: not UTF-8": write("config.toml", b"grace = '\xff\xfe'\n"),
    "config: nested too deeply": write("config.toml", nested()),
    "config: a directory": directory("config.toml"),
    "config: unknown setting": write("config.toml", "listne = '127.0.0.1:1'\n"),
    "config: a bad limit": write("config.toml", "[limits]\nheader_timeout = 'nan'\n"),
    "allow list: not TOML": write("devices.toml", "[[device]\n"),
    "allow list: not UTF-8": write("devices.toml", b"\xff\xfe\x00"),
    "allow list: a bad ID": write("devices.toml", "[[device]]\nid = 'abc'\n"),
    "allow list: a directory": directory("devices.toml"),
    "key: not a key": write("device.key", "-----BEGIN PRIVATE KEY-----\nAAAA\n"),
    "key: empty": write("device.key", b""),
    "key: a directory": directory("device.key"),
    "certificate: not one": write("device.crt", "not a certificate\n"),
}


@pytest.mark.parametrize("break_", list(CASES.values()), ids=list(CASES))
async def test_a_broken_file_stops_the_start_with_its_name(home: Path, break_: Break) -> None:
    path = break_(home)
    if path.is_file() and path.name == "device.key":
        path.chmod(0o600)
    result = await serve(home, "--config", str(home / "config.toml"))
    assert_refused(result, path)


async def test_an_allow_list_nested_too_deeply_stops_the_start_with_its_name(home: Path) -> None:
    path = write("devices.toml", nested())(home)
    assert_refused(await serve(home), path)


async def test_a_certificate_of_another_key_stops_the_start(home: Path, tmp_path: Path) -> None:
    other = load_identity(tmp_path / "other")
    (home / "device.crt").write_bytes(other.cert_pem)
    assert_refused(await serve(home), home / "device.crt")


async def test_a_lost_key_beside_its_certificate_is_not_replaced(home: Path) -> None:
    (home / "device.key").unlink()
    result = await serve(home)
    assert_refused(result, home / "device.key")
    assert not (home / "device.key").exists()  # a new identity would orphan every pairing


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660], ids=lambda m: f"{m:04o}")
async def test_a_key_others_can_read_is_refused_with_the_fix(home: Path, mode: int) -> None:
    key = home / "device.key"
    key.chmod(mode)
    assert_refused(await serve(home), key, f"chmod 600 {key}")
    assert key.stat().st_mode & 0o777 == mode  # said, not silently changed


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
async def test_an_unreadable_key_stops_the_start_with_its_name(home: Path) -> None:
    key = home / "device.key"
    key.chmod(0o000)
    try:
        assert_refused(await serve(home), key)
    finally:
        key.chmod(0o600)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away takes root")
async def test_a_key_owned_by_another_user_is_refused(home: Path) -> None:
    key = home / "device.key"
    os.chown(key, NOBODY, NOBODY)
    assert_refused(await serve(home), key, "chown")


async def test_an_allow_list_others_can_write_is_refused(home: Path) -> None:
    path = home / "devices.toml"
    path.chmod(0o666)
    assert_refused(await serve(home), path, "chmod")


async def test_a_config_file_others_can_write_is_refused(home: Path) -> None:
    path = write("config.toml", "grace = 3\n")(home)
    path.chmod(0o666)
    assert_refused(await serve(home, "--config", str(path)), path, "chmod")


async def test_a_healthy_home_starts(home: Path) -> None:
    """The cases above fail for their broken file, not for something every start hits."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", "--mode", "client", "--listen", "127.0.0.1:0",
        "--no-discovery", "--admin-listen", "off",
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=ollana_env(home),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert b"listening on" in line
    finally:
        proc.terminate()
        await proc.wait()


# --- the pid and log files ---------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir(mode=0o700)
    return path


@pytest.mark.parametrize("flag", ["--pid-file", "--log-file"])
async def test_a_link_in_place_of_the_pid_or_log_file_is_not_followed(
    home: Path, run_dir: Path, tmp_path: Path, flag: str
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    victim.chmod(0o644)
    link = run_dir / "ollana.file"
    link.symlink_to(victim)
    assert_refused(await serve(home, flag, str(link)), link)
    assert victim.read_text() == "keep\n"
    assert oct(victim.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("flag", ["--pid-file", "--log-file"])
async def test_a_directory_others_can_write_is_refused_with_the_fix(
    home: Path, run_dir: Path, flag: str
) -> None:
    run_dir.chmod(0o777)
    assert_refused(await serve(home, flag, str(run_dir / "ollana.file")), run_dir, "chmod o-w")
    assert list(run_dir.iterdir()) == []


async def test_the_pid_and_log_files_are_private(home: Path, run_dir: Path) -> None:
    pid_file, log_file = run_dir / "ollana.pid", run_dir / "ollana.log"
    log_file.write_text("an older line\n")
    log_file.chmod(0o644)  # as earlier versions made it
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", "--mode", "client", "--listen", "127.0.0.1:0",
        "--no-discovery", "--admin-listen", "off",
        "--pid-file", str(pid_file), "--log-file", str(log_file),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL, env=ollana_env(home),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert b"listening on" in line
        modes = {p.name: p.stat().st_mode & 0o777 for p in (pid_file, log_file)}
    finally:
        proc.terminate()
        await proc.wait()
    assert modes == {"ollana.pid": 0o600, "ollana.log": 0o600}
    assert log_file.read_text().startswith("an older line\n")
