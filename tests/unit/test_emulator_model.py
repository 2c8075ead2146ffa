"""The emulator's pure parts: names, Go-style JSON, the deterministic model, the catalogue."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ollana.emulator import DEFAULT_MODELS, ModelStore
from ollana.emulator.catalogue import build_layers, spec_for
from ollana.emulator.gojson import (
    DecodeError,
    GoType,
    MissingBody,
    decode,
    dumps,
    go_quote,
    go_time,
    parse_go_duration,
)
from ollana.emulator.guard import Guard, host_allowed
from ollana.emulator.model import DEFAULT_NUM_PREDICT, answer, embed
from ollana.emulator.names import parse_name
from ollana.emulator.schemas import CHAT, GENERATE, OPENAI_CHAT
from ollana.emulator.showinfo import option_error

# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "display"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:1b", "llama3.2:1b"),
        ("library/llama3.2", "llama3.2:latest"),
        ("registry.ollama.ai/library/llama3.2:latest", "llama3.2:latest"),
        ("user/model:v1", "user/model:v1"),
        ("example.com:5000/team/model", "example.com:5000/team/model:latest"),
        ("https://example.com/team/model:q4", "example.com/team/model:q4"),
    ],
)
def test_names_resolve_as_ollama_does(text, display):
    name = parse_name(text)
    assert name is not None and name.display == display


@pytest.mark.parametrize(
    "text", ["", ":latest", "model:", "/model", "-model", "bad name", "ns.x/model", "m:t:g!"]
)
def test_invalid_names(text):
    assert parse_name(text) is None


def test_names_compare_without_case():
    a, b = parse_name("Llama3.2"), parse_name("llama3.2:LATEST")
    assert a is not None and b is not None and a.key == b.key


# --- Go JSON ------------------------------------------------------------------------------


def test_encoding_escapes_html_and_keeps_utf8():
    assert dumps({"a": "<b>&é"}) == '{"a":"\\u003cb\\u003e\\u0026é"}'.encode()


def test_time_format_trims_fraction_zeros():
    assert go_time(1_733_011_200_500_000_000) == "2024-12-01T00:00:00.5Z"
    assert go_time(1_733_011_200_000_000_000) == "2024-12-01T00:00:00Z"
    assert go_time(1_733_011_200_000_000_123) == "2024-12-01T00:00:00.000000123Z"


def test_go_quote():
    assert go_quote('say "hi"\n') == '"say \\"hi\\"\\n"'


_GO = "json: cannot unmarshal"
_FIELD = "into Go struct field GenerateRequest"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"model":1}', f"{_GO} number {_FIELD}.model of type string"),
        (b"[1]", f"{_GO} array into Go value of type api.GenerateRequest"),
        (b'{"context":[1.5]}', f"{_GO} number 1.5 {_FIELD}.context of type int"),
        (b'{"options":[]}', f"{_GO} array {_FIELD}.options of type map[string]interface {{}}"),
        (b'{"model":"a",}', "invalid character '}' looking for beginning of object key string"),
        (b'{"model" "a"}', "invalid character '\"' after object key"),
        (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        (b'{"a":[1 2]}', "invalid character '2' after array element"),
        (b'{"a":"\\q"}', "invalid character 'q' in string escape code"),
        (b'{"a":"x', "unexpected EOF"),
        (b"NaN", "invalid character 'N' looking for beginning of value"),
        (b'{"keep_alive":"5"}', 'time: missing unit in duration "5"'),
        (b'{"keep_alive":true}', "json: unsupported type: *api.Duration"),
    ],
)
def test_decode_errors_use_gos_wording(body, message):
    with pytest.raises(DecodeError) as caught:
        decode(body, GENERATE)
    assert str(caught.value) == message


def test_decode_nested_struct_errors_name_the_inner_struct():
    with pytest.raises(DecodeError, match=r"Go struct field Message\.messages\.role of type"):
        decode(b'{"messages":[{"role":false}]}', CHAT)
    with pytest.raises(DecodeError, match=r"field StreamOptions\.stream_options\.include_usage"):
        decode(b'{"stream_options":{"include_usage":1}}', OPENAI_CHAT)


def test_decode_keeps_known_fields_matches_case_and_ignores_trailing_data():
    body = decode(b'{"Model":"m","unknown":1,"stream":null,"keep_alive":"1m30s"} junk', GENERATE)
    assert body == {"model": "m", "stream": None, "keep_alive": 90 * 10**9}
    with pytest.raises(MissingBody):
        decode(b" \r\n\t", GENERATE)


@pytest.mark.parametrize(
    ("text", "ns"),
    [("0", 0), ("300ms", 300_000_000), ("1h2m", 3_720_000_000_000), ("-1s", -(10**9))],
)
def test_go_durations(text, ns):
    assert parse_go_duration(text) == ns


@given(st.binary(max_size=200))
def test_decode_fails_only_with_go_errors(body):
    schema = GoType("struct", "api.X", fields={"a": GoType("string", "string")})
    try:
        result = decode(body, schema)
    except DecodeError as exc:
        assert str(exc)
    else:
        assert set(result) <= {"a"}


# --- the deterministic model -------------------------------------------------------------


def test_answers_are_deterministic_and_sized_by_num_predict():
    first = answer("m", "prompt", 10, None)
    assert first == answer("m", "prompt", 10, None)
    assert first.text != answer("m", "other prompt", 10, None).text
    assert first.text != answer("other model", "prompt", 10, None).text
    assert (first.eval_count, first.done_reason) == (DEFAULT_NUM_PREDICT, "stop")
    assert first.text[0].isupper() and first.text.endswith(".")
    assert answer("m", "prompt", 10, 0).eval_count == DEFAULT_NUM_PREDICT
    long = answer("m", "prompt", 10, 250)
    assert (long.eval_count, long.done_reason) == (250, "length")
    assert len(long.context()) == 10 + 250


@given(st.text(max_size=50), st.integers(min_value=1, max_value=300))
def test_every_answer_has_exactly_num_predict_tokens(prompt, count):
    result = answer("model", prompt, 1, count)
    assert result.eval_count == count
    assert all(piece and piece.isascii() for piece in result.pieces)


def test_embeddings_are_deterministic_unit_vectors():
    vector = embed("m", "text", 768)
    assert vector == embed("m", "text", 768) and vector != embed("m", "other", 768)
    assert len(vector.values) == 768
    assert math.isclose(math.fsum(v * v for v in vector.values), 1.0)
    cut = embed("m", "text", 768, truncate_to=64)
    assert len(cut.values) == 64 and math.isclose(math.fsum(v * v for v in cut.values), 1.0)
    decoded = struct.unpack("<768f", base64.b64decode(vector.base64()))
    assert decoded == pytest.approx(vector.values, abs=1e-6)
    assert all(len(n) <= 12 for n in vector.json()[1:-1].split(","))


# --- catalogue and store -----------------------------------------------------------------


@pytest.mark.parametrize("text", [*DEFAULT_MODELS, "mistral:7b", "mxbai-embed-large"])
def test_layers_add_up_to_the_listed_size(text):
    name = parse_name(text)
    assert name is not None
    spec = spec_for(name)
    layers, digest = build_layers(name, spec)
    assert sum(layer.size for layer in layers) == spec.size
    assert len(digest) == 64 and all(layer.digest.startswith("sha256:") for layer in layers)


def test_unknown_names_get_plausible_details():
    embedder = parse_name("mxbai-embed-large")
    chatter = parse_name("qwen2.5:14b")
    assert embedder is not None and chatter is not None
    assert not spec_for(embedder).completion
    assert (spec_for(chatter).family, spec_for(chatter).parameter_size) == ("qwen2", "14.0B")


def test_store_lists_given_models_in_order_and_rejects_bad_names():
    store = ModelStore(["b", "a:1", "b:latest"])
    assert [m.name.display for m in store.models()] == ["b:latest", "a:1"]
    with pytest.raises(ValueError, match="invalid model name"):
        ModelStore(["not valid!"])


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"num_predict": 5, "temperature": 0.2, "stop": ["x"]}, ""),
        ({"num_predict": "5"}, 'option "num_predict" must be of type integer'),
        ({"temperature": True}, 'option "temperature" must be of type float32'),
        ({"stop": "x"}, 'option "stop" must be of type array'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"made_up": object()}, ""),
    ],
)
def test_option_errors(options, error):
    assert option_error(options) == error


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1:11434", True),
        ("[::1]:11434", True),
        ("localhost", True),
        ("192.168.1.9:11434", True),
        ("0.0.0.0", True),
        ("printer.local", True),
        ("api.internal:80", True),
        ("8.8.8.8", False),
        ("attacker.example", False),
        ("[::1]", False),  # Ollama splits host and port first; a bare bracketed IPv6 fails
    ],
)
def test_host_check(host, allowed):
    assert host_allowed(host, "myhost") is allowed


def test_origin_check():
    guard = Guard(["https://webui.lan"])
    allowed = ["http://localhost", "https://127.0.0.1:8080", "app://anything", "https://webui.lan"]
    allowed.append("chrome-extension://abcdef")
    assert all(guard.origin_allowed(o) for o in allowed)
    refused = ["https://evil.example", "http://localhost.evil.example", "https://webui.lan:1"]
    assert not any(guard.origin_allowed(o) for o in refused)
