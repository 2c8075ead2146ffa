"""The models the emulator knows: details, sizes, layers and digests, as Ollama reports them."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from typing import Any

from ollana.emulator.names import ModelName

__all__ = ["DEFAULT_MODELS", "Layer", "ModelSpec", "build_layers", "derive", "spec_for"]

DEFAULT_MODELS: tuple[str, ...] = ("llama3.2:latest", "qwen2.5:0.5b", "nomic-embed-text:latest")

MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_TEMPLATE = "application/vnd.ollama.image.template"
MEDIA_SYSTEM = "application/vnd.ollama.image.system"
MEDIA_LICENSE = "application/vnd.ollama.image.license"
MEDIA_PARAMS = "application/vnd.ollama.image.params"
MEDIA_CONFIG = "application/vnd.docker.container.image.v1+json"

_LLAMA_TEMPLATE = (
    "<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>"
    "{{ range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n"
    "{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n"
)
_CHATML_TEMPLATE = (
    "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
    "{{ end }}<|im_start|>assistant\n"
)
_LLAMA_STOPS = ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
_CHATML_STOPS = ("<|im_start|>", "<|im_end|>")


@dataclass(frozen=True, slots=True)
class Layer:
    """One blob of a model's manifest."""

    media_type: str
    digest: str  # "sha256:<64 hex>"
    size: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What /api/tags, /api/show and /api/ps say about a model."""

    family: str
    parameter_size: str
    quantization_level: str
    parameter_count: int
    context_length: int
    embedding_length: int
    size: int
    completion: bool = True
    template: str = _LLAMA_TEMPLATE
    stops: tuple[str, ...] = _LLAMA_STOPS
    system: str = ""
    license: str = ""
    parameters: tuple[tuple[str, Any], ...] = ()
    parent_model: str = ""
    basename: str = ""
    file_type: int = 15  # GGUF file type number of Q4_K_M
    digest: str = ""  # manifest digest (64 hex) where the real one is known

    @property
    def details(self) -> dict[str, Any]:
        """The api.ModelDetails object."""
        return {
            "parent_model": self.parent_model,
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    @property
    def all_parameters(self) -> tuple[tuple[str, Any], ...]:
        """Modelfile PARAMETER lines: the template's stop words, then the model's own."""
        return tuple(("stop", s) for s in self.stops) + self.parameters


def _known(figures: str, digest: str, **kw: Any) -> ModelSpec:
    """A spec from "family params count context embedding size" and the manifest digest."""
    family, params, count, ctx, emb, size = figures.split()
    return ModelSpec(
        family=family,
        parameter_size=params,
        quantization_level=kw.pop("quant", "Q4_K_M"),
        parameter_count=int(count),
        context_length=int(ctx),
        embedding_length=int(emb),
        size=int(size),
        digest=digest,
        **kw,
    )


# Figures as the Ollama library publishes them for these tags.
_KNOWN: dict[str, ModelSpec] = {
    "llama3.2:latest": _known(
        "llama 3.2B 3212749888 131072 3072 2019393189",
        "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        basename="Llama-3.2",
        license="LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
    ),
    "llama3.2:1b": _known(
        "llama 1.2B 1235814432 131072 2048 1321098329",
        "baf6a787fdffd633537aa2eb51cfd54cb93ff08e28040095462bb63daf552878",
        basename="Llama-3.2",
        quant="Q8_0",
        file_type=7,
        license="LLAMA 3.2 COMMUNITY LICENSE AGREEMENT",
    ),
    "llama3.1:8b": _known(
        "llama 8.0B 8030261248 131072 4096 4920753328",
        "46e0c10c039e019119339687c3c1757cc81b9da49709a3b3924863ba87ca666e",
        basename="Meta-Llama-3.1",
        license="LLAMA 3.1 COMMUNITY LICENSE AGREEMENT",
    ),
    "qwen2.5:0.5b": _known(
        "qwen2 494.03M 494032768 32768 896 397821319",
        "a8b0c51577010a279d933d14c2a8ab4b268079d44c5c8830c0a93900f1827c67",
        basename="Qwen2.5",
        template=_CHATML_TEMPLATE,
        stops=_CHATML_STOPS,
        system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
        license="Apache License Version 2.0",
    ),
    "qwen2.5:7b": _known(
        "qwen2 7.6B 7615616512 32768 3584 4683087332",
        "845dbda0ea48ed749caafd9e6037047aa19acfcfd82e704d7ca97d631a0b697e",
        basename="Qwen2.5",
        template=_CHATML_TEMPLATE,
        stops=_CHATML_STOPS,
        license="Apache License Version 2.0",
    ),
    "nomic-embed-text:latest": _known(
        "nomic-bert 137M 136727040 2048 768 274302450",
        "0a109f422b47e3a30ba2b10eca18548e944e8a23073ee3f3e947efcf3c45e59f",
        quant="F16",
        file_type=1,
        completion=False,
        template="{{ .Prompt }}",
        stops=(),
        license="Apache License Version 2.0",
        parameters=(("num_ctx", 8192),),
    ),
    "all-minilm:latest": _known(
        "bert 23M 22565376 512 384 45960996",
        "1b226e2802dbb772b5fc32a58f103ca1804ef7501331012de126ab22f67475ef",
        quant="F16",
        file_type=1,
        completion=False,
        template="{{ .Prompt }}",
        stops=(),
        license="Apache License Version 2.0",
    ),
}

_SIZE_TAG = re.compile(r"(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])", re.IGNORECASE)


def _derived(name: ModelName) -> ModelSpec:
    """Plausible details for a name the emulator has no figures for, derived from the name."""
    lowered = f"{name.model}:{name.tag}".casefold()
    embedding_only = any(w in lowered for w in ("embed", "minilm", "bge"))
    match = _SIZE_TAG.search(name.tag) or _SIZE_TAG.search(name.model)
    if match:
        scale = 1e9 if match.group(2).lower() == "b" else 1e6
        count = int(float(match.group(1)) * scale)
    else:
        count = 137_000_000 if embedding_only else 3_000_000_000
    label = f"{count / 1e9:.1f}B" if count >= 1e9 else f"{count / 1e6:.0f}M"
    families = (("qwen", "qwen2"), ("gemma", "gemma2"), ("phi", "phi3"), ("mistral", "llama"))
    family = next((fam for prefix, fam in families if name.model.startswith(prefix)), "llama")
    chatml = family == "qwen2"
    if embedding_only:
        family = "bert"
    width = 768 if embedding_only else (896 if count < 1e9 else 3072 if count < 5e9 else 4096)
    quant = "F16" if embedding_only else "Q4_K_M"
    stops: tuple[str, ...] = _CHATML_STOPS if chatml else _LLAMA_STOPS
    template = _CHATML_TEMPLATE if chatml else _LLAMA_TEMPLATE
    if embedding_only:
        template, stops = "{{ .Prompt }}", ()
    return ModelSpec(
        family=family,
        parameter_size=label,
        quantization_level=quant,
        parameter_count=count,
        context_length=8192 if embedding_only else 32768,
        embedding_length=width,
        size=count * 2 if embedding_only else int(count * 0.6),
        completion=not embedding_only,
        template=template,
        stops=stops,
        file_type=1 if embedding_only else 15,
    )


def spec_for(name: ModelName) -> ModelSpec:
    """The details of a model as the registry would serve it."""
    return _KNOWN.get(name.display.casefold()) or _derived(name)


def _digest(*parts: object) -> str:
    return hashlib.sha256("\x00".join(map(str, parts)).encode()).hexdigest()


def build_layers(
    name: ModelName, spec: ModelSpec, weights: Layer | None = None
) -> tuple[tuple[Layer, ...], str]:
    """A model's manifest layers and manifest digest; without `weights`, sizes add to spec.size."""
    small: list[Layer] = []
    for media, text in (
        (MEDIA_TEMPLATE, spec.template),
        (MEDIA_SYSTEM, spec.system),
        (MEDIA_LICENSE, spec.license),
        (MEDIA_PARAMS, repr(spec.all_parameters) if spec.all_parameters else ""),
    ):
        if text:
            small.append(Layer(media, "sha256:" + _digest(media, text), len(text.encode())))
    config = Layer(MEDIA_CONFIG, "sha256:" + _digest("config", name.key, spec), 487)
    if weights is None:
        rest = max(1, spec.size - sum(layer.size for layer in small) - config.size)
        weights = Layer(MEDIA_MODEL, "sha256:" + _digest("weights", name.key, rest), rest)
    layers = (weights, *small, config)
    manifest = spec.digest or _digest("manifest", *(layer.digest for layer in layers))
    return layers, manifest


def derive(base: ModelSpec, **changes: Any) -> ModelSpec:
    """A model made from another: its own manifest, the base's details unless changed."""
    return replace(base, digest="", **changes)
