"""Pairing across hosts: an unpaired host sees the servers but cannot use them; a rogue host
that announces a paired device's ID never gets a request; `ollana pair` with a code, on one
LAN, across a router, and watched by a wiretap; hello floods and forged certificates."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ollana.identity import DeviceStore
from tests.lan.lab import HERE, Cluster, Lab, eventually
from tests.lan.netns import Host, Network, ip
from tests.lan.procs import NsProcess
from tests.support.process import ollana_env

pytestmark = pytest.mark.lan

GENERATE = json.dumps({"model": "llama3.2", "prompt": "hi", "stream": False}).encode()
SETTLED = 12
CODE = re.compile(r"ollana pair (?P<code>\d{6})$")
PAIRED = re.compile(r"Paired in (?P<seconds>[0-9.]+) s")


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


# --- `ollana pair` ------------------------------------------------------------------------


async def run_in(host: Host, *argv: str, lab: Lab) -> tuple[int, str, str]:
    """Run `argv` inside a host with ollana's environment; (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *host.argv(*argv), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=ollana_env(host.home, lab.timings),
    )  # fmt: skip
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def open_window(lab: Lab, host: Host) -> tuple[NsProcess, str]:
    """`ollana pair` on a server: the running command and the code it shows."""
    argv = [sys.executable, "-m", "ollana", "pair"]
    proc = await lab.start(host, argv, name="pair", ready=CODE)
    found = next(m for m in map(CODE.search, proc.lines) if m)
    return proc, found["code"]


async def guest(lab: Lab, host: Host, code: str, *args: str) -> tuple[int, str, str]:
    """`ollana pair CODE ARGS` on a host."""
    return await run_in(host, sys.executable, "-m", "ollana", "pair", code, *args, lab=lab)


async def generated(host: Host) -> bool:
    """Whether a generate request through the host's ollana client succeeds."""
    return (await host.http("POST", 11434, "/api/generate", GENERATE, timeout=15)).status == 200


async def test_a_code_pairs_a_client_with_a_server_and_a_wiretap_learns_nothing(
    network: Network, lab: Lab
) -> None:
    lan = network.lan()
    a, c, e = (network.host(name, lan) for name in ("a", "c", "e"))
    capture = network.workdir / "tap.bin"
    port = a.interfaces[0].port
    tap = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", lan.switch, sys.executable, str(HERE / "tap.py"),
        "--iface", port, "--out", str(capture), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert tap.stdout is not None
    assert b"tapping" in await asyncio.wait_for(tap.stdout.readline(), 10)
    try:
        # Names come from each host's config, as `ollana serve` and `ollana pair` read it.
        (a.home / "config.toml").write_text('name = "server a"\n')
        (c.home / "config.toml").write_text('name = "laptop c"\n')
        await lab.ollama(a)
        await lab.ollana(a)
        await lab.ollana(c, env={"OLLANA_WAIT_FOR_SERVER": "1"})
        assert not await generated(c)  # not paired yet

        host, code = await open_window(lab, a)
        started = time.monotonic()
        status, out, err = await guest(lab, c, code)
        wall = time.monotonic() - started
        assert status == 0, err
        seconds = float(PAIRED.search(out)["seconds"])  # type: ignore[index]
        print(f"pairing took {seconds:.2f} s (the command: {wall:.2f} s)")
        assert "server a" in out
        assert await host.proc.wait() == 0
        assert any("laptop c" in line for line in host.lines), host.lines
        await eventually(lambda: generated(c), timeout=15, what="C's request goes to A")
    finally:
        tap.terminate()
        await tap.wait()

    # The wiretap saw the exchange go by, sealed in TLS: no message of it, no code.
    seen = capture.read_bytes()
    assert len(seen) > 10_000
    for clear in (b'"pake"', b'"confirm"', b"ollana/v1/pair", code.encode()):
        assert clear not in seen, clear
    # Even with the code, a third host gets nothing: the window is closed, the code spent.
    status, _, err = await guest(lab, e, code)
    assert status == 1 and "no server on the LAN offers" in err, err
    status, _, err = await guest(lab, e, code, "--server", f"{a.address}:11435")
    assert status == 1 and "no pairing window" in err, err
    assert set(DeviceStore(a.home).allowed()) == {lab.device_id(c.home)}


async def test_pairing_across_a_router_with_discovery_off(network: Network, lab: Lab) -> None:
    lan0, lan1 = network.lan(), network.lan()
    a, c = network.host("a", lan0), network.host("c", lan1)
    router = network.host("rt", lan0, lan1)
    ip("netns", "exec", router.netns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    ip("-n", a.netns, "route", "add", f"{lan1.subnet.prefix}.0/24", "via", router.address)
    ip("-n", c.netns, "route", "add", f"{lan0.subnet.prefix}.0/24", "via",
       router.interfaces[1].address)  # fmt: skip
    off = {"OLLANA_DISCOVERY": "false", "OLLANA_WAIT_FOR_SERVER": "1"}
    await lab.ollama(a)
    await lab.ollana(a, env=off)
    await lab.ollana(c, "--server", f"{a.address}:11435", env=off)
    assert not await generated(c)

    host, code = await open_window(lab, a)
    status, out, err = await guest(lab, c, code, "--server", f"{a.address}:11435")
    assert status == 0, err
    print(f"pairing across a router took {PAIRED.search(out)['seconds']} s")  # type: ignore[index]
    assert await host.proc.wait() == 0
    await eventually(lambda: generated(c), timeout=20, what="C's request reaches A across")


async def test_a_hello_flood_and_forged_certificates_teach_a_server_nothing(
    network: Network, lab: Lab
) -> None:
    lan = network.lan()
    a, b, c, r = (network.host(name, lan) for name in ("a", "b", "c", "r"))
    cluster = await Cluster.start(lab, [a, b], [c])
    b_id = cluster.ids["b"]
    store = DeviceStore(a.home)
    await eventually(lambda: b_id in store.seen(), timeout=10, what="A hears B announce")

    async def hellos(*args: str) -> dict[str, object]:
        argv = (sys.executable, str(HERE / "hellos.py"), "--url", f"https://{a.address}:11435")
        status, out, err = await run_in(r, *argv, *args, lab=lab)
        assert status == 0, err
        result: dict[str, object] = json.loads(out)
        return result

    forged = await hellos("--count", "3", "--forged")
    assert forged["statuses"] == {"400": 3}
    flood = await hellos("--count", "300")
    statuses = flood["statuses"]
    assert isinstance(statuses, dict) and statuses.get("429", 0) >= 290, statuses
    await eventually(
        lambda: set(flood["ids"]) & set(store.seen()),  # type: ignore[arg-type]
        timeout=5, what="A records the few hellos its quota took",
    )  # fmt: skip
    seen = store.seen()
    assert not set(forged["ids"]) & set(seen)  # type: ignore[arg-type]
    learnt = {d for d, s in seen.items() if s.via == "hello"}
    assert 0 < len(learnt) <= 32
    # The discovered server and the allowed client are still there, and allowing B by
    # 16 digits of its ID still finds it.
    assert b_id in seen and cluster.ids["c"] in store.allowed()
    await lab.allow(a.home, b_id[:16])
    assert b_id in store.allowed()
