"""Large bodies: a 1 GiB blob upload and a 1 GiB download, throughput and peak RSS.

Upload: `POST /api/blobs/sha256:…` streamed from a generator (with its Content-Length, as
Ollama's clients send files) to `ollana emulate`, which hashes what arrives and answers 201
only if the digest matches. Download: the emulator has no large answer, so the backend for
this case is nginx serving a 1 GiB sparse file (zeros from the page cache).

    python -m bench.large [--mib 1024]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from bench.common import metered, per_process, table, write_results
from bench.nginx import sparse_file
from bench.runner import main, workdir
from bench.setups import Target, direct, emulator, nginx_chain, ollana_chain, static_backend

__all__ = ["run"]

BLOCK = 1 << 20
TRANSFER_TIMEOUT = 600.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This benchmark's options."""
    parser.add_argument("--mib", type=int, default=1024, help="body size in MiB")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark; print its table; write bench/results/large.json."""
    size = args.mib * BLOCK
    rows: list[dict[str, Any]] = []
    with workdir(args.keep) as tmp:
        async with emulator(tmp) as backend, contextlib.AsyncExitStack() as stack:
            targets = [
                direct(backend.url),
                await stack.enter_async_context(ollana_chain(tmp / "up", backend.url)),
                await stack.enter_async_context(nginx_chain(tmp / "up", backend.port)),
            ]
            for seed, target in enumerate(targets):
                rows.append(await _measure(target, "upload", _upload, size, seed))
        with sparse_file(tmp, size) as big:
            async with static_backend(tmp, big) as backend, contextlib.AsyncExitStack() as stack:
                targets = [
                    direct(backend.url),
                    await stack.enter_async_context(ollana_chain(tmp / "down", backend.url)),
                    await stack.enter_async_context(nginx_chain(tmp / "down", backend.port)),
                ]
                for target in targets:
                    rows.append(await _measure(target, "download", _download, size, 0))
    by = {(r["case"], r["target"]): r for r in rows}
    for row in rows:
        nginx = by[(row["case"], "nginx")]
        row["vs_nginx"] = round(row["mb_s"] / nginx["mb_s"], 3) if nginx["mb_s"] else None
    print(
        table(
            f"Large bodies ({args.mib} MiB; MB = 10^6 bytes)",
            [
                "case",
                "path",
                "ok",
                "MB/s",
                "× nginx",
                "CPU s per process",
                "peak RSS MB per process",
            ],
            [
                (
                    r["case"],
                    r["target"],
                    r["ok"],
                    r["mb_s"],
                    r["vs_nginx"],
                    per_process(r["cpu_s"]),
                    per_process(r["peak_rss_mb"]),
                )
                for r in rows
            ],
        )
    )
    data = {"command": "python -m bench.large", "bytes": size, "rows": rows}
    path = write_results("large", data)
    print(f"\nwritten {path}")
    return data


async def _measure(
    target: Target, case: str, transfer: Any, size: int, seed: int
) -> dict[str, Any]:
    async with metered(target.procs) as meters:
        ok, seconds, detail = await transfer(target.url, size, seed)
    return {
        "case": case,
        "target": target.name,
        "ok": ok,
        "detail": detail,
        "interference": round(meters.interference, 3),
        "seconds": round(seconds, 3),
        "mb_s": round(size / seconds / 1e6, 1) if ok else 0.0,
        "cpu_s": meters.cpu_s,
        "peak_rss_mb": meters.peak_rss_mb,
        "rss_before_mb": {n: round(u.rss_mb, 1) for n, u in meters.before.items()},
    }


def _block(seed: int) -> bytes:
    # Different content per target: the emulator answers a blob it already has at once.
    return hashlib.shake_256(f"ollana bench {seed} {os.getpid()}".encode()).digest(BLOCK)


async def _upload(url: str, size: int, seed: int) -> tuple[bool, float, str]:
    block = _block(seed)
    hasher = hashlib.sha256()
    for _ in range(size // BLOCK):
        hasher.update(block)
    digest = "sha256:" + hasher.hexdigest()

    async def body() -> AsyncIterator[bytes]:
        for _ in range(size // BLOCK):
            yield block

    started = time.perf_counter()
    headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT)) as s,
        s.post(f"{url}/api/blobs/{digest}", data=body(), headers=headers) as response,
    ):
        text = (await response.read())[:200].decode(errors="replace")
        seconds = time.perf_counter() - started
        return response.status == 201, seconds, f"HTTP {response.status} {text}".strip()


async def _download(url: str, size: int, seed: int) -> tuple[bool, float, str]:
    """curl reads fastest (a Python reader would be the bottleneck); aiohttp where it is missing."""
    curl = shutil.which("curl")
    if curl is None:
        return await _download_aiohttp(url, size)
    proc = await asyncio.create_subprocess_exec(
        curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
        f"{url}/big", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), TRANSFER_TIMEOUT)
    try:
        status, received, seconds = out.decode().split()[-3:]
        ok = status == "200" and int(received) == size
        return ok, float(seconds), f"HTTP {status}, {received} bytes (curl)"
    except ValueError:
        return False, 1.0, out.decode(errors="replace")[:200]


async def _download_aiohttp(url: str, size: int) -> tuple[bool, float, str]:
    received = 0
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=TRANSFER_TIMEOUT), auto_decompress=False
        ) as s,
        s.get(f"{url}/big") as response,
    ):
        async for chunk in response.content.iter_any():
            received += len(chunk)
        status = response.status
    seconds = time.perf_counter() - started
    ok = status == 200 and received == size
    return ok, seconds, f"HTTP {status}, {received} bytes"


if __name__ == "__main__":
    main(__doc__ or "", run, add_arguments)
