"""The admin HTTP API: /healthz, /status, /metrics, /history, /usage, /pairing and the
dashboard page at /.

Loopback by default. No CORS headers are sent, so other origins cannot read it from a
browser; the Host header is checked as on the local endpoint, so that a web page cannot
reach it through DNS rebinding either. Calls that change state (POST /pairing opens a
pairing window, POST /nearby/dismiss forgets a nearby device) are POST only, refused with
any Origin header but this API's own, and need the per-process token that the dashboard
page carries (X-Ollana-Token): another page can neither read the token nor send the header
without a preflight that gets no CORS answer. `ollana pair` reads the token off the page.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
import secrets
import socket
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Final

from aiohttp import web

from ollana.admin.history import SAMPLE_INTERVAL, HistorySampler
from ollana.admin.status import StatusSource, status_document
from ollana.admin.usage import BY, DEFAULT_SINCE, parse_since, usage_document
from ollana.config import HostPort
from ollana.http.guard import check_host
from ollana.http.listener import ListenError
from ollana.identity.pairhttp import PairingDesk
from ollana.lifecycle import Service
from ollana.metrics import Metrics
from ollana.usage import UsageStoreError

__all__ = ["DASHBOARD", "TOKEN_HEADER", "AdminListener", "create_admin_app", "page_token"]

log = logging.getLogger(__name__)

DASHBOARD: Final = "dashboard.html"
# Admin requests are short and nothing streams, so there is little to drain on exit.
SHUTDOWN_TIMEOUT: Final = 1.0
MAX_ACTION_BODY: Final = 4096
_DEVICE_ID: Final = re.compile(r"[0-9a-f]{64}")

_INLINE = re.compile(r"<(script|style)>(.*?)</\1>", re.DOTALL)
_COMMON_HEADERS: Final = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

TOKEN_HEADER: Final = "X-Ollana-Token"
_TOKEN_META: Final = '<meta name="ollana-token" content="">'
_NOT_A_SERVER: Final = (
    "this ollana runs in client mode and takes no connections from the LAN: run `ollana pair`"
    " on the server, and `ollana pair CODE` here"
)

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_admin_app(
    source: StatusSource,
    metrics: Metrics,
    *,
    pairing: PairingDesk | None = None,
    history_interval: float = SAMPLE_INTERVAL,
) -> web.Application:
    """The admin application of one running mode (`pairing`: server mode's desk).

    It samples the mode's activity for /history while it runs, every `history_interval`.
    """
    sampler = HistorySampler(metrics.activity, interval=history_interval)
    page = resources.files(__package__).joinpath(DASHBOARD).read_text(encoding="utf-8")
    token = secrets.token_urlsafe(32)
    page = page.replace(_TOKEN_META, _TOKEN_META.replace('content=""', f'content="{token}"'))
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
            names = await asyncio.to_thread(source.device_names)
            document = status_document(source, metrics, nearby, names)
        except Exception as exc:
            log.exception("status document failed")
            return _json(500, {"error": f"status unavailable: {exc!r}"})
        return _json(200, document)

    async def history(request: web.Request) -> web.Response:
        names = await asyncio.to_thread(source.device_names)
        return _json(200, sampler.document(names))

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

    async def pairing_state(request: web.Request) -> web.Response:
        if pairing is None:
            return _json(409, {"error": _NOT_A_SERVER})
        return _json(200, pairing.info().as_json())

    def refused(request: web.Request) -> web.Response | None:
        """Why a state-changing call is refused, or None: it came from the dashboard (or CLI)."""
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return _json(403, {"error": "cross-origin requests are refused"})
        given = request.headers.get(TOKEN_HEADER, "")
        if not secrets.compare_digest(given.encode(), token.encode()):
            return _json(403, {"error": f"{TOKEN_HEADER} is missing or wrong"})
        if request.content_type != "application/json":
            return _json(415, {"error": "send Content-Type: application/json"})
        return None

    async def pairing_open(request: web.Request) -> web.Response:
        refusal = refused(request)
        if refusal is not None:
            return refusal
        if pairing is None:
            return _json(409, {"error": _NOT_A_SERVER})
        document = pairing.open_window().as_json()
        document.update(device_id=source.device_id, name=pairing.name, port=source.port)
        return _json(200, document)

    async def dismiss(request: web.Request) -> web.Response:
        refusal = refused(request)
        if refusal is not None:
            return refusal
        try:
            document = await request.json()
        except ValueError:
            document = None
        device = document.get("device_id") if isinstance(document, dict) else None
        if not isinstance(device, str) or not _DEVICE_ID.fullmatch(device):
            return _json(400, {"error": 'send {"device_id": "<64 hex digits>"}'})
        found = await asyncio.to_thread(source.dismiss, device)
        return _json(200, {"dismissed": device, "was_listed": found})

    app = web.Application(middlewares=[guard], client_max_size=MAX_ACTION_BODY)
    app.router.add_get("/", dashboard)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics_text)
    app.router.add_get("/pairing", pairing_state)
    app.router.add_post("/pairing", pairing_open)
    app.router.add_post("/nearby/dismiss", dismiss)
    app.router.add_get("/usage", usage)
    app.router.add_get("/history", history)

    async def start_sampling(app: web.Application) -> None:
        await sampler.start()

    async def stop_sampling(app: web.Application) -> None:
        await sampler.close()

    app.on_startup.append(start_sampling)
    app.on_cleanup.append(stop_sampling)
    return app


def page_token(page: str) -> str | None:
    """The token a dashboard page carries (what `ollana pair` sends back), if any."""
    found = re.search(r'<meta name="ollana-token" content="([A-Za-z0-9_-]+)">', page)
    return found[1] if found else None


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
