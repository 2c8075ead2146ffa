"""Discovery across hosts: no default route, two ollana processes on one host, two subnets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.lan.lab import Lab, eventually, short
from tests.lan.netns import Host, Network

pytestmark = pytest.mark.lan

GENERATE = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()


@pytest.mark.parametrize("default_route", [False, True], ids=["no-default-route", "default-route"])
async def test_a_client_finds_both_servers(network: Network, lab: Lab, default_route: bool) -> None:
    lan = network.lan()
    a, b, c = (network.host(name, lan, default_route=default_route) for name in ("a", "b", "c"))
    for host in (a, b, c):
        # Without one, 255.255.255.255 is unreachable: the subnet's broadcast must do.
        assert ("default" in host.routes()) is default_route
    await lab.pair(c.home, a.home, b.home)
    await lab.ollama(a)
    await lab.ollama(b)
    servers = [await lab.ollana(a), await lab.ollana(b)]
    assert all(s.url.startswith("https://") for s in servers)  # auto mode found their Ollama
    client = await lab.ollana(c)
    assert client.url == "http://127.0.0.1:11434"  # and C, with none, is a client

    ids = {lab.device_id(a.home), lab.device_id(b.home)}
    await lab.wait_healthy(c, ids)
    pool = await lab.pool(c)
    assert {pool[d]["address"] for d in ids} == {f"{a.address}:11435", f"{b.address}:11435"}

    answered = set()
    for _ in range(6):
        reply = await c.http("POST", 11434, "/api/generate", GENERATE)
        assert reply.status == 200, reply.body
        assert reply.json()["done"] is True
        answered.add(reply.headers["x-ollana-server"])
    assert answered <= {short(d) for d in ids}
    tags = (await c.http("GET", 11434, "/api/tags")).json()
    assert "llama3.2:latest" in {m["name"] for m in tags["models"]}


async def use(lab: Lab, client: Host, port: int, device: str) -> None:
    """A generation through a client, pinned to one server, answered by it."""
    label = short(device)
    reply = await client.http(
        "POST", port, "/api/generate", GENERATE, headers={"X-Ollana-Server": label}
    )
    assert (reply.status, reply.headers.get("x-ollana-server")) == (200, label), reply.body


async def test_two_ollana_processes_per_host_share_the_discovery_port(
    network: Network, lab: Lab
) -> None:
    lan = network.lan()
    a, b, c = (network.host(name, lan) for name in ("a", "b", "c"))
    a2, c2 = network.workdir / "a-2", network.workdir / "c-2"
    servers, clients = [a.home, a2, b.home], [c.home, c2]
    for home in clients:
        await lab.pair(home, *servers)
    ids = {home: lab.device_id(home) for home in servers}
    # Two servers in front of one Ollama on A, two clients on C, each with its own identity.
    await lab.ollama(a)
    await lab.ollana(a)
    # Asked for by name: auto mode would refuse a second server in front of one Ollama.
    second = await lab.ollana(
        a, "--mode", "server", "--listen", "0.0.0.0:11445", "--admin-listen", "127.0.0.1:11447",
        home=a2,
    )  # fmt: skip
    assert second.url == "https://0.0.0.0:11445"
    await lab.ollana(c)
    # Auto mode: what answers on 127.0.0.1:11434 is the first client, not an Ollama.
    other = await lab.ollana(
        c, "--listen", "127.0.0.1:11444", "--admin-listen", "127.0.0.1:11448", home=c2
    )
    assert other.url == "http://127.0.0.1:11444"
    ports = {c.home: (11434, 11437), c2: (11444, 11448)}
    # Both clients queried at start: both servers on A answer each of them.
    for home in clients:
        await lab.wait_healthy(c, {ids[a.home], ids[a2]}, port=ports[home][1])
    # B starts last: its unsolicited broadcast reaches both processes on C's shared port.
    await lab.ollama(b)
    await lab.ollana(b)
    for home in clients:
        await lab.wait_healthy(c, set(ids.values()), port=ports[home][1])
        for device in ids.values():
            await use(lab, c, ports[home][0], device)


async def test_a_host_on_two_subnets_finds_the_servers_of_both(network: Network, lab: Lab) -> None:
    office, lab_lan = network.lan(), network.lan()
    a, e = network.host("a", office), network.host("e", lab_lan)
    c = network.host("c", office, lab_lan)
    assert {i.lan.subnet for i in c.interfaces} == {office.subnet, lab_lan.subnet}
    await lab.pair(c.home, a.home, e.home)
    for server in (a, e):
        await lab.ollama(server)
        await lab.ollana(server)
    await lab.ollana(c)
    ids = {lab.device_id(a.home): a.address, lab.device_id(e.home): e.address}
    await lab.wait_healthy(c, set(ids))
    pool = await lab.pool(c)
    for device, address in ids.items():
        assert pool[device]["address"] == f"{address}:11435"  # each reached on its own subnet
        await use(lab, c, 11434, device)


async def test_a_graceful_stop_is_no_alarm(network: Network, lab: Lab) -> None:
    lan = network.lan()
    # With a default route, 255.255.255.255 is reachable too: every datagram arrives twice.
    a, c = (network.host(name, lan, default_route=True) for name in ("a", "c"))
    await lab.pair(c.home, a.home)
    await lab.ollama(a)
    server = await lab.ollana(a)
    await lab.ollana(c)
    device = lab.device_id(a.home)
    await lab.wait_healthy(c, {device})
    assert await server.stop() == 0

    async def gone() -> dict[str, Any] | None:
        status = await lab.status(c)
        listed = {s.get("device_id") for s in status["servers"]}
        dropped = status["counters"]["discovery"]["dropped"]
        return status if device not in listed and dropped.get("duplicate") else None

    status = await eventually(gone, timeout=10, what="C drops A on its goodbye, and its copy")
    assert "forged" not in status["counters"]["discovery"]["dropped"], status["counters"]
