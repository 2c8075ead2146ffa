"""Model management: pull, push, create, copy, delete, and blob uploads."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ollana.emulator import schemas
from ollana.emulator.catalogue import MEDIA_MODEL, Layer, ModelSpec, build_layers, derive, spec_for
from ollana.emulator.gojson import dumps, go_quote
from ollana.emulator.names import ModelName, parse_name
from ollana.emulator.native import decode_native, required_name, text
from ollana.emulator.responses import JSON, NDJSON, empty, json_body, native_error
from ollana.emulator.state import InstalledModel, ModelStore

__all__ = ["ManageApi"]

_DIGEST = re.compile(r"^sha256[:-][0-9a-fA-F]{64}$")
_MISSING_PREFIX = "nonexistent"  # pulling a model named so fails as a registry miss does
_PROGRESS_STEPS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True, slots=True)
class Failure:
    """An error in a progress stream; status 0 means the 500 Ollama defaults to."""

    message: str
    status: int = 0


Progress = Iterator[dict[str, Any] | Failure]


def _layer_progress(verb: str, layer: Layer, present: bool) -> Progress:
    base = {"status": f"{verb} {layer.digest[7:19]}", "digest": layer.digest}
    if present:
        yield base | {"total": layer.size, "completed": layer.size}
        return
    yield base | {"total": layer.size}  # completed is 0: omitted, as Go's omitempty does
    for step in _PROGRESS_STEPS:
        yield base | {"total": layer.size, "completed": int(layer.size * step)}


class ManageApi:
    """The handlers of Ollama's model-management routes."""

    def __init__(self, store: ModelStore):
        self.store = store

    # --- progress streams ---------------------------------------------------------------

    async def _respond(
        self, request: web.Request, stream: bool, events: Progress
    ) -> web.StreamResponse:
        """streamResponse / waitForStream: NDJSON progress, or only the last object."""
        if not stream:
            latest: dict[str, Any] = {}
            for item in events:
                if isinstance(item, Failure):
                    return native_error(item.status or 500, item.message, JSON)
                latest = item
            return json_body(latest, content_type=JSON)
        first = next(events, None)
        if isinstance(first, Failure):  # nothing written yet: a plain error answer
            return native_error(first.status or 500, first.message, JSON)
        response = web.StreamResponse(headers={"Content-Type": NDJSON})
        await response.prepare(request)
        try:
            event: dict[str, Any] | Failure | None = first
            while event is not None:
                if isinstance(event, Failure):
                    await response.write(dumps({"error": event.message}) + b"\n")
                    break
                await response.write(dumps(event) + b"\n")
                event = next(events, None)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client left: the operation stops where it was, as Ollama's does
        return response

    def _pull_events(self, name: ModelName, finish: bool = True) -> Progress:
        yield {"status": "pulling manifest"}
        if name.model.casefold().startswith(_MISSING_PREFIX):
            yield Failure("pull model manifest: file does not exist")
            return
        existing = self.store.get(name)
        if existing:
            spec, layers, digest = existing.spec, existing.layers, existing.digest
        else:
            spec = spec_for(name)
            layers, digest = build_layers(name, spec)
        for layer in layers:
            yield from _layer_progress("pulling", layer, self.store.has_blob(layer.digest))
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        self.store.install(name, spec, layers=layers, digest=digest)
        if finish:
            yield {"status": "success"}

    def _push_events(self, name: ModelName) -> Progress:
        yield {"status": "retrieving manifest"}
        model = self.store.get(name)
        if model is None:
            yield {"status": "couldn't retrieve manifest"}
            yield Failure(f"open {name.manifest_path}: no such file or directory")
            return
        for layer in model.layers:
            yield from _layer_progress("pushing", layer, False)
        yield {"status": "pushing manifest"}
        yield {"status": "success"}

    def _create_events(self, name: ModelName, body: dict[str, Any]) -> Progress:
        base_name = text(body, "from")
        files = body.get("files") or {}
        base: InstalledModel | None = None
        if base_name:
            parsed = parse_name(base_name)
            if parsed is None:
                yield Failure("invalid model name", 400)
                return
            base = self.store.get(parsed)
            if base is None:  # Ollama pulls a missing base model first
                for event in self._pull_events(parsed, finish=False):
                    yield event
                    if isinstance(event, Failure):
                        return
                base = self.store.get(parsed)
            assert base is not None
            weights = base.layers[0]
            spec = derive(base.spec, parent_model=base.name.display)
            for layer in base.layers:
                yield {"status": f"using existing layer {layer.digest}"}
        elif files:
            for digest in files.values():
                if not self.store.has_blob(digest):
                    path = "/root/.ollama/models/blobs/" + digest.replace(":", "-")
                    yield Failure(f"open {path}: no such file or directory", 400)
                    return
            yield {"status": "parsing GGUF"}
            digest = next(iter(files.values()))
            weights = Layer(MEDIA_MODEL, digest, self.store.blob_size(digest) or 0)
            spec = derive(spec_for(name), size=weights.size)
            yield {"status": f"using existing layer {weights.digest}"}
        else:
            yield Failure("neither 'from' or 'files' was specified", 400)
            return
        spec = _overrides(spec, body)
        layers, digest = build_layers(name, spec, weights)
        known = {layer.digest for layer in base.layers} if base else set()
        for layer in layers[1:]:
            verb = "using existing" if layer.digest in known else "creating new"
            yield {"status": f"{verb} layer {layer.digest}"}
        yield {"status": "writing manifest"}
        self.store.install(name, spec, layers=layers, digest=digest)
        yield {"status": "success"}

    # --- handlers -------------------------------------------------------------------------

    async def pull(self, request: web.Request) -> web.StreamResponse:
        """POST /api/pull."""
        body = await decode_native(request, schemas.PULL)
        if isinstance(body, web.Response):
            return body
        name = parse_name(text(body, "model") or text(body, "name"))
        if name is None:
            return native_error(400, "invalid model name")
        return await self._respond(
            request, body.get("stream") is not False, self._pull_events(name)
        )

    async def push(self, request: web.Request) -> web.StreamResponse:
        """POST /api/push."""
        body = await decode_native(request, schemas.PUSH)
        if isinstance(body, web.Response):
            return body
        name = required_name(body)
        if isinstance(name, web.Response):
            return name
        return await self._respond(
            request, body.get("stream") is not False, self._push_events(name)
        )

    async def create(self, request: web.Request) -> web.StreamResponse:
        """POST /api/create (the from/files form of Ollama 0.5 and later)."""
        body = await decode_native(request, schemas.CREATE)
        if isinstance(body, web.Response):
            return body
        if body.get("adapters"):
            return native_error(400, "LoRA adapters are no longer supported")
        name = parse_name(text(body, "model") or text(body, "name"))
        if name is None:
            return native_error(400, "invalid model name")
        stream = body.get("stream") is not False
        return await self._respond(request, stream, self._create_events(name, body))

    async def copy(self, request: web.Request) -> web.Response:
        """POST /api/copy."""
        body = await decode_native(request, schemas.COPY)
        if isinstance(body, web.Response):
            return body
        source, destination = text(body, "source"), text(body, "destination")
        src = parse_name(source)
        if src is None:
            return native_error(400, f"source {go_quote(source)} is invalid")
        dst = parse_name(destination)
        if dst is None:
            return native_error(400, f"destination {go_quote(destination)} is invalid")
        model = self.store.get(src)
        if model is None:
            return native_error(404, f"model {go_quote(source)} not found")
        self.store.install(dst, model.spec, layers=model.layers, digest=model.digest)
        return empty()

    async def delete(self, request: web.Request) -> web.Response:
        """DELETE /api/delete."""
        body = await decode_native(request, schemas.DELETE)
        if isinstance(body, web.Response):
            return body
        model_text = text(body, "model") or text(body, "name")
        name = parse_name(model_text)
        if name is None:
            return native_error(400, f"name {go_quote(model_text)} is invalid")
        if not self.store.remove(name):
            return native_error(404, f"model '{model_text}' not found")
        return empty()

    async def head_blob(self, request: web.Request) -> web.Response:
        """HEAD /api/blobs/:digest."""
        digest = request.match_info["digest"]
        if not _DIGEST.match(digest):
            return native_error(400, "invalid digest format")
        if not self.store.has_blob(digest):
            return native_error(404, f"blob {go_quote(digest)} not found")
        return empty()

    async def create_blob(self, request: web.Request) -> web.Response:
        """POST /api/blobs/:digest: hashed as it streams in, never held in memory."""
        digest = request.match_info["digest"]
        if not _DIGEST.match(digest):
            return native_error(400, "invalid digest format")
        if self.store.has_blob(digest):
            return empty()
        hasher, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            hasher.update(chunk)
            size += len(chunk)
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            message = f"digest mismatch, expected {go_quote(digest)}, got {go_quote(actual)}"
            return native_error(400, message)
        self.store.add_blob(digest, size)
        return empty(201)


def _overrides(spec: ModelSpec, body: dict[str, Any]) -> ModelSpec:
    """A created model's own template, system, license and parameters."""
    changes: dict[str, Any] = {}
    if template := text(body, "template"):
        changes["template"] = template
    if system := text(body, "system"):
        changes["system"] = system
    licence = body.get("license")
    if isinstance(licence, list):
        licence = "\n".join(str(item) for item in licence)
    if isinstance(licence, str) and licence:
        changes["license"] = licence
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters:
        changes["parameters"] = tuple(parameters.items())
    return derive(spec, **changes) if changes else spec
