"""Traffic for the LAN tests, run inside a host: a request loop, or one stream.

    python traffic.py loop URL [--workers N] [--timeout S]
    python traffic.py stream URL [--tokens N]

Every event is one JSON line on stdout. Times are time.monotonic(), one clock for every
process of the machine, so they compare with the times of the process that runs the test.

loop: N workers send generation requests one after another until SIGTERM, then finish the
ones in flight and exit. One line per request: worker, start, end, status, server (the
X-Ollana-Server header: the short device ID of the server that answered), error.

stream: one streamed generation; a "head" line, one "line" per NDJSON line, then "end"
(how: "eof" when the response ended, "error" when the connection broke).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from typing import Any

import aiohttp

MODEL = "llama3.2"
SERVER_HEADER = "X-Ollana-Server"


def emit(event: dict[str, Any]) -> None:
    """One JSON line, flushed at once: the test reads it while we run."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def one_request(
    session: aiohttp.ClientSession, url: str, worker: int, seq: int, timeout: float
) -> None:
    body = {"model": MODEL, "prompt": f"w{worker} n{seq}", "stream": False,
            "options": {"num_predict": 4}}  # fmt: skip
    record: dict[str, Any] = {"worker": worker, "seq": seq, "start": time.monotonic()}
    status: int | None = None
    server: str | None = None
    error: str | None = None
    try:
        async with session.post(
            url + "/api/generate", json=body, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            status = response.status
            server = response.headers.get(SERVER_HEADER)
            data = await response.read()
        answer = json.loads(data)
        if status != 200:
            error = str(answer.get("error", answer))
        elif not (answer.get("done") is True and isinstance(answer.get("response"), str)):
            error = f"not a finished generation: {data[:200]!r}"
    except TimeoutError:
        error = f"no answer within {timeout} s"
    except (aiohttp.ClientError, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    record.update(end=time.monotonic(), status=status, server=server, error=error)
    emit(record)


async def loop(url: str, workers: int, timeout: float) -> None:
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(signum, stop.set)

    async def work(session: aiohttp.ClientSession, worker: int) -> None:
        seq = 0
        while not stop.is_set():
            await one_request(session, url, worker, seq, timeout)
            seq += 1

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        emit({"event": "started", "t": time.monotonic()})
        await asyncio.gather(*(work(session, w) for w in range(workers)))


async def stream(url: str, tokens: int) -> None:
    body = {"model": MODEL, "prompt": "a long story", "stream": True,
            "options": {"num_predict": tokens}}  # fmt: skip
    async with aiohttp.ClientSession() as session:
        emit({"event": "started", "t": time.monotonic()})
        how, error = "eof", None
        try:
            async with session.post(
                url + "/api/generate", json=body, timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                emit({"event": "head", "t": time.monotonic(), "status": response.status,
                      "server": response.headers.get(SERVER_HEADER)})  # fmt: skip
                async for raw in response.content:
                    line = raw.decode(errors="replace").strip()
                    if line:
                        emit({"event": "line", "t": time.monotonic(), "text": line})
        except aiohttp.ClientError as exc:
            how, error = "error", f"{type(exc).__name__}: {exc}"
        emit({"event": "end", "t": time.monotonic(), "how": how, "error": error})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    looping = sub.add_parser("loop")
    looping.add_argument("url")
    looping.add_argument("--workers", type=int, default=2)
    looping.add_argument("--timeout", type=float, default=30.0)
    streaming = sub.add_parser("stream")
    streaming.add_argument("url")
    streaming.add_argument("--tokens", type=int, default=2000)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        if args.command == "loop":
            asyncio.run(loop(args.url.rstrip("/"), args.workers, args.timeout))
        else:
            asyncio.run(stream(args.url.rstrip("/"), args.tokens))


if __name__ == "__main__":
    main()
