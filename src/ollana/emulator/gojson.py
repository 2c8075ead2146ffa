"""JSON as Ollama's Go server writes and reads it: encoding/json output, its error wording."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DecodeError",
    "GoType",
    "MissingBody",
    "decode",
    "dumps",
    "go_quote",
    "go_time",
    "go_time_now",
]

# encoding/json escapes these so that JSON can be embedded in HTML.
_HTML_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)
_HTML_CHARS = frozenset("<>&\u2028\u2029")


def dumps(value: Any) -> bytes:
    """Encode as Go's json.Marshal does: compact, HTML-safe, UTF-8 kept as is."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if not _HTML_CHARS.isdisjoint(text):
        text = text.translate(_HTML_ESCAPES)
    return text.encode("utf-8", "replace")


_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_QUOTE_ESCAPES |= {"\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(text: str) -> str:
    """Go's %q of a string (strconv.Quote), as Ollama's error messages use it."""
    out = []
    for ch in text:
        if ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    return '"' + "".join(out) + '"'


def _go_char(ch: str) -> str:
    """encoding/json's quoteChar: how a syntax error names the offending character."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    return "'" + go_quote(ch)[1:-1] + "'"


_second_cache: list[tuple[int, str]] = [(-1, "")]  # formatting a second once is enough


def go_time(ns: int) -> str:
    """A UTC time.Time as Go marshals it (RFC 3339 with trailing zeros of the fraction cut)."""
    sec, frac = divmod(ns, 1_000_000_000)
    cached_sec, base = _second_cache[0]
    if cached_sec != sec:
        base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _second_cache[0] = (sec, base)
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def go_time_now() -> str:
    """The current time as Go marshals time.Now().UTC()."""
    return go_time(time.time_ns())


# --- decoding ---------------------------------------------------------------------------


class DecodeError(ValueError):
    """A request body Go's decoder would refuse; the message is Go's."""


class MissingBody(DecodeError):
    """An empty body: Go's decoder returns io.EOF, Ollama answers "missing request body"."""

    def __init__(self) -> None:
        super().__init__("EOF")


@dataclass(frozen=True, slots=True)
class GoType:
    """The Go type a JSON value is decoded into, enough to reproduce Go's type errors."""

    kind: str  # string bool int float any list map struct duration
    name: str  # the Go type's name as error messages print it
    elem: GoType | None = None
    fields: dict[str, GoType] = field(default_factory=dict)
    folded: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", {k.casefold(): k for k in self.fields})

    def field_name(self, key: str) -> str | None:
        """The struct field a JSON key lands in: exact match first, then case-insensitive."""
        if key in self.fields:
            return key
        return self.folded.get(key.casefold())


def _reject_constant(name: str) -> Any:
    raise _ConstantError(name)


class _ConstantError(ValueError):
    pass


_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def decode(body: bytes, schema: GoType) -> dict[str, Any]:
    """Decode a request body into the fields of a Go struct; unknown keys are dropped."""
    text = body.decode("utf-8", "replace").lstrip(" \t\r\n")
    if not text:
        raise MissingBody
    try:
        # Go's Decoder reads one value and ignores whatever follows it.
        value, _ = _DECODER.raw_decode(text)
    except _ConstantError as exc:
        first = _go_char(str(exc)[0])
        raise DecodeError(f"invalid character {first} looking for beginning of value") from None
    except json.JSONDecodeError as exc:
        raise DecodeError(_syntax_message(text, exc)) from None
    if value is None:
        return {}
    checked = _check(value, schema, schema.name.rpartition(".")[2], [])
    assert isinstance(checked, dict)
    return checked


def _syntax_message(text: str, exc: json.JSONDecodeError) -> str:
    pos = exc.pos
    if pos >= len(text) or exc.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    ch = text[pos]
    if exc.msg.startswith("Expecting property name"):
        return f"invalid character {_go_char(ch)} looking for beginning of object key string"
    if exc.msg.startswith("Expecting ':'"):
        return f"invalid character {_go_char(ch)} after object key"
    if exc.msg.startswith("Expecting ','"):
        where = "object key:value pair" if _innermost(text, pos) == "{" else "array element"
        return f"invalid character {_go_char(ch)} after {where}"
    if exc.msg.startswith("Invalid control character"):
        return f"invalid character {_go_char(ch)} in string literal"
    if exc.msg.startswith("Invalid \\"):
        escaped = text[pos + 1] if pos + 1 < len(text) else ""
        if not escaped:
            return "unexpected EOF"
        return f"invalid character {_go_char(escaped)} in string escape code"
    return f"invalid character {_go_char(ch)} looking for beginning of value"


def _innermost(text: str, end: int) -> str:
    """The bracket of the innermost container open at `end`."""
    stack: list[str] = []
    in_string = escaped = False
    for ch in text[:end]:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _json_kind(value: Any) -> str:
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_error(
    value: Any, target: GoType, struct: str, path: list[str], kind: str = ""
) -> DecodeError:
    kind = kind or _json_kind(value)
    where = f"Go struct field {struct}.{'.'.join(path)}" if path else "Go value"
    return DecodeError(f"json: cannot unmarshal {kind} into {where} of type {target.name}")


def _check(value: Any, t: GoType, struct: str, path: list[str]) -> Any:
    kind = t.kind
    if kind == "any" or value is None:
        return value
    if kind == "string":
        if isinstance(value, str):
            return value
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float):
            raise _type_error(value, t, struct, path, f"number {value!r}")
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif kind == "duration":
        return _duration(value)
    elif kind == "list":
        if isinstance(value, list):
            assert t.elem is not None
            return [_check(v, t.elem, struct, path) for v in value]
    elif kind == "map":
        if isinstance(value, dict):
            assert t.elem is not None
            return {k: _check(v, t.elem, struct, path) for k, v in value.items()}
    elif kind == "struct" and isinstance(value, dict):
        inner = t.name.rpartition(".")[2]
        out: dict[str, Any] = {}
        for key, item in value.items():
            name = t.field_name(key)
            if name is not None:
                out[name] = _check(item, t.fields[name], inner, [*path, name])
        return out
    raise _type_error(value, t, struct, path)


# --- Ollama's api.Duration: seconds as a number, or a Go duration string ---------------

_UNITS_NS = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 10**9}
_UNITS_NS |= {"m": 60 * 10**9, "h": 3600 * 10**9}
FOREVER_NS = 2**63 - 1


def _duration(value: Any) -> int:
    """Nanoseconds of a keep_alive value, as api.Duration.UnmarshalJSON reads it."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return FOREVER_NS if value < 0 else int(value) * 10**9
    if isinstance(value, str):
        ns = parse_go_duration(value)
        return FOREVER_NS if ns < 0 else ns
    raise DecodeError("json: unsupported type: *api.Duration")


def parse_go_duration(text: str) -> int:
    """time.ParseDuration: "300ms", "-1.5h", "2h45m"; raises DecodeError with Go's wording."""
    quoted = go_quote(text)
    s, sign = text, 1
    if s[:1] in "+-":
        sign = -1 if s[0] == "-" else 1
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise DecodeError(f"time: invalid duration {quoted}")
    total = 0.0
    while s:
        i = 0
        while i < len(s) and (s[i].isdigit() or s[i] == "."):
            i += 1
        number, s = s[:i], s[i:]
        if not number or number == "." or number.count(".") > 1:
            raise DecodeError(f"time: invalid duration {quoted}")
        j = 0
        while j < len(s) and not (s[j].isdigit() or s[j] == "."):
            j += 1
        unit, s = s[:j], s[j:]
        if not unit:
            raise DecodeError(f"time: missing unit in duration {quoted}")
        if unit not in _UNITS_NS:
            raise DecodeError(f"time: unknown unit {go_quote(unit)} in duration {quoted}")
        total += float(number) * _UNITS_NS[unit]
    return sign * int(total)
