"""What each hop sends on: the client's headers less the hop-by-hop ones."""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from ollana.http import request_headers


def proxy(*items: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(items))


def test_hop_by_hop_and_connection_named_headers_end_here() -> None:
    incoming = proxy(
        ("Host", "127.0.0.1:11434"), ("Connection", "keep-alive, X-Secret ,"),
        ("Keep-Alive", "timeout=5"), ("x-secret", "a"), ("Transfer-Encoding", "chunked"),
        ("Expect", "100-continue"), ("TE", "trailers"), ("Accept", "*/*"),
        ("Cookie", "a=1"), ("Cookie", "b=2"), ("User-Agent", "curl/8.5.0"),
    )  # fmt: skip
    assert list(request_headers(incoming).items()) == [
        ("Accept", "*/*"), ("Cookie", "a=1"), ("Cookie", "b=2"), ("User-Agent", "curl/8.5.0"),
    ]  # fmt: skip


def test_one_more_header_may_be_dropped_and_extra_ones_replace_the_clients() -> None:
    incoming = proxy(("X-Ollana-Model", "llama3"), ("X-Tag", "app"), ("Accept", "*/*"))
    out = request_headers(incoming, {"x-tag": "ollana"}, drop="x-ollana-model")
    assert "X-Ollana-Model" not in out and out.getall("X-Tag") == ["ollana"]
    assert out["Accept"] == "*/*" and len(out) == 2
    assert "X-Ollana-Model" in incoming  # the request itself is left as it came
