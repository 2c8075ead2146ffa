"""The host's ollama.com account as Ollama answers for it: status, whoami, sign-out, cloud models.

An emulator runs signed in (the default) or signed out (`ollana emulate --signed-out`). Signed
out, `/api/me` and every request for a cloud model (`name:cloud`) answer 401 with the
`signin_url` a real Ollama gives; `/api/signout` signs a signed-in emulator out.
"""

from __future__ import annotations

import base64
import json
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler

from ollana.emulator.encoding import body_bytes
from ollana.emulator.responses import json_body, native_error
from ollana.ollama_api import SIGNIN_URL, endpoint, is_cloud_model

__all__ = ["Account"]

_USER: Final = {
    "id": "6f1c2a57-0c7e-4b8a-9a55-2f7d1e0b9c41",
    "email": "emulator@example.invalid",
    "name": "emulator",
    "plan": "free",
}
_KEY: Final = base64.urlsafe_b64encode(b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 emulator").rstrip(b"=")


class Account:
    """Whether the emulated Ollama is signed in to ollama.com, and what depends on it."""

    def __init__(self, signed_in: bool, host: str = "emulator") -> None:
        self.signed_in = signed_in
        self.signin_url = SIGNIN_URL.format(name=host, key=_KEY.decode())

    def unauthorized(self) -> web.Response:
        """Ollama's 401 for an account that is not signed in."""
        return json_body({"error": "unauthorized", "signin_url": self.signin_url}, 401)

    async def status(self, request: web.Request) -> web.Response:
        """GET /api/status: cloud models are enabled (no OLLAMA_NO_CLOUD)."""
        return json_body({"cloud": {"disabled": False, "source": "none"}})

    async def me(self, request: web.Request) -> web.Response:
        """POST /api/me: the signed-in user, or 401 with where to sign in."""
        return json_body(_USER) if self.signed_in else self.unauthorized()

    async def signout(self, request: web.Request) -> web.Response:
        """POST /api/signout and DELETE /api/user/keys/{key}: disconnect this host's key."""
        if not self.signed_in:
            return native_error(401, "you are not currently signed in")
        self.signed_in = False
        return json_body(None)

    async def web_search(self, request: web.Request) -> web.Response:
        """POST /api/experimental/web_search and web_fetch: the account's tools (no results)."""
        if not self.signed_in:
            return self.unauthorized()
        if request.path.endswith("/web_search"):
            return json_body({"results": []})
        return json_body({"title": "", "content": "", "links": []})

    async def recommendations(self, request: web.Request) -> web.Response:
        """GET /api/experimental/model-recommendations."""
        return json_body({"recommendations": []})

    @web.middleware
    async def cloud_guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """A request for a cloud model while signed out: 401 before any handler runs."""
        found = endpoint(request.path, request.method)
        if self.signed_in or found is None or found.model != "body":
            return await handler(request)
        try:
            body = json.loads(await body_bytes(request) or b"null")
        except ValueError:
            return await handler(request)
        model = body.get("model") or body.get("name") if isinstance(body, dict) else None
        if isinstance(model, str) and is_cloud_model(model.strip()) and not found.mutating:
            return self.unauthorized()
        return await handler(request)
