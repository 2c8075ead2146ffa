"""What an emulator holds between requests: installed models, blobs, loaded models, counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ollana.emulator.catalogue import Layer, ModelSpec, build_layers, spec_for
from ollana.emulator.gojson import go_time
from ollana.emulator.names import ModelName, parse_name
from ollana.ollama_api import is_cloud_model

__all__ = ["CLOUD_HOST", "DEFAULT_KEEP_ALIVE_NS", "EmulatorStats", "InstalledModel", "ModelStore"]

DEFAULT_KEEP_ALIVE_NS = 5 * 60 * 10**9  # Ollama keeps a model loaded 5 minutes by default
_DEFAULT_MODIFIED_NS = 1_733_011_200 * 10**9  # 2024-12-01T00:00:00Z: listed models stay put
_LOADED_OVERHEAD = 1.25  # a loaded model also holds its context: /api/ps shows more than /api/tags


CLOUD_HOST = "https://ollama.com:443"


@dataclass(frozen=True, slots=True)
class InstalledModel:
    """A model in the local store, with its manifest."""

    name: ModelName
    spec: ModelSpec
    layers: tuple[Layer, ...]
    digest: str
    modified_ns: int

    @property
    def size(self) -> int:
        """Bytes on disk: all of its layers."""
        return sum(layer.size for layer in self.layers)

    def tags_entry(self) -> dict[str, Any]:
        """Its api.ListModelResponse."""
        display = self.name.display
        entry: dict[str, Any] = {"name": display, "model": display}
        if is_cloud_model(display):
            # A cloud model is a stub that names where it runs.
            base, _, tag = display.rpartition(":")
            remote = base if tag == "cloud" else f"{base}:{tag.removesuffix('-cloud')}"
            entry["remote_model"] = remote
            entry["remote_host"] = CLOUD_HOST
        entry |= {
            "modified_at": go_time(self.modified_ns),
            "size": self.size,
            "digest": self.digest,
            "details": self.spec.details,
            "capabilities": ["completion"] if self.spec.completion else ["embedding"],
        }
        return entry


class ModelStore:
    """The installed models and uploaded blobs; Ollama's ~/.ollama/models, in memory."""

    def __init__(self, names: Iterable[str]) -> None:
        self._models: dict[str, InstalledModel] = {}
        self._blobs: dict[str, int] = {}
        self._loaded: dict[str, tuple[InstalledModel, int]] = {}
        # Called after a model is installed or removed (EmulatorStats.notify in an app).
        self.on_change: Callable[[], None] | None = None
        # Given models are listed newest first in the order given, as if pulled in reverse.
        for age, text in enumerate(names):
            name = parse_name(text)
            if name is None:
                raise ValueError(f"invalid model name {text!r}")
            if name.key not in self._models:
                self.install(name, spec_for(name), modified_ns=_DEFAULT_MODIFIED_NS - age * 10**9)

    def get(self, name: ModelName) -> InstalledModel | None:
        """The installed model of that name, if any."""
        return self._models.get(name.key)

    def models(self) -> list[InstalledModel]:
        """Installed models, most recently modified first (as /api/tags sorts them)."""
        return sorted(self._models.values(), key=lambda m: m.modified_ns, reverse=True)

    def install(
        self,
        name: ModelName,
        spec: ModelSpec,
        *,
        layers: tuple[Layer, ...] | None = None,
        digest: str = "",
        modified_ns: int | None = None,
    ) -> InstalledModel:
        """Add or replace a model; its blobs become present."""
        if layers is None:
            layers, digest = build_layers(name, spec)
        existing = self._models.get(name.key)
        model = InstalledModel(
            existing.name if existing else name,  # Ollama keeps the casing it first saw
            spec,
            layers,
            digest,
            time.time_ns() if modified_ns is None else modified_ns,
        )
        self._models[name.key] = model
        for layer in layers:
            self._blobs[_blob_key(layer.digest)] = layer.size
        self._changed()
        return model

    def remove(self, name: ModelName) -> bool:
        """Delete a model; False if it was not installed."""
        self._loaded.pop(name.key, None)
        if self._models.pop(name.key, None) is None:
            return False
        self._changed()
        return True

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # --- blobs ------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        """Whether a blob (sha256:… or sha256-…) is present."""
        return _blob_key(digest) in self._blobs

    def add_blob(self, digest: str, size: int) -> None:
        """Record an uploaded blob."""
        self._blobs[_blob_key(digest)] = size

    def blob_size(self, digest: str) -> int | None:
        """The size of a present blob."""
        return self._blobs.get(_blob_key(digest))

    # --- loaded models (/api/ps) --------------------------------------------------------

    def touch(self, model: InstalledModel, keep_alive_ns: int | None) -> None:
        """A request used the model: it stays loaded for keep_alive (0 unloads it)."""
        keep = DEFAULT_KEEP_ALIVE_NS if keep_alive_ns is None else keep_alive_ns
        if keep == 0:
            self._loaded.pop(model.name.key, None)
            return
        expires = time.time_ns() + min(keep, 300 * 365 * 86400 * 10**9)
        self._loaded[model.name.key] = (model, expires)

    def loaded(self) -> list[dict[str, Any]]:
        """The api.ProcessModelResponse list, longest remaining first."""
        now = time.time_ns()
        for key in [k for k, (_, exp) in self._loaded.items() if exp <= now]:
            del self._loaded[key]
        entries = sorted(self._loaded.values(), key=lambda item: item[1], reverse=True)
        out = []
        for model, expires in entries:
            memory = int(model.size * _LOADED_OVERHEAD)
            display = model.name.display
            out.append(
                {
                    "name": display,
                    "model": display,
                    "size": memory,
                    "digest": model.digest,
                    "details": model.spec.details,
                    "expires_at": go_time(expires),
                    "size_vram": memory,
                }
            )
        return out


def _blob_key(digest: str) -> str:
    # Ollama stores blob sha256:x as the file sha256-x: both spellings name one blob.
    return digest.replace(":", "-", 1)


class EmulatorStats:
    """What tests observe: generations started, finished, cancelled; the installed models."""

    __slots__ = ("_changed", "_store", "cancelled", "finished", "started")

    def __init__(self, store: ModelStore) -> None:
        self.started = 0
        self.finished = 0
        self.cancelled = 0  # the client went away before the answer was complete
        self._store = store
        self._changed: asyncio.Event | None = None

    @property
    def installed(self) -> frozenset[str]:
        """Names of the installed models, as /api/tags lists them."""
        return frozenset(m.name.display for m in self._store.models())

    def notify(self) -> None:
        """Wake whoever waits for a change."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    def begin(self) -> None:
        """A generation started."""
        self.started += 1
        self.notify()

    def finish(self) -> None:
        """A generation delivered its last token."""
        self.finished += 1
        self.notify()

    def cancel(self) -> None:
        """A generation stopped because its client went away."""
        self.cancelled += 1
        self.notify()

    async def wait_for(self, predicate: Callable[[EmulatorStats], bool]) -> None:
        """Return once `predicate(self)` holds; it is checked after every change."""
        while not predicate(self):
            if self._changed is None:
                self._changed = asyncio.Event()
            await self._changed.wait()
