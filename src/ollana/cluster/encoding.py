"""Request bodies as routing reads them: Content-Encoding undone, a multipart form's fields.

Pure and bounded: a body is decoded to at most `cap` bytes (a small compressed body cannot
expand past it: decompression bombs stop there), and what cannot be decoded is None, so that
the request is forwarded unrouted, never refused. The body forwarded is always the original.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

import zstandard

__all__ = ["ZSTD_WINDOW_MAX", "decoded", "form_field"]

ZSTD_WINDOW_MAX: Final = 8 << 20  # as Ollama's decoder allows (WithDecoderMaxMemory(8 MiB))
_MAX_CODINGS: Final = 3  # "gzip, zstd" is legal; a long chain is not worth undoing
_FIELD_MAX: Final = 1024
_NAME: Final = re.compile(rb'(?i)content-disposition:[^\r\n]*?;\s*name="([^"\r\n]*)"([^\r\n]*)')


def decoded(body: bytes, encoding: str | None, cap: int) -> bytes | None:
    """The body with its Content-Encoding undone, if that gives at most `cap` bytes."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if len(codings) > _MAX_CODINGS:
        return None
    data: bytes | None = body
    # Codings are listed in the order they were applied: undo the last first.
    for coding in reversed(codings):
        if data is None:
            return None
        data = _undo(coding, data, cap)
    return data if data is not None and len(data) <= cap else None


def _undo(coding: str, data: bytes, cap: int) -> bytes | None:
    if coding == "zstd":
        try:
            reader = zstandard.ZstdDecompressor(max_window_size=ZSTD_WINDOW_MAX).stream_reader(
                data, read_across_frames=True
            )
            with reader:
                out = reader.read(cap + 1)
        except zstandard.ZstdError:
            return None
        return out if len(out) <= cap else None
    if coding in ("gzip", "x-gzip"):
        return _inflate(data, 16 + zlib.MAX_WBITS, cap)
    if coding == "deflate":
        # RFC 9110's deflate is zlib-wrapped; some clients send it raw.
        return _inflate(data, zlib.MAX_WBITS, cap) or _inflate(data, -zlib.MAX_WBITS, cap)
    return None  # br, compress, or unknown: not ours to read


def _inflate(data: bytes, wbits: int, cap: int) -> bytes | None:
    engine = zlib.decompressobj(wbits)
    try:
        out = engine.decompress(data, cap + 1)
    except zlib.error:
        return None
    if len(out) > cap or not engine.eof:
        return None  # larger than the cap, or cut short
    return out


def form_field(body: bytes, content_type: str | None, name: str) -> str | None:
    """A text field of a multipart/form-data body (not a file), or None."""
    kind, _, params = (content_type or "").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, given = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            boundary = given.strip().strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        head, sep, content = part.partition(b"\r\n\r\n")
        found = _NAME.search(head) if sep else None
        if found is None or found[1] != name.encode() or b"filename" in found[2]:
            continue
        content = content.removesuffix(b"\r\n")
        if len(content) > _FIELD_MAX:
            return None
        try:
            return content.decode()
        except UnicodeDecodeError:
            return None
    return None
