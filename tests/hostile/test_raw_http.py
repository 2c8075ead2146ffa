"""Raw bytes at the client's local endpoint and at the server's TLS endpoint, real processes.

Every hostile request ends in a 4xx (an Ollama-style `{"error": …}`) or, where HTTP is no
longer possible, a closed connection; never a 5xx, never a hang. Afterwards both processes
answer as before and their memory has not grown with the number of attacks.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.hostile.support import (
    HANG_GUARD,
    Chain,
    Outcome,
    exchange,
    parse_response,
    rss_kib,
    running_chain,
)
from tests.support.waiting import until

TIMEOUT = 2.0  # header and body timeouts, shrunk so that a silent client is refused quickly
LIMITS_ENV = {
    "OLLANA_LIMITS_HEADER_TIMEOUT": str(TIMEOUT),
    "OLLANA_LIMITS_BODY_TIMEOUT": str(TIMEOUT),
}
# The allocator's high-water mark climbs over the first rounds (each TLS connection has a
# 256 KiB buffer, and 22 come at once), then holds within a few MiB, however many rounds
# follow: memory is read once that climb is over.
WARMUP_ROUNDS = 5
ROUNDS = 5  # attacks repeated this often between the two memory readings
GROWTH_KIB = 8 * 1024  # what "flat" allows: allocator noise, not a leak per attack
CLOSED = None


@dataclass(frozen=True)
class Attack:
    """One hostile request, and what may come back once the limits are in place."""

    name: str
    data: bytes
    expect: tuple[int | None, ...]  # statuses, or CLOSED: a close without an answer
    half_close: bool = False  # shut our side after sending (plain TCP only; TLS cannot)


HOST = "Host: 127.0.0.1\nConnection: close\n"
CHAT = b'{"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "stream": false}'


def request(head: str, body: bytes = b"") -> bytes:
    """A request from its head lines (LF, made CRLF here) and body."""
    return head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body


def get(extra: str = "", target: str = "/api/tags") -> bytes:
    return request(f"GET {target} HTTP/1.1\n{HOST}{extra}")


def post(extra: str, body: bytes) -> bytes:
    return request(f"POST /api/chat HTTP/1.1\n{HOST}{extra}", body)


PARTIAL_HEAD = b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
CHUNKED = "Transfer-Encoding: chunked\n"


def headers(count: int, size: int) -> str:
    return "".join(f"X-{i}: {'v' * size}\n" for i in range(count))


ATTACKS = [
    Attack("garbage", os.urandom(64).replace(b"\n", b"") + b"\r\n\r\n", (400,)),
    Attack("nul bytes", b"\x00" * 512, (400,)),
    Attack("tls hello on plain http", bytes.fromhex("160301020001") + os.urandom(200), (400,)),
    Attack("http2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400,)),
    Attack("head that stops", PARTIAL_HEAD, (408,)),
    Attack("head cut by EOF", PARTIAL_HEAD, (CLOSED, 408), half_close=True),
    Attack("body that stops", post("Content-Length: 900\n", CHAT), (408,)),
    Attack("body cut by EOF", post("Content-Length: 900\n", CHAT), (CLOSED, 400, 408), True),
    Attack("200 KB header", get(f"X-Big: {'a' * 200_000}\n"), (431,)),
    Attack("1000 headers", get(headers(1000, 1)), (431,)),
    Attack("40 headers of 1 KB", get(headers(40, 1000)), (431,)),
    Attack("9 KB request line", get(target=f"/api/tags?{'q' * 9000}"), (414,)),
    Attack("bad chunk size", post(CHUNKED, b"zz\r\n" + CHAT), (400,)),
    Attack("chunk size overflow", post(CHUNKED, b"f" * 20 + b"\r\n"), (400,)),
    Attack("length and chunked", post("Content-Length: 5\n" + CHUNKED, b""), (400,)),
    Attack("two lengths", post("Content-Length: 5\nContent-Length: 6\n", b"hello!"), (400,)),
    Attack("negative length", post("Content-Length: -1\n", b""), (400,)),
    Attack("nul in a header value", get("X-A: a\x00b\n"), (400,)),
    Attack("header without a colon", get("NoColonHere\n"), (400,)),
    Attack("non-utf-8 path", get(target="/api/\xff\xfe\x80"), (400,)),
    Attack("invalid json to /api/chat", post("Content-Length: 11\n", b"{not json!!"), (400,)),
    Attack("json of the wrong shape", post("Content-Length: 9\n", b"[1, 2, 3]"), (400,)),
]


def acceptable(outcome: Outcome) -> bool:
    """A refusal: a 4xx, or a close where the request could not be answered."""
    return outcome.closed or 400 <= (outcome.status or 0) < 500


async def attack_all(
    port: int, tls: ssl.SSLContext | None, attacks: Sequence[Attack] = ATTACKS
) -> dict[str, Outcome]:
    """Every attack at once, each on its own connection."""
    outcomes = await asyncio.gather(*(
        exchange(port, a.data, tls=tls, half_close=a.half_close and tls is None) for a in attacks
    ))  # fmt: skip
    return {a.name: o for a, o in zip(attacks, outcomes, strict=True)}


async def normal_request_works(port: int, tls: ssl.SSLContext | None) -> None:
    outcome = await exchange(port, request(f"GET /api/tags HTTP/1.1\n{HOST}"), tls=tls)
    assert outcome.status == 200, outcome
    assert b"llama3.2" in outcome.body


@pytest.fixture
async def chain(tmp_path: Path) -> AsyncIterator[Chain]:
    async with running_chain(tmp_path, client_env=LIMITS_ENV, server_env=LIMITS_ENV) as c:
        yield c


def endpoint(c: Chain, which: str) -> tuple[int, ssl.SSLContext | None]:
    return (c.client.port, None) if which == "client" else (c.server.port, c.client_tls())


@pytest.mark.slow
@pytest.mark.parametrize("which", ["client", "server"])
async def test_hostile_requests_are_refused_and_the_process_stays_well(
    chain: Chain, which: str
) -> None:
    port, tls = endpoint(chain, which)
    process = chain.client if which == "client" else chain.server
    first = await attack_all(port, tls, ATTACKS)  # also warms up what is allocated only once
    wrong = {n: str(o) for n, o in first.items() if not acceptable(o)}
    assert not wrong, f"not refused as a 4xx or a close: {wrong}"
    await normal_request_works(port, tls)
    for _ in range(WARMUP_ROUNDS):
        await attack_all(port, tls, ATTACKS)
    before = rss_kib(process.proc.pid)
    for _ in range(ROUNDS):
        await attack_all(port, tls, ATTACKS)
    await normal_request_works(port, tls)
    after = rss_kib(process.proc.pid)
    assert process.proc.returncode is None
    assert after - before < GROWTH_KIB, f"RSS {before} KiB -> {after} KiB"
    for name, proc in chain.processes().items():
        assert proc.proc.returncode is None, f"{name} exited"


@pytest.mark.slow
@pytest.mark.parametrize("which", ["client", "server"])
async def test_every_refusal_has_its_status_and_an_ollama_style_error(
    chain: Chain, which: str
) -> None:
    port, tls = endpoint(chain, which)
    outcomes = await attack_all(port, tls)
    wrong = {}
    for attack in ATTACKS:
        got = outcomes[attack.name]
        error = got.error()
        ok = got.status in attack.expect and (got.closed or (isinstance(error, str) and error))
        if not ok:
            wrong[attack.name] = f"expected one of {attack.expect}, got {got}"
    assert not wrong, wrong


@pytest.mark.slow
@pytest.mark.parametrize("which", ["client", "server"])
async def test_slowloris_a_byte_a_second_is_cut_off(chain: Chain, which: str) -> None:
    port, tls = endpoint(chain, which)
    head = request(f"GET /api/tags HTTP/1.1\n{HOST}" + "".join(f"X-{i}: v\n" for i in range(10)))

    async def slow_client() -> tuple[int, Outcome]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=tls, server_hostname="ollana" if tls else None
        )
        answer = asyncio.ensure_future(reader.read())
        sent = 0
        try:
            for byte in head:
                if answer.done():
                    break
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    break
                sent += 1
                await asyncio.wait([answer], timeout=1.0)
            raw = await answer
        except (ConnectionError, ssl.SSLError):
            raw = b""
        finally:
            answer.cancel()
            writer.close()
        return sent, parse_response(raw)

    async with asyncio.timeout(HANG_GUARD * 2):
        results = await asyncio.gather(*(slow_client() for _ in range(20)))
        # Meanwhile, everybody else is served.
        await normal_request_works(port, tls)
    for sent, outcome in results:
        assert sent < len(head), "the whole head went through, a byte a second"
        assert outcome.closed or (outcome.status == 408 and outcome.error()), outcome


async def test_connections_past_the_cap_get_503_and_the_rest_are_served(tmp_path: Path) -> None:
    env = {"OLLANA_LIMITS_MAX_CONNECTIONS": "4", "OLLANA_LIMITS_HEADER_TIMEOUT": "30"}
    async with running_chain(tmp_path, client_env=env) as c:
        held = [await asyncio.open_connection("127.0.0.1", c.client.port) for _ in range(4)]
        try:
            for _, writer in held:
                writer.write(b"GET /api/tags HTTP/1.1\r\n")  # started, never finished
                await writer.drain()
            outcome = await exchange(c.client.port, request(f"GET /api/tags HTTP/1.1\n{HOST}"))
            assert outcome.status == 503 and "busy" in str(outcome.error()), outcome
        finally:
            for _, writer in held:
                writer.close()

        async def served() -> bool:
            outcome = await exchange(c.client.port, request(f"GET /api/tags HTTP/1.1\n{HOST}"))
            assert outcome.status in (200, 503), outcome
            return outcome.status == 200

        # The held connections are released as the process sees them close.
        await until(served, "a freed slot serving", HANG_GUARD)
