"""A server host that sleeps and is woken by a client's request (Wake-on-LAN), on the LAN.

Shared by the LAN test (which asserts what happens) and bench.wake (which times it):
server A and client C are paired; C learns A's MAC and models; A's ollana and Ollama stop
("asleep": the host's network card stays up, as a sleeping PC's does); a listener on A's
UDP port 9 sees the magic packet, and a helper then "wakes" the host by starting its Ollama
and ollana again. C's requests for A's model are answered once A is back.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lan.lab import CLIENT_PORT, HERE, Cluster, Lab, eventually
from tests.lan.netns import Host, Network, Reply, ip

__all__ = ["GENERATE", "MODEL", "WakeRun", "mac_of", "remembered", "sleep_and_wake"]

MODEL = "llama3.2:latest"
GENERATE = json.dumps({"model": "llama3.2", "prompt": "wake up", "stream": False}).encode()
STEP_TIMEOUT = 15.0
ANSWER_TIMEOUT = 60.0  # below the client's --wake-timeout (90 s)


@dataclass(frozen=True, slots=True)
class WakeRun:
    """What one sleep-and-wake scenario saw."""

    cluster: Cluster  # server "a", client "c"
    mac: str  # the server's eth0
    remembered: dict[str, Any]  # the client's memory of it, before it slept
    sleeping: list[dict[str, Any]]  # /status "sleeping" of the client while it slept
    broadcast: str  # the LAN's directed broadcast address
    server_address: str
    packets: list[dict[str, Any]]  # every datagram the listener saw on port 9
    replies: list[Reply]
    short_id: str
    request_to_answer: float  # seconds, the first request sent to its answer
    host_start: float  # seconds the helper took to start the host's Ollama and ollana
    after: dict[str, Any]  # the client's /status once the requests were answered

    @property
    def overhead(self) -> float:
        """Request to answer, less the host's own start time."""
        return self.request_to_answer - self.host_start


def mac_of(host: Host, name: str = "eth0") -> str:
    """The MAC address of one of a host's interfaces."""
    links = json.loads(ip("-n", host.netns, "-j", "link", "show", name).stdout)
    return str(links[0]["address"]).lower()


def remembered(home: Path, device: str) -> dict[str, Any] | None:
    """A client's remembered-servers entry for a device, or None."""
    try:
        document = json.loads((home / "remembered-servers.json").read_text())
    except FileNotFoundError:
        return None
    return next((s for s in document["servers"] if s["device"] == device), None)


async def sleep_and_wake(
    network: Network,
    lab: Lab,
    *,
    requests: int = 2,
    restart_client: bool = True,
    host_wakes: bool = True,
    static: bool = False,
    env: Mapping[str, str] | None = None,
) -> WakeRun:
    """Run the scenario once (see the module docstring); `requests` sent side by side.

    With `restart_client`, the client restarts while the server sleeps: what it knows of
    the server comes from its remembered-servers file. Without `host_wakes`, the host
    stays asleep whatever it hears. With `static`, discovery is off and the client knows
    the server as a static one. `env`: OLLANA_* settings of every ollana.
    """
    lan = network.lan()
    a, c = network.host("a", lan), network.host("c", lan)
    if static:
        # Known by address alone: its MAC comes from the answer to the client's hello.
        env = {**(env or {}), "OLLANA_DISCOVERY": "off", "OLLANA_SERVERS": f"{a.address}:11435"}
    cluster = await Cluster.start(lab, [a], [c], env=env)
    device, mac = cluster.ids["a"], mac_of(a)

    def learnt() -> dict[str, Any] | None:
        entry = remembered(c.home, device)
        return entry if entry and entry["mac"] == mac and MODEL in entry["models"] else None

    memory = await eventually(
        learnt, timeout=STEP_TIMEOUT, what=f"{c.label} remembers {a.label}'s MAC and models"
    )
    # Asleep: ollana and Ollama stop; the host's interface stays up to hear the packet.
    await cluster.ollana["a"].stop(signal.SIGTERM)
    await cluster.ollama["a"].stop(signal.SIGTERM)
    if restart_client:
        await cluster.ollana["c"].stop(signal.SIGTERM)
        await cluster.start_ollana(c)

    async def asleep() -> list[dict[str, Any]] | None:
        status = await lab.status(c)
        up = any(s.get("device_id") == device and s["state"] != "down" for s in status["servers"])
        sleeping: list[dict[str, Any]] = status["sleeping"]
        return None if up or not any(s["device_id"] == device for s in sleeping) else sleeping

    sleeping = await eventually(asleep, timeout=STEP_TIMEOUT, what=f"{a.label} is asleep")
    listener = await lab.start(
        a, [sys.executable, str(HERE / "wol_listener.py")], name="wol",
        ready=re.compile(r"^listening$"),
    )  # fmt: skip

    def packets() -> list[dict[str, Any]]:
        return [json.loads(line) for line in listener.lines if line.startswith("{")]

    async def wake_host() -> float:
        await eventually(packets, timeout=STEP_TIMEOUT, what=f"a magic packet on {a.label}")
        if not host_wakes:
            return 0.0
        started = time.monotonic()
        await cluster.start_ollama(a)
        await cluster.start_ollana(a)
        return time.monotonic() - started

    async def timed() -> tuple[Reply, float]:
        sent = time.monotonic()
        reply = await c.http("POST", CLIENT_PORT, "/api/generate", GENERATE, timeout=ANSWER_TIMEOUT)
        return reply, time.monotonic() - sent

    helper = asyncio.create_task(wake_host())
    try:
        answers = await asyncio.gather(*(timed() for _ in range(requests)))
    finally:
        if not helper.done():
            helper.cancel()
        host_start = await asyncio.gather(helper, return_exceptions=True)
    after = await lab.status(c)
    started_in = host_start[0]
    if isinstance(started_in, BaseException):
        raise started_in
    return WakeRun(
        cluster=cluster,
        mac=mac,
        remembered=memory,
        sleeping=sleeping,
        broadcast=lan.subnet.broadcast,
        server_address=a.address,
        packets=packets(),
        replies=[reply for reply, _ in answers],
        short_id=cluster.short(a),
        request_to_answer=min(took for _, took in answers),
        host_start=started_in,
        after=after,
    )
