"""Compressed request bodies, where Ollama reads them: zstd on its /v1 inference routes."""

from __future__ import annotations

from typing import Any, Final

import zstandard
from aiohttp import web
from aiohttp.typedefs import Handler

from ollana.emulator.responses import native_error
from ollana.ollama_api import endpoint

__all__ = ["MAX_DECOMPRESSED", "body_bytes", "zstd_bodies"]

MAX_DECOMPRESSED: Final = 20 << 20  # Ollama's maxDecompressedBodySize
_WINDOW_MAX: Final = 8 << 20  # zstd.WithDecoderMaxMemory(8 MiB)
# A typed key where aiohttp has them (3.12+, which warns of plain ones); a string before.
_DECODED: Final[Any] = (
    web.RequestKey("ollana.emulator.decoded_body", bytes)
    if hasattr(web, "RequestKey")
    else "ollana.emulator.decoded_body"
)


async def body_bytes(request: web.Request) -> bytes:
    """The request's body as Ollama's handlers see it: decoded when it came compressed."""
    decoded = request.get(_DECODED)
    return decoded if isinstance(decoded, bytes) else await request.read()


def _decodes_zstd(request: web.Request) -> bool:
    # Ollama's cloud passthrough middleware sits in front of each /v1 POST that names a model.
    found = endpoint(request.path, request.method)
    return (
        request.method == "POST"
        and request.path.startswith("/v1/")
        and found is not None
        and found.model == "body"
    )


@web.middleware
async def zstd_bodies(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Undo `Content-Encoding: zstd` on the routes where Ollama does, up to its size cap."""
    if request.headers.get("Content-Encoding") != "zstd" or not _decodes_zstd(request):
        return await handler(request)
    try:
        reader = zstandard.ZstdDecompressor(max_window_size=_WINDOW_MAX).stream_reader(
            await request.read(), read_across_frames=True
        )
        with reader:
            decoded = reader.read(MAX_DECOMPRESSED + 1)
    except zstandard.ZstdError:
        return native_error(400, "failed to decompress request body")
    if len(decoded) > MAX_DECOMPRESSED:
        return native_error(400, "http: request body too large")
    request[_DECODED] = decoded
    return await handler(request)
