"""The whole chain (emulator → server → client) driven by the npm `ollama` package under node:
the scripts in tests/node/ each print one JSON line of what the package returned."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from ollana.demo import Chain, running_chain
from ollana.emulator import STATS_KEY, EmulatorConfig

SCRIPTS = Path(__file__).parents[1] / "node"
NODE = shutil.which("node")
RUN_TIMEOUT = 60.0  # a hung script fails the test rather than the run

pytestmark = [
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
    pytest.mark.skipif(
        not (SCRIPTS / "node_modules" / "ollama" / "package.json").is_file(),
        reason="the npm ollama package is not installed (npm ci --prefix tests/node)",
    ),
]

MODEL = "llama3.2"


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path) as running:
        yield running


async def node(script: str, chain: Chain, *args: str) -> Any:
    """Run tests/node/SCRIPT against the chain's client; the JSON it printed."""
    assert NODE is not None
    proc = await asyncio.create_subprocess_exec(
        NODE, str(SCRIPTS / script), chain.url, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, cwd=SCRIPTS,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
    assert proc.returncode == 0, err.decode(errors="replace")
    return json.loads(out.decode().strip().splitlines()[-1])


async def test_list(chain: Chain) -> None:
    listed = await node("list.mjs", chain)
    assert f"{MODEL}:latest" in listed["models"]
    assert all(size > 0 for size in listed["sizes"])


async def test_chat_stream_and_whole(chain: Chain) -> None:
    chat = await node("chat.mjs", chain)
    assert chat["parts"] > 2
    assert chat["done"] is True
    assert chat["done_reason"] == "stop"
    assert chat["streamed"] == chat["whole"]
    assert chat["eval_count"] == chat["whole_eval_count"]


async def test_generate(chain: Chain) -> None:
    generated = await node("generate.mjs", chain)
    assert generated["done_reason"] == "length"
    assert generated["eval_count"] == 7
    assert generated["streamed"] == generated["response"]
    assert generated["has_context"] is True


async def test_embed(chain: Chain) -> None:
    embedded = await node("embed.mjs", chain)
    assert embedded["count"] == 2
    assert embedded["lengths"][0] == embedded["lengths"][1] > 0
    assert embedded["same"] is False


async def test_show(chain: Chain) -> None:
    shown = await node("show.mjs", chain)
    assert shown["family"]
    assert shown["format"]
    assert shown["has_template"] is True
    assert "model_info" in shown["keys"]


async def test_a_missing_model_is_ollamas_error(chain: Chain) -> None:
    missing = await node("missing.mjs", chain)
    assert missing["status_code"] == 404
    assert missing["name"] == "ResponseError"
    assert missing["error"] == 'model "no-such-model" not found, try pulling it first'


async def test_an_aborted_stream_ends_the_generation(tmp_path: Path) -> None:
    paced = EmulatorConfig(tokens_per_second=50)
    async with running_chain(tmp_path, emulator=paced) as chain:
        stats = chain.ollama_app[STATS_KEY]
        assert NODE is not None
        proc = await asyncio.create_subprocess_exec(
            NODE, str(SCRIPTS / "abort.mjs"), chain.url,
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.PIPE, cwd=SCRIPTS,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), RUN_TIMEOUT)
            aborted = json.loads(line)
            # Parts already read from the socket may still come out before the abort shows.
            assert aborted["error"] == "AbortError"
            assert aborted["parts"] >= 1
            # Node still runs: the abort itself ended the generation behind the chain.
            await asyncio.wait_for(stats.wait_for(lambda s: s.cancelled == 1), RUN_TIMEOUT)
            assert stats.finished == 0
        finally:
            proc.stdin.close()
            await asyncio.wait_for(proc.wait(), RUN_TIMEOUT)
