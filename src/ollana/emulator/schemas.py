"""The Go structs Ollama decodes request bodies into: field names and types, nothing more."""

from __future__ import annotations

from ollana.emulator.gojson import GoType

__all__ = [
    "CHAT",
    "COPY",
    "CREATE",
    "DELETE",
    "EMBED",
    "EMBEDDINGS",
    "GENERATE",
    "OPENAI_CHAT",
    "OPENAI_COMPLETION",
    "OPENAI_EMBED",
    "PULL",
    "PUSH",
    "SHOW",
]

_STR = GoType("string", "string")
_BOOL = GoType("bool", "bool")
_INT = GoType("int", "int")
_F64 = GoType("float", "float64")
_F32 = GoType("float", "float32")
_ANY = GoType("any", "interface {}")
_DURATION = GoType("duration", "*api.Duration")
_OPTIONS = GoType("map", "map[string]interface {}", _ANY)
_IMAGES = GoType("list", "[]api.ImageData", GoType("string", "api.ImageData"))
_MESSAGE = GoType(
    "struct",
    "api.Message",
    fields={"role": _STR, "content": _STR, "images": _IMAGES, "tool_calls": _ANY},
)


def _struct(type_name: str, /, **fields: GoType) -> GoType:
    return GoType("struct", type_name, fields=fields)


GENERATE = _struct(
    "api.GenerateRequest",
    model=_STR,
    prompt=_STR,
    suffix=_STR,
    system=_STR,
    template=_STR,
    context=GoType("list", "[]int", _INT),
    stream=_BOOL,
    raw=_BOOL,
    format=_ANY,
    keep_alive=_DURATION,
    images=_IMAGES,
    options=_OPTIONS,
)
CHAT = _struct(
    "api.ChatRequest",
    model=_STR,
    messages=GoType("list", "[]api.Message", _MESSAGE),
    stream=_BOOL,
    format=_ANY,
    keep_alive=_DURATION,
    tools=_ANY,
    options=_OPTIONS,
)
EMBED = _struct(
    "api.EmbedRequest",
    model=_STR,
    input=_ANY,
    keep_alive=_DURATION,
    truncate=_BOOL,
    dimensions=_INT,
    options=_OPTIONS,
)
EMBEDDINGS = _struct(
    "api.EmbeddingRequest", model=_STR, prompt=_STR, keep_alive=_DURATION, options=_OPTIONS
)
SHOW = _struct(
    "api.ShowRequest",
    model=_STR,
    system=_STR,
    template=_STR,
    verbose=_BOOL,
    options=_OPTIONS,
    name=_STR,
)
_PROGRESS = {"model": _STR, "insecure": _BOOL, "stream": _BOOL, "name": _STR}
PULL = _struct("api.PullRequest", username=_STR, password=_STR, **_PROGRESS)
PUSH = _struct("api.PushRequest", username=_STR, password=_STR, **_PROGRESS)
CREATE = _struct(
    "api.CreateRequest",
    model=_STR,
    stream=_BOOL,
    quantize=_STR,
    name=_STR,
    quantization=_STR,
    **{"from": _STR},
    files=GoType("map", "map[string]string", _STR),
    adapters=GoType("map", "map[string]string", _STR),
    template=_STR,
    license=_ANY,
    system=_STR,
    parameters=_OPTIONS,
    messages=GoType("list", "[]api.Message", _MESSAGE),
)
DELETE = _struct("api.DeleteRequest", model=_STR, name=_STR)
COPY = _struct("api.CopyRequest", source=_STR, destination=_STR)

_STREAM_OPTIONS = _struct("openai.StreamOptions", include_usage=_BOOL)
_OPENAI_MESSAGE = _struct(
    "openai.Message",
    role=_STR,
    content=_ANY,
    tool_calls=_ANY,
    name=_STR,
    tool_call_id=_STR,
)
OPENAI_CHAT = _struct(
    "openai.ChatCompletionRequest",
    model=_STR,
    messages=GoType("list", "[]openai.Message", _OPENAI_MESSAGE),
    stream=_BOOL,
    stream_options=_STREAM_OPTIONS,
    max_tokens=_INT,
    seed=_INT,
    stop=_ANY,
    temperature=_F64,
    frequency_penalty=_F64,
    presence_penalty=_F64,
    top_p=_F64,
    response_format=_ANY,
    tools=_ANY,
)
OPENAI_COMPLETION = _struct(
    "openai.CompletionRequest",
    model=_STR,
    prompt=_STR,
    frequency_penalty=_F32,
    max_tokens=_INT,
    presence_penalty=_F32,
    seed=_INT,
    stop=_ANY,
    stream=_BOOL,
    stream_options=_STREAM_OPTIONS,
    temperature=_F32,
    top_p=_F32,
    suffix=_STR,
)
OPENAI_EMBED = _struct(
    "openai.EmbedRequest", input=_ANY, model=_STR, dimensions=_INT, encoding_format=_STR
)
