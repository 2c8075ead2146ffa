"""`--open` on a client would make it trust every server on the LAN: it is refused.

Refused whether it is a flag with --mode client, or comes from the config file while auto
mode picks client mode (no Ollama answers here); the process exits 1 and says why.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.support import free_port
from tests.support.process import ollana_env
from tests.support.waiting import DEADLINE

COMMON = ("--listen", "127.0.0.1:0", "--admin-listen", "off", "--no-discovery")


async def serve(home: Path, *args: str) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "serve", *COMMON, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ollana_env(home),
    )  # fmt: skip
    async with asyncio.timeout(DEADLINE):
        out, err = await proc.communicate()
    return proc.returncode, (out + err).decode()


@pytest.mark.parametrize("where", ["flag", "config"])
async def test_open_is_refused_in_client_mode(tmp_path: Path, where: str) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    if where == "flag":
        args: tuple[str, ...] = ("--mode", "client", "--open")
    else:
        (home / "config.toml").write_text("open = true\n")
        # Nothing answers there: auto mode picks client mode.
        args = ("--ollama", f"http://127.0.0.1:{free_port()}")
    code, output = await serve(home, *args)
    assert code == 1, output
    assert "setting 'open'" in output and "client mode" in output, output
    assert "--mode server" in output
    assert "listening on" not in output
