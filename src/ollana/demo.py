"""`ollana demo`: an emulated Ollama, a server and a client on this machine, paired."""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

from ollana.config import Settings, load_settings
from ollana.emulator import EmulatorConfig, create_app, serving
from ollana.identity import DeviceStore, load_identity
from ollana.modes import ClientMode, ServerMode

__all__ = ["DEMO_MODEL", "Chain", "pair", "running_chain", "stream_chat"]

DEMO_MODEL = "llama3.2"
DEMO_TOKENS_PER_SECOND = 25.0


def pair(*homes: Path) -> None:
    """Make the devices of these data dirs allow each other (creating identities as needed)."""
    identities = [load_identity(home) for home in homes]
    for home, own in zip(homes, identities, strict=True):
        store = DeviceStore(home)
        for identity in identities:
            if identity.device_id != own.device_id:
                store.record_seen(identity.device_id, "127.0.0.1:0", "peer", identity.cert_der)
                store.allow(identity.device_id)


@dataclass(frozen=True, slots=True)
class Chain:
    """A running emulator → server → client chain on loopback."""

    ollama_url: str
    ollama_app: web.Application
    server: ServerMode
    client: ClientMode

    @property
    def url(self) -> str:
        """Where apps talk to the client."""
        return f"http://127.0.0.1:{self.client.port}"


@contextlib.asynccontextmanager
async def running_chain(
    root: Path,
    *,
    emulator: EmulatorConfig | None = None,
    server: dict[str, object] | None = None,
    client: dict[str, object] | None = None,
) -> AsyncIterator[Chain]:
    """Emulator, server and client on free loopback ports, their homes paired under `root`."""
    server_home, client_home = root / "server", root / "client"
    pair(server_home, client_home)
    app = create_app(emulator or EmulatorConfig())
    async with serving(app, "127.0.0.1", 0) as ollama_port:
        ollama_url = f"http://127.0.0.1:{ollama_port}"
        server_settings = _settings(
            server_home, {"mode": "server", "ollama": ollama_url, **(server or {})}
        )
        async with ServerMode(server_settings) as server_mode:
            client_settings = _settings(
                client_home,
                {"mode": "client", "servers": (f"127.0.0.1:{server_mode.port}",), **(client or {})},
            )
            async with ClientMode(client_settings) as client_mode:
                yield Chain(ollama_url, app, server_mode, client_mode)


def _settings(home: Path, flags: dict[str, object]) -> Settings:
    base: dict[str, object] = {
        "home": str(home),
        "listen": "127.0.0.1:0",
        "discovery": False,
        "admin_listen": "off",
        "grace": 1.0,
    }
    return load_settings({**base, **flags}, env={}, config_file=home / "config.toml")


async def stream_chat(url: str, prompt: str, write: Callable[[str], None]) -> dict[str, object]:
    """Stream one chat answer from an Ollama endpoint, writing tokens as they come."""
    body = {
        "model": DEMO_MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"num_predict": 48},
    }
    final: dict[str, object] = {}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/api/chat", json=body) as response,
    ):
        response.raise_for_status()
        async for line in response.content:
            chunk = json.loads(line)
            write(chunk.get("message", {}).get("content", ""))
            if chunk.get("done"):
                final = chunk
    return final


async def run_demo(echo: Callable[[str], None], write: Callable[[str], None]) -> None:
    """The demo itself: start the chain, stream one answer, wait until cancelled."""
    with tempfile.TemporaryDirectory(prefix="ollana-demo-") as tmp:
        emulator = EmulatorConfig(tokens_per_second=DEMO_TOKENS_PER_SECOND)
        # Each side's dashboard on a free loopback port, so that the demo can be watched.
        admin: dict[str, object] = {"admin_listen": "127.0.0.1:0"}
        async with running_chain(Path(tmp), emulator=emulator, server=admin, client=admin) as chain:
            echo(f"emulated Ollama  {chain.ollama_url}")
            echo(f"ollana server    https://127.0.0.1:{chain.server.port}  (mutual TLS)")
            echo(f"ollana client    {chain.url}")
            for name, mode in (("client", chain.client), ("server", chain.server)):
                if mode.admin is not None:
                    echo(f"{name} dashboard {mode.admin.url}")
            echo("")
            echo(f"> {DEMO_MODEL}: why is the sky blue?")
            final = await stream_chat(chain.url, "Why is the sky blue?", write)
            write("\n")
            echo(f"({final.get('eval_count', '?')} tokens, streamed through both hops)")
            echo("")
            echo(
                f"Try it:  curl {chain.url}/api/chat -d "
                f'\'{{"model": "{DEMO_MODEL}", "messages": '
                f'[{{"role": "user", "content": "hello"}}]}}\''
            )
            echo(f"         OLLAMA_HOST={chain.url} ollama list")
            echo("Press Ctrl-C to stop.")
            await asyncio.Event().wait()
