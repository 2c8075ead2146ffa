"""Ollama's two request guards: CORS (gin-contrib/cors) and the DNS-rebinding Host check."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

from ollana.http.guard import DEFAULT_ORIGINS, cors_headers

__all__ = ["Guard", "host_allowed"]

_EXTENSIONS = (
    "chrome-extension://",
    "safari-extension://",
    "moz-extension://",
    "ms-browser-extension://",
)
_HOST_CACHE = 4096
_LOCAL_TLDS = (".localhost", ".local", ".internal")
# Go's netip IsPrivate: RFC 1918 and RFC 4193 only.
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _split_host(host: str) -> str:
    """Go's net.SplitHostPort, falling back to the whole value as Ollama does."""
    if host.startswith("["):
        end = host.find("]")
        if end > 0 and host[end + 1 : end + 2] == ":" and ":" not in host[end + 2 :]:
            return host[1:end]
        return host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def host_allowed(host_header: str, hostname: str) -> bool:
    """allowedHostsMiddleware for a loopback listener: may a request with this Host pass?"""
    host = _split_host(host_header)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        host = host.lower()
        return host in ("", "localhost", hostname) or host.endswith(_LOCAL_TLDS)
    return address.is_loopback or address.is_unspecified or any(address in n for n in _PRIVATE)


class Guard:
    """The checks Ollama runs before any route, CORS first, then the Host check."""

    def __init__(self, extra_origins: Iterable[str] = ()) -> None:
        self._exact: set[str] = set()
        self._wildcards: list[tuple[str, str]] = []
        for origin in (*extra_origins, *DEFAULT_ORIGINS):
            if "*" in origin:
                prefix, _, suffix = origin.partition("*")
                self._wildcards.append((prefix, suffix))
            else:
                self._exact.add(origin)
        self._hostname = socket.gethostname().lower()
        # Decisions by listener address and by Host value: both repeat on every request.
        self._listeners: dict[str, bool] = {}
        self._hosts: dict[str, bool] = {}

    def origin_allowed(self, origin: str) -> bool:
        """Whether cors.isOriginValid accepts the origin."""
        if origin in self._exact or origin.startswith(_EXTENSIONS):
            return True
        return any(
            len(origin) >= len(p) + len(s) and origin.startswith(p) and origin.endswith(s)
            for p, s in self._wildcards
        )

    def _loopback_listener(self, request: web.Request) -> bool:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport else None
        if not sockname:
            return False
        local = sockname[0]
        known = self._listeners.get(local)
        if known is None:
            known = ipaddress.ip_address(local.partition("%")[0]).is_loopback
            self._listeners[local] = known
        return known

    def _host_ok(self, host: str) -> bool:
        known = self._hosts.get(host)
        if known is None:
            known = host_allowed(host, self._hostname)
            if len(self._hosts) < _HOST_CACHE:
                self._hosts[host] = known
        return known

    def _cross_origin(self, request: web.Request) -> str:
        """The request's Origin if it makes this a CORS request, else ""."""
        origin = request.headers.get("Origin", "")
        if origin:
            host = request.host
            if origin in (f"http://{host}", f"https://{host}"):
                return ""  # same origin: cors lets it through untouched
        return origin

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Add the CORS headers of an allowed cross-origin request, streamed or not."""
        if "Access-Control-Allow-Origin" in response.headers:
            return  # a preflight's answer already carries its own
        if response.status != 403 and (origin := self._cross_origin(request)):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers.setdefault("Vary", "Origin")

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer 403 (or a preflight's 204) where Ollama would; pass everything else on."""
        headers = request.headers
        if origin := self._cross_origin(request):
            if not self.origin_allowed(origin):
                return web.Response(status=403)
            if request.method == "OPTIONS":
                return web.Response(
                    status=204, headers=CIMultiDict(cors_headers(origin, preflight=True))
                )
        if self._loopback_listener(request):
            host_header = headers.get("Host", "")
            if not self._host_ok(host_header):
                return web.Response(status=403)
            if request.method == "OPTIONS" and not _is_ip(_split_host(host_header)):
                return web.Response(status=204)
        return await handler(request)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
