"""Pairing across hosts: an unpaired host sees the servers but cannot use them; a rogue host
that announces a paired device's ID never gets a request."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.lan.lab import HERE, Cluster, Lab, eventually
from tests.lan.netns import Network
from tests.support.process import ollana_env

pytestmark = pytest.mark.lan

GENERATE = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()
SETTLED = 12


async def nearby_ids(home: Path) -> set[str]:
    """The devices `ollana device list --json` shows as nearby (seen, not allowed)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollana", "device", "--home", str(home), "list", "--json",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ollana_env(home),
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return {device["id"] for device in json.loads(out)["nearby"]}


async def test_an_unpaired_host_sees_the_servers_but_cannot_use_them(
    network: Network, lab: Lab
) -> None:
    lan = network.lan()
    a, b, c, d = (network.host(name, lan) for name in ("a", "b", "c", "d"))
    cluster = await Cluster.start(lab, [a, b], [c])
    # D trusts A, but A does not trust D; nobody pairs with D on B's side either.
    await lab.allow(d.home, cluster.ids["a"])
    # D would wait this long for a usable server before it answers (a short wait suffices).
    client = await lab.ollana(d, env={"OLLANA_WAIT_FOR_SERVER": "1"})
    assert client.url == "http://127.0.0.1:11434"

    d_id = lab.device_id(d.home)

    async def seen_and_refused() -> bool:
        status, on_a = await lab.status(d), await lab.status(a)
        nearby = {n["device_id"] for n in status["nearby"]}
        pool = {s["device_id"]: s["state"] for s in status["servers"]}
        a_heard_d = d_id in {n["device_id"] for n in on_a["nearby"]}
        return cluster.ids["b"] in nearby and pool.get(cluster.ids["a"]) == "down" and a_heard_d

    await eventually(
        seen_and_refused, timeout=10,
        what="D hears B, A refuses D's handshake, A lists D as nearby",
    )  # fmt: skip
    # Each side can pair from what it heard, with no ID typed in from another machine.
    assert cluster.ids["b"] in await nearby_ids(d.home)
    assert d_id in await nearby_ids(a.home)
    assert cluster.ids["b"] not in (await lab.pool(d))  # heard, never used

    # Not an empty list ("no models"): what is wrong, and the command that fixes it.
    for method, path, body in (("GET", "/api/tags", None), ("POST", "/api/generate", GENERATE)):
        refused = await d.http(method, 11434, path, body, timeout=15)
        assert refused.status == 503, refused.body
        error = refused.json()["error"]
        assert "not paired" in error and cluster.ids["b"][:16] in error, error
        assert cluster.short(a) in error, error  # allowed here, but it refuses us
    # The servers themselves are fine: their paired client uses both.
    for host in (a, b):
        label = cluster.short(host)
        reply = await c.http(
            "POST", 11434, "/api/generate", GENERATE, headers={"X-Ollana-Server": label}
        )
        assert (reply.status, reply.headers.get("x-ollana-server")) == (200, label)


async def test_a_rogue_announcing_a_paired_id_gets_no_request(network: Network, lab: Lab) -> None:
    lan = network.lan()
    a, b, c, r = (network.host(name, lan) for name in ("a", "b", "c", "r"))
    cluster = await Cluster.start(lab, [a, b], [c])
    loop = await lab.request_loop(c, workers=3)
    # R announces A's ID, with A's run once it heard it, and says goodbye in A's name after
    # each announce: unsigned, or signed with R's own key.
    argv = [sys.executable, str(HERE / "rogue.py"), "--goodbye",
            "--home", str(r.home), "--impersonate", str(a.home / "device.crt")]  # fmt: skip
    rogue = await lab.start(
        r, argv, name="rogue", ready=re.compile(r"rogue listening on (?P<url>\S+)")
    )

    def events(kind: str) -> list[dict[str, object]]:
        parsed = (json.loads(line) for line in rogue.lines if line.startswith("{"))
        return [e for e in parsed if e["event"] == kind]

    def refused(status: dict[str, Any]) -> int:
        dropped = status["counters"]["discovery"]["dropped"]
        return int(dropped.get("unsigned", 0) + dropped.get("forged", 0))

    await eventually(
        lambda: any(not str(e["instance"]).startswith("rogue") for e in events("announced")),
        timeout=10, what="R uses A's run",
    )  # fmt: skip
    await eventually(lambda: len(events("announced")) >= 4, timeout=10, what="R goes on announcing")
    status = await lab.status(c)
    assert refused(status) >= 20, status["counters"]["discovery"]
    pool = await lab.pool(c)
    at_home = f"{a.address}:11435"
    assert (pool[cluster.ids["a"]]["state"], pool[cluster.ids["a"]]["address"]) == (
        "healthy",
        at_home,
    )
    said = cluster.ollana["c"].log.read_text()
    assert "said goodbye" not in said, said[-2000:]  # no goodbye in A's name was acted on
    # Once A is gone, C does not try the address R gave for A's ID: it was never taken.
    await cluster.ollana["a"].kill()
    since = time.monotonic()
    await eventually(
        lambda: loop.settled(cluster.short(a), since, SETTLED),
        timeout=10, what=lambda: f"requests go on without A\n{loop.report()}",
    )  # fmt: skip
    await cluster.start_ollana(a)

    async def a_is_back() -> bool:
        server = (await lab.pool(c)).get(cluster.ids["a"])
        return server is not None and (server["state"], server["address"]) == ("healthy", at_home)

    await eventually(a_is_back, timeout=10, what="C uses A at A's own address again")
    label = cluster.short(a)
    reply = await c.http(
        "POST", 11434, "/api/generate", GENERATE, headers={"X-Ollana-Server": label}
    )
    assert (reply.status, reply.headers.get("x-ollana-server")) == (200, label)

    records = await loop.stop()
    assert [e for e in events("handshake") if e["peer"] == c.address] == []
    assert events("request") == []  # not one request reached R
    failed = [r for r in records if not r.ok]
    assert not failed, "\n".join(map(str, failed))
