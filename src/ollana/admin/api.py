"""The admin HTTP API: /healthz, /status, /metrics, /usage and the dashboard page at /.

Read-only, and loopback by default. No CORS headers are sent, so other origins cannot
read it from a browser; the Host header is checked as on the local endpoint, so that a web
page cannot reach it through DNS rebinding either.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web

from ollana.admin.status import StatusSource, status_document
from ollana.admin.usage import BY, DEFAULT_SINCE, parse_since, usage_document
from ollana.config import HostPort
from ollana.http.guard import check_host
from ollana.http.listener import ListenError
from ollana.lifecycle import Service
from ollana.metrics import Metrics
from ollana.usage import UsageStoreError

__all__ = ["DASHBOARD", "AdminListener", "create_admin_app"]

log = logging.getLogger(__name__)

DASHBOARD: Final = "dashboard.html"
# Admin requests are short and nothing streams, so there is little to drain on exit.
SHUTDOWN_TIMEOUT: Final = 1.0

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_COMMON_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(source: StatusSource, metrics: Metrics) -> web.Application:
    """The admin application of one running mode."""
    page = resources.files(__package__).joinpath(DASHBOARD).read_text(encoding="utf-8")
    page_headers = {"Content-Security-Policy": _page_policy(page)}
    allowed_hosts = tuple(source.settings.allowed_hosts)
    hostname = socket.gethostname().lower()

    @web.middleware
    async def guard(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not check_host(request.host, allowed_hosts, hostname=hostname):
            response: web.StreamResponse = _json(
                403, {"error": f"host {request.host!r} is not allowed on the admin API"}
            )
        else:
            response = await handler(request)
        response.headers.update(_COMMON_HEADERS)
        return response

    async def healthz(request: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def status(request: web.Request) -> web.Response:
        try:
            # It reads the seen file: a disk read and a parse kept off the event loop.
            nearby = await asyncio.to_thread(source.nearby)
            document = status_document(source, metrics, nearby)
        except Exception as exc:
            log.exception("status document failed")
            return _json(500, {"error": f"status unavailable: {exc!r}"})
        return _json(200, document)

    async def metrics_text(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": metrics.content_type})

    async def usage(request: web.Request) -> web.Response:
        by = request.query.get("by", "device")
        try:
            since = parse_since(request.query.get("since", DEFAULT_SINCE))
            if by not in BY:
                raise ValueError(f"by {by!r}: expected one of {', '.join(BY)}")
        except ValueError as exc:
            return _json(400, {"error": str(exc)})
        try:
            document = await asyncio.to_thread(
                usage_document,
                source.settings.home,
                since,
                by,  # type: ignore[arg-type]
            )
        except UsageStoreError as exc:
            return _json(503, {"error": str(exc)})
        return _json(200, document)

    async def dashboard(request: web.Request) -> web.Response:
        return web.Response(text=page, content_type="text/html", headers=page_headers)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", dashboard)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/usage", usage)
    return app


def _json(status: int, document: object) -> web.Response:
    body = json.dumps(document, separators=(",", ":")).encode()
    return web.Response(status=status, body=body, content_type="application/json")


def _page_policy(page: str) -> str:
    """A CSP that lets only the page's own inline script and style run, and fetch only here."""
    digests: dict[str, list[str]] = {"script": [], "style": []}
    for kind, text in _INLINE.findall(page):
        digest = base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()
        digests[kind].append(f"'sha256-{digest}'")
    scripts = " ".join(digests["script"]) or "'none'"
    styles = " ".join(digests["style"]) or "'none'"
    return (
        f"default-src 'none'; script-src {scripts}; style-src {styles}; connect-src 'self'; "
        "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class AdminListener(Service):
    """Serves an admin application on one address; `async with` binds, exit closes."""

    def __init__(self, app: web.Application, address: HostPort) -> None:
        self._address = address
        self._runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
        )
        self._started = False
        self._closed = False
        self.port = address.port

    @property
    def url(self) -> str:
        """Where the dashboard can be opened on this machine."""
        return f"http://{HostPort(self._address.connect_host, self.port)}/"

    async def start(self) -> None:
        """Bind and start answering; ListenError says why binding failed."""
        await self._runner.setup()
        self._started = True
        site = web.TCPSite(self._runner, self._address.host or None, self._address.port)
        try:
            await site.start()
        except OSError as exc:
            await self.close()
            raise ListenError(
                exc.errno, f"admin API cannot listen on {self._address}: {exc.strerror}"
            ) from None
        for address in self._runner.addresses:
            if isinstance(address, tuple) and len(address) >= 2:
                self.port = int(address[1])
                break
        # Not "listening on": that phrase announces the mode's own endpoint.
        log.info("admin API and dashboard at %s", self.url)

    async def close(self) -> None:
        """Stop answering; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            await self._runner.cleanup()
