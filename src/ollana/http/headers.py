"""Header names ollana speaks, and the headers that travel from one hop to the next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

__all__ = [
    "BUSY_HEADER",
    "HOP_BY_HOP",
    "MODEL_HEADER",
    "PIN_HEADER",
    "VERSION_HEADER",
    "continue_if_expected",
    "is_ollana",
    "request_headers",
]

# RFC 9110 §7.6.1 plus the de-facto ones; Host and Content-Length are re-derived per hop.
HOP_BY_HOP: Final = frozenset(
    h.lower()
    for h in (
        "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
        "Proxy-Authorization", "TE", "Trailer", "Transfer-Encoding", "Upgrade", "Host",
        # Each listener answers it itself (`continue_if_expected`); the next hop is sent the
        # body without waiting.
        "Expect",
    )
)  # fmt: skip

# Both proxies tag their answers with it: how a client tells an ollana from an Ollama.
VERSION_HEADER: Final = "X-Ollana-Version"
# On a request, pins it to a server (device ID prefix or host); on an answer, who answered.
PIN_HEADER: Final = "X-Ollana-Server"
# On a 503 of a listener's own (with Retry-After): no room for the connection, nothing was
# done, and the same server may take the request a moment later.
BUSY_HEADER: Final = "X-Ollana-Busy"
# From a client to a server: the model a request names (read from its body), so that the
# server queues it with that model's requests without parsing the body again.
MODEL_HEADER: Final = "X-Ollana-Model"
_OLLANA_PREFIX: Final = "x-ollana-"


def is_ollana(headers: Mapping[str, str]) -> bool:
    """Whether an answer carries ollana's headers (another ollana, not an Ollama)."""
    return any(name.lower().startswith(_OLLANA_PREFIX) for name in headers)


_CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"


async def continue_if_expected(request: web.BaseRequest) -> None:
    """Tell a client that sent `Expect: 100-continue` to send its body (curl waits 1 s else).

    Called once the request may proceed; one that may not gets its final status instead.
    """
    expect = request.headers.get(hdrs.EXPECT)
    if expect is not None and expect.lower() == "100-continue" and request.version >= (1, 1):
        await request.writer.write(_CONTINUE)


def request_headers(
    headers: CIMultiDictProxy[str], extra: Mapping[str, str] | None = None, drop: str = ""
) -> CIMultiDict[str]:
    """The headers to send upstream: the client's, less hop-by-hop and Connection-named ones.

    `drop` names one more header that ends at this hop.
    """
    # A copy in C, then the few names to drop: half the time of a filtered loop in Python.
    out = CIMultiDict(headers)
    connection = out.get(hdrs.CONNECTION)
    for name in HOP_BY_HOP:
        if name in out:
            del out[name]
    if connection:
        for token in connection.split(","):
            named = token.strip()
            if named and named in out:
                del out[named]
    if drop and drop in out:
        del out[drop]
    if extra:
        out.update(extra)
    return out
