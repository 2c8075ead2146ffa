"""LimitedServer over real sockets: each limit at its boundary, and how a refusal looks.

A small handler stands in for the proxies: it reads the body (slowly, when asked to) and
answers with its length. Requests are raw bytes, so that nothing between the test and the
server tidies them up.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from ollana.config import Limits
from ollana.http.limits import (
    BAD_REQUEST,
    BODY_TIMEOUT,
    CONNECTIONS,
    HEADER_TIMEOUT,
    HEADERS_TOO_LARGE,
    REASONS,
    SEND_TIMEOUT,
    TOO_MANY_HEADERS,
    URI_TOO_LONG,
    LimitedServer,
)
from tests.hostile.support import HANG_GUARD, Outcome, exchange, parse_response
from tests.support.waiting import until

SHORT = 0.5  # header and body timeouts in these tests
CHUNKED_BAD = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"


async def answer(ended: asyncio.Event, request: web.BaseRequest) -> web.StreamResponse:
    """Read the whole body (a chunk at a time, pausing if `?slow`), answer its length."""
    if request.path == "/stream":
        return await stream(ended, request)
    size = 0
    while chunk := await request.content.read(4096):
        size += len(chunk)
        if "slow" in request.query:
            await asyncio.sleep(0.005)
    if request.path == "/boom":
        raise RuntimeError("a handler bug")
    return web.json_response({"size": size, "path": request.path})


async def stream(ended: asyncio.Event, request: web.BaseRequest) -> web.StreamResponse:
    """NDJSON lines until the client goes away; `ended` is set once the handler stops."""
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    try:
        while True:
            await response.write(b'{"response": "' + b"t" * 1000 + b'"}\n')
            await asyncio.sleep(0)  # tokens as fast as they come
    finally:
        ended.set()


@dataclass
class Served:
    """A LimitedServer on a loopback port, with what it reported."""

    server: LimitedServer
    port: int
    told: list[str] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)  # a /stream handler stopped

    async def send(self, data: bytes, **kwargs: object) -> Outcome:
        return await exchange(self.port, data, **kwargs)  # type: ignore[arg-type]


Serve = Callable[..., Awaitable[Served]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with contextlib.AsyncExitStack() as stack:

        async def serve_(**changes: float) -> Served:
            timeouts = {"header_timeout": SHORT, "body_timeout": SHORT, "send_timeout": SHORT}
            limits = Limits(**{**timeouts, **changes})
            told: list[str] = []
            ended = asyncio.Event()
            server = LimitedServer(
                functools.partial(answer, ended), limits, on_refusal=told.append, name="test",
                handler_cancellation=True, access_log=None,
            )  # fmt: skip
            runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            return Served(server, runner.addresses[0][1], told, ended)

        yield serve_


def get(extra: str = "", target: str = "/") -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode()


def post(body: bytes, extra: str = "", target: str = "/") -> bytes:
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def fields(total: int, count: int = 4) -> str:
    """`count` header fields taking exactly `total` bytes as LimitedServer counts them."""
    each, rest = divmod(total, count)
    lines = []
    for i in range(count):
        name = f"X-{i:03d}"
        size = each + (rest if i == 0 else 0)
        lines.append(f"{name}: {'v' * (size - len(name) - 4)}\r\n")
    return "".join(lines)


def refused(outcome: Outcome, status: int) -> bool:
    error = outcome.error()
    return outcome.status == status and isinstance(error, str) and bool(error)


# --- each limit at its boundary -----------------------------------------------------------


async def test_header_fields_up_to_the_size_limit_pass_and_one_byte_more_is_431(
    serve: Serve,
) -> None:
    s = await serve()
    host = len("Host") + len("x") + 4 + len("Connection") + len("close") + 4
    limit = s.server.limits.max_header_size
    assert (await s.send(get(fields(limit - host)))).status == 200
    outcome = await s.send(get(fields(limit - host + 1)))
    assert refused(outcome, 431), outcome
    assert s.told == [HEADERS_TOO_LARGE]


async def test_a_head_larger_than_any_request_can_be_is_refused_before_it_ends(
    serve: Serve,
) -> None:
    s = await serve(header_timeout=60.0)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    for i in range(60):  # 60 KB of fields, each one small, and the head never ends
        writer.write(f"X-{i}: {'v' * 1000}\r\n".encode())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    async with asyncio.timeout(HANG_GUARD):
        outcome = parse_response(await reader.read())
    writer.close()
    assert refused(outcome, 431), outcome


async def test_one_hundred_fields_pass_and_one_more_is_431(serve: Serve) -> None:
    s = await serve()
    assert (await s.send(get("".join(f"X-{i}: v\r\n" for i in range(98))))).status == 200
    outcome = await s.send(get("".join(f"X-{i}: v\r\n" for i in range(99))))
    assert refused(outcome, 431), outcome
    assert s.told == [TOO_MANY_HEADERS]


async def test_a_request_target_up_to_the_line_limit_passes_and_longer_is_414(
    serve: Serve,
) -> None:
    s = await serve()
    limit = s.server.limits.max_line_size
    assert (await s.send(get(target="/" + "a" * (limit - 1)))).status == 200
    outcome = await s.send(get(target="/" + "a" * limit))
    assert refused(outcome, 414), outcome
    assert s.told == [URI_TOO_LONG]


async def test_a_large_body_arriving_with_its_head_is_not_mistaken_for_a_large_head(
    serve: Serve,
) -> None:
    s = await serve()
    outcome = await s.send(post(b"x" * 300_000))
    assert outcome.status == 200 and json.loads(outcome.body)["size"] == 300_000


async def test_a_silent_connection_is_closed_without_an_answer(serve: Serve) -> None:
    s = await serve()
    outcome = await s.send(b"")
    assert outcome.closed
    assert s.told == [HEADER_TIMEOUT]


async def test_a_head_that_stops_coming_gets_408(serve: Serve) -> None:
    s = await serve()
    outcome = await s.send(b"GET / HTTP/1.1\r\nHost: x\r\nX-Never: ends")
    assert refused(outcome, 408), outcome
    assert s.told == [HEADER_TIMEOUT]


async def test_an_idle_keep_alive_connection_owes_no_head_until_it_speaks(serve: Serve) -> None:
    s = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            async with asyncio.timeout(HANG_GUARD):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.sleep(SHORT * 3)  # idle between requests: keep-alive, not a head
    finally:
        writer.close()
    assert s.told == []


async def test_a_later_head_that_stops_coming_gets_408_too(serve: Serve) -> None:
    # The deadline of a connection's first head has passed by the time the second one
    # stalls: the second still gets the whole deadline, then its 408.
    s = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(HANG_GUARD):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Never: ends")
        async with asyncio.timeout(HANG_GUARD):
            rest = await reader.read()
    finally:
        writer.close()
    assert parse_response(rest).status == 408
    assert s.told == [HEADER_TIMEOUT]


async def test_a_large_head_pipelined_behind_a_body_is_431(serve: Serve) -> None:
    # The next head begins in the same bytes as the body before it, where head bytes are
    # not counted; its fields are measured all the same.
    s = await serve()
    big = fields(Limits().max_header_size + 1)
    second = f"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{big}\r\n".encode()
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        writer.write(first)
        await until(lambda: s.server.requests_count == 1, "the first head read")
        writer.write(b"hello" + second[:-100])  # its body, and most of the next head
        async with asyncio.timeout(HANG_GUARD):
            head = await reader.readuntil(b"\r\n\r\n")  # all of that was read
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
        writer.write(second[-100:])
        async with asyncio.timeout(HANG_GUARD):
            raw = head + await reader.read()
    finally:
        writer.close()
    assert raw.count(b"HTTP/1.1 200") == 1 and b" 431 Request Header Fields Too Large" in raw
    assert s.told == [HEADERS_TOO_LARGE]


async def test_a_body_that_stops_coming_gets_408(serve: Serve) -> None:
    s = await serve()
    outcome = await s.send(post(b"x" * 100)[:-40])
    assert refused(outcome, 408), outcome
    assert s.told == [BODY_TIMEOUT]


async def test_a_body_held_back_by_a_slow_reader_is_not_a_stalled_body(serve: Serve) -> None:
    s = await serve()
    size = 4_000_000  # far more than the buffers: the reader, not the sender, sets the pace
    outcome = await s.send(post(b"x" * size, target="/?slow"))
    assert outcome.status == 200 and json.loads(outcome.body)["size"] == size
    assert s.told == []


async def test_connections_past_the_cap_get_503_then_a_freed_slot_serves(serve: Serve) -> None:
    s = await serve(max_connections=2, header_timeout=60.0)
    held = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(2)]
    outcome = await s.send(get())
    assert refused(outcome, 503) and "busy" in str(outcome.error()), outcome
    for _, writer in held:
        writer.close()
        await writer.wait_closed()

    async def served() -> bool:
        outcome = await s.send(get())
        assert outcome.status in (200, 503), outcome
        return outcome.status == 200

    await until(served, "a freed slot serving", HANG_GUARD)
    assert s.told == [CONNECTIONS]


@pytest.mark.parametrize(
    ("data", "status", "reason"),
    [
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"r" * 40, 400, BAD_REQUEST),
        (b"GARBAGE\x00\x01\r\n\r\n", 400, BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 400, BAD_REQUEST),  # no Host
        (b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, BAD_REQUEST),
        (CHUNKED_BAD, 400, BAD_REQUEST),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431, HEADERS_TOO_LARGE),
    ],
    ids=["tls", "garbage", "no-host", "non-utf-8", "bad-chunk", "long-field"],
)
async def test_a_malformed_request_gets_an_ollama_style_error_and_nothing_of_itself(
    serve: Serve, data: bytes, status: int, reason: str
) -> None:
    s = await serve()
    outcome = await s.send(data)
    assert refused(outcome, status), outcome
    assert outcome.headers["content-type"] == "application/json; charset=utf-8"
    assert set(json.loads(outcome.body)) == {"error"}
    assert b"\xff" not in outcome.body and b"aaaa" not in outcome.body and b"zz" not in outcome.body
    assert s.told == [reason]


# --- how refusals are reported ------------------------------------------------------------


async def test_each_refusal_is_counted_told_and_logged_once_at_debug(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    s = await serve()
    caplog.set_level(logging.DEBUG)
    await s.send(b"NOT HTTP\r\n\r\n")
    await s.send(get("".join(f"X-{i}: v\r\n" for i in range(200))))
    assert s.told == [BAD_REQUEST, TOO_MANY_HEADERS]
    assert s.server.refusals == {BAD_REQUEST: 1, TOO_MANY_HEADERS: 1}
    assert set(s.told) <= REASONS
    ours = [r for r in caplog.records if r.name == "ollana.http.limits"]
    assert [r.levelno for r in ours] == [logging.DEBUG, logging.DEBUG]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_failing_refusal_callback_does_not_stop_the_answer(serve: Serve) -> None:
    s = await serve()

    def broken(reason: str) -> None:
        raise RuntimeError("metrics are down")

    s.server.on_refusal = broken
    outcome = await s.send(b"NOT HTTP\r\n\r\n")
    assert refused(outcome, 400)
    assert s.server.refusals[BAD_REQUEST] == 1
    assert (await s.send(get())).status == 200


async def test_a_handler_failure_is_still_a_500_for_aiohttp_to_log(serve: Serve) -> None:
    s = await serve()
    outcome = await s.send(get(target="/boom"))
    assert outcome.status == 500
    assert s.told == []


async def test_pipelined_requests_are_all_answered(serve: Serve) -> None:
    s = await serve()
    two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n" + get(target="/b")
    outcome = await s.send(two)
    assert outcome.status == 200 and outcome.raw.count(b"HTTP/1.1 200") == 2


async def test_a_client_leaving_mid_stream_is_no_error(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    s = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    async with asyncio.timeout(HANG_GUARD):
        await reader.readuntil(b"ttt")
        # The app hangs up while tokens pour out: the next write meets a closing socket.
        writer.write_eof()
        await s.ended.wait()
    writer.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
    assert (await s.send(get())).status == 200
    assert s.told == []


async def test_a_client_that_reads_nothing_of_its_answer_is_cut_off(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    s = await serve()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(HANG_GUARD):
            await reader.readuntil(b"ttt")
            await s.ended.wait()  # never reading again: the buffers fill, then the cut
    finally:
        writer.close()
    assert s.told == [SEND_TIMEOUT]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.records
