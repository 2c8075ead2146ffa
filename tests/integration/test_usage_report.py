"""The usage report: `/usage` on the admin API and `ollana usage`, read from the store."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from ollana.admin import create_admin_app
from ollana.admin.usage import parse_since
from ollana.cli import main
from ollana.config import Settings
from ollana.identity import DeviceStore
from ollana.metrics import Metrics
from ollana.usage import USAGE_FILE, UsageStore
from tests.support.admin_fakes import FakeSource

Client = TestClient[web.Request, web.Application]
LAPTOP, PHONE = "ab" * 32, "cd" * 32


@pytest.fixture
async def home(tmp_path: Path) -> Path:
    DeviceStore(tmp_path).allow(LAPTOP, name="laptop")
    async with UsageStore(tmp_path / USAGE_FILE) as store:
        for device, model, generated in (
            (LAPTOP, "llama3.2", 100),
            (LAPTOP, "qwen3", 7),
            (PHONE, "llama3.2", 20),
            ("", "llama3.2", 1),
        ):
            store.record(
                device, model, prompt_tokens=3, generated_tokens=generated, seconds=1.0,
                error=False,
            )  # fmt: skip
    return tmp_path


@pytest.fixture
async def client(home: Path) -> AsyncIterator[Client]:
    source = FakeSource(settings=dataclasses.replace(Settings(), home=home))
    async with TestClient(TestServer(create_admin_app(source, Metrics()))) as client:
        yield client


async def test_usage_by_device_and_model(client: Client) -> None:
    response = await client.get("/usage")
    assert response.status == 200
    document = await response.json()
    assert document["by"] == "device"
    rows = {
        r["device"]: (r["name"], r["requests"], r["generated_tokens"]) for r in document["rows"]
    }
    assert rows == {
        "": ("", 1, 1),
        LAPTOP: ("laptop", 2, 107),
        PHONE: ("", 1, 20),
    }
    response = await client.get("/usage", params={"by": "model", "since": "1h"})
    models = [(r["model"], r["requests"]) for r in (await response.json())["rows"]]
    assert models == [("llama3.2", 3), ("qwen3", 1)]


@pytest.mark.parametrize("query", [{"since": "soon"}, {"by": "colour"}])
async def test_bad_queries_are_400(client: Client, query: dict[str, str]) -> None:
    response = await client.get("/usage", params=query)
    assert response.status == 400
    assert "expected" in (await response.json())["error"]


async def test_a_corrupt_store_is_503_naming_the_file(home: Path, client: Client) -> None:
    (home / USAGE_FILE).write_bytes(b"garbage" * 1000)
    response = await client.get("/usage")
    assert response.status == 503
    assert str(home / USAGE_FILE) in (await response.json())["error"]


def test_usage_command(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["usage", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert "laptop" in result.output and "abababab" in result.output
    assert "anonymous" in result.output and "Total" in result.output
    result = runner.invoke(main, ["usage", "--home", str(home), "--by", "day", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert sorted(r["device"] for r in rows) == ["", LAPTOP, PHONE]
    result = runner.invoke(main, ["usage", "--home", str(home), "--since", "yesterday"])
    assert result.exit_code == 2 and "--since" in result.output
    empty = runner.invoke(main, ["usage", "--home", str(home / "none")])
    assert empty.exit_code == 0 and "No usage recorded" in empty.output


def test_parse_since() -> None:
    assert parse_since("7d", now=1_000_000.0) == 1_000_000.0 - 7 * 86400
    assert parse_since("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_since("1970-01-02") == 86400.0
