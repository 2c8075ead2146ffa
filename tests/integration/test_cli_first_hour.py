"""What a new user reads: a second `ollana serve`, taken ports, --home everywhere, help texts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import click
from click.testing import CliRunner

from ollana.cli import COMMANDS, main
from ollana.cli.discover import Found
from ollana.config import LOG_LEVELS
from ollana.discovery import Announce
from ollana.logs import LEVELS
from tests.integration.emulator_fixtures import running_emulator
from tests.support import OllanaProcess
from tests.support.ports import free_port
from tests.support.process import ollana_env

WAIT = 30.0  # upper bound for a process that should exit at once
LINUX = sys.platform.startswith("linux")  # where the holder's pid is found (/proc)


async def serve_fails(home: Path, *args: str) -> str:
    """Run `ollana serve ARGS…`, expect exit code 1 at once; its error line."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", "--no-discovery", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=ollana_env(home),
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    assert b"listening on" not in out
    assert proc.returncode == 1, err.decode()
    text = err.decode()
    assert "Traceback" not in text
    errors = [line for line in text.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, text  # the one line that says why (the log lines are before it)
    return errors[0]


@contextlib.contextmanager
def held_port() -> Iterator[int]:
    """A port some other program listens on (this test process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# --- a second serve -------------------------------------------------------------------------


async def test_second_server_for_the_same_ollama_names_the_first(tmp_path: Path) -> None:
    async with running_emulator() as ollama:
        admin = f"127.0.0.1:{free_port()}"
        common = ("--ollama", ollama.url, "--admin-listen", admin)
        async with await OllanaProcess.start(
            "serve", "--no-discovery", "--listen", "127.0.0.1:0", *common, home=tmp_path / "a"
        ) as first:
            # Other ports: it would start, a second server in front of the same Ollama.
            error = await serve_fails(tmp_path / "b", "--listen", "127.0.0.1:0", *common)
            assert error == (
                f"Error: another ollana in server mode (on 127.0.0.1:{first.port},"
                f" pid {first.proc.pid}, admin API {admin}) already serves the Ollama at"
                f" {ollama.url}: stop it first, run this one with --mode client, or with"
                " --mode server to serve it twice"
            )


async def test_second_client_on_a_taken_admin_port_names_the_first(tmp_path: Path) -> None:
    admin = f"127.0.0.1:{free_port()}"
    async with await OllanaProcess.start(
        "serve", "--no-discovery", "--mode", "client", "--listen", "127.0.0.1:0",
        "--admin-listen", admin, home=tmp_path / "a",
    ) as first:  # fmt: skip
        error = await serve_fails(
            tmp_path / "b", "--mode", "client", "--listen", "127.0.0.1:0", "--admin-listen", admin
        )
        assert error == (
            f"Error: the admin API address {admin} is already in use by another ollana in client"
            f" mode (on 127.0.0.1:{first.port}, pid {first.proc.pid}, admin API {admin});"
            " stop that or choose another with --admin-listen HOST:PORT|off"
        )


async def test_taken_listen_port_is_named_before_the_admin_port(tmp_path: Path) -> None:
    async with await OllanaProcess.start(
        "serve", "--no-discovery", "--mode", "client", "--listen", "127.0.0.1:0",
        "--admin-listen", "off", home=tmp_path / "a",
    ) as first:  # fmt: skip
        with held_port() as admin:
            error = await serve_fails(
                tmp_path / "b", "--mode", "client", "--listen", f"127.0.0.1:{first.port}",
                "--admin-listen", f"127.0.0.1:{admin}",
            )  # fmt: skip
    assert error.startswith(
        f"Error: the listen address 127.0.0.1:{first.port} is already in use by another ollana"
    )
    if LINUX:
        assert f"(pid {first.proc.pid}: " in error
    assert error.endswith("; stop that or choose another with --listen HOST:PORT")


async def test_admin_port_held_by_another_program_names_it_and_the_flag(tmp_path: Path) -> None:
    with held_port() as admin:
        error = await serve_fails(
            tmp_path, "--mode", "client", "--listen", "127.0.0.1:0",
            "--admin-listen", f"127.0.0.1:{admin}",
        )  # fmt: skip
    assert error.startswith(f"Error: the admin API address 127.0.0.1:{admin} is already in use by ")
    if LINUX:
        assert f"(pid {os.getpid()}: " in error  # this test process holds it
    assert error.endswith("choose another with --admin-listen HOST:PORT|off")


# --- --home and --config on every command ---------------------------------------------------


def _commands() -> Iterator[tuple[str, click.Command]]:
    for name in COMMANDS:
        command = main.get_command(click.Context(main), name)
        assert command is not None
        yield name, command
        if isinstance(command, click.Group):
            for sub in command.commands.values():
                yield f"{name} {sub.name}", sub


def test_every_command_that_reads_a_home_takes_home_and_config() -> None:
    takes = {
        name: {p.name for p in command.params} >= {"home", "config"}
        for name, command in _commands()
    }
    # demo and emulate keep nothing: the demo's homes are temporary, the emulator has none.
    assert {name for name, ok in takes.items() if not ok} == {"demo", "emulate"}


def test_device_show_takes_home_after_the_subcommand(tmp_path: Path) -> None:
    env = {"OLLANA_HOME": str(tmp_path / "env")}
    after = CliRunner().invoke(main, ["device", "show", "--home", str(tmp_path / "x")], env=env)
    before = CliRunner().invoke(main, ["device", "--home", str(tmp_path / "x"), "show"], env=env)
    assert after.exit_code == 0, after.output
    assert after.stdout == before.stdout
    assert after.stdout.startswith("Device ID: ")
    assert (tmp_path / "x" / "device.crt").exists()
    assert not (tmp_path / "env").exists()


def test_status_reads_the_admin_address_from_home_or_config(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    (tmp_path / "config.toml").write_text(f'admin-listen = "127.0.0.1:{port}"\n')
    expected = f"Error: no ollana is running at 127.0.0.1:{port} (start one with `ollana serve`)\n"
    for args in (["--home", str(tmp_path)], ["--config", str(tmp_path / "config.toml")]):
        result = CliRunner().invoke(main, ["status", *args], env={"OLLANA_HOME": "/nonexistent"})
        assert (result.exit_code, result.stderr) == (1, expected), args


def test_discover_reads_targets_from_home(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('discovery-targets = ["nonexistent.invalid"]\n')
    result = CliRunner().invoke(main, ["discover", "--home", str(tmp_path), "--timeout", "0.1"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: discovery target nonexistent.invalid does not resolve")


# --- words ------------------------------------------------------------------------------------


def test_discover_names_an_unresolvable_target(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["discover", "--target", "nonexistent.invalid", "--timeout", "0.1"],
        env={"OLLANA_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: discovery target nonexistent.invalid does not resolve")
    assert len(result.stderr.splitlines()) == 1


def test_discover_json_names_the_models_digest() -> None:
    announce = Announce(device="a" * 64, role="server", port=11435, models="abc123")
    document = Found("192.0.2.1", announce, None).as_json()
    assert document["models_digest"] == "abc123"
    assert "models" not in document


def test_top_level_help_truncates_no_description() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    commands = result.stdout.split("Commands:")[1].strip().splitlines()
    assert sorted(line.split()[0] for line in commands) == sorted(COMMANDS)
    assert not [line for line in commands if line.endswith("...")]


def test_device_disable_says_it_removes() -> None:
    result = CliRunner().invoke(main, ["device", "disable", "--help"])
    assert "it leaves the allow list" in result.stdout
    assert "There is no disabled state kept" in result.stdout


def test_one_list_of_log_levels() -> None:
    assert tuple(LEVELS) == LOG_LEVELS
    for name in ("serve", "emulate"):
        command = main.get_command(click.Context(main), name)
        assert command is not None
        (level,) = (p for p in command.params if p.name == "log_level")
        assert isinstance(level.type, click.Choice)
        assert tuple(level.type.choices) == LOG_LEVELS
    operations = Path(__file__).parents[2] / "docs" / "operations.md"
    assert f"--log-level {'|'.join(LOG_LEVELS)}" in operations.read_text()


def test_serve_help_says_how_auto_decides_and_what_server_means() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert (
        "auto (default): server mode if an Ollama answers at --ollama, else client mode."
        " server: serve --ollama even if it does not answer yet." in " ".join(result.stdout.split())
    )
    assert "--force-server-mode" not in result.stdout  # kept working, as --mode server


async def test_demo_prints_its_dashboards() -> None:
    from ollana.demo import run_demo

    lines: list[str] = []
    said = asyncio.Event()

    def echo(line: str) -> None:
        lines.append(line)
        if line.startswith("Press Ctrl-C"):
            said.set()

    task = asyncio.create_task(run_demo(echo, lambda text: None))
    try:
        await asyncio.wait_for(said.wait(), WAIT)
        dashboards = [line.split()[-1] for line in lines if " dashboard " in line]
        assert [line.split()[0] for line in lines if " dashboard " in line] == ["client", "server"]
        async with aiohttp.ClientSession() as session:
            for url in dashboards:
                async with session.get(url) as response:
                    assert response.status == 200
                    assert response.content_type == "text/html"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
