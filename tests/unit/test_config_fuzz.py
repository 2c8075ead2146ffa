"""Settings from hostile input: any environment and any config file give Settings or ConfigError.

The values come from people and from scripts: a typo, a unit nobody expected, a file that
is not TOML at all. None of that may end in a traceback; and whatever load_settings
accepts must be a value the limits can use (finite, not negative).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ollana.config import ConfigError, Limits, Settings, Timings, load_settings

SETTING_KEYS = [f.name for f in dataclasses.fields(Settings) if f.name not in ("limits", "timings")]
LIMIT_KEYS = [f.name for f in dataclasses.fields(Limits)]
TIMING_KEYS = [f.name for f in dataclasses.fields(Timings)]
ENV_NAMES = [
    *(f"OLLANA_{k.upper()}" for k in SETTING_KEYS),
    *(f"OLLANA_LIMITS_{k.upper()}" for k in LIMIT_KEYS),
    *(f"OLLANA_TIMINGS_{k.upper()}" for k in TIMING_KEYS),
    "OLLAMA_HOST", "OLLAMA_ORIGINS", "OLLANA_LOG", "RUST_LOG",
]  # fmt: skip

# Words that parsers treat specially, mixed into random text so that they are reached.
SPECIAL = st.sampled_from([
    "", " ", "0", "-1", "1e400", "-1e400", "inf", "-inf", "nan", "NaN", "infk", "1e400k", "1e30G",
    "16M", "1.5k", "0x10", "0b1", "1_000", "9" * 5000, "true", "off", "none", "::", "[::1]:0",
    ":99999", "host:port", "a@b", "h:1@x", "~", "~nosuchuser", "~nosuchuser/x", "\x00", "\udcff",
    "٣", "1s", "10ss", "debug", "json",
])  # fmt: skip
TEXT = st.one_of(SPECIAL, st.text(max_size=30), st.builds("".join, st.lists(SPECIAL, max_size=3)))

scalars = st.one_of(
    TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(timezones=st.none() | st.just(datetime.UTC)),
    st.dates(),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


def toml_key(key: str) -> str:
    return (
        key
        if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii()
        else (json.dumps(key))
    )


def toml_value(value: object) -> str:
    """A TOML rendering of a value; strings as JSON (whose escapes TOML shares)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int | datetime.date):
        return value.isoformat() if isinstance(value, datetime.date) else str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(top: Mapping[str, object], tables: Mapping[str, Mapping[str, object]]) -> str:
    lines = [f"{toml_key(k)} = {toml_value(v)}" for k, v in top.items()]
    for name, table in tables.items():
        lines.append(f"[{toml_key(name)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


known_or_not = st.one_of(st.sampled_from(SETTING_KEYS), TEXT)
documents = st.builds(
    toml_document,
    st.dictionaries(known_or_not, values, max_size=4),
    st.dictionaries(
        st.sampled_from(["limits", "timings"]) | TEXT,
        st.dictionaries(st.sampled_from(LIMIT_KEYS + TIMING_KEYS) | TEXT, values, max_size=4),
        max_size=2,
    ),
)
environments = st.dictionaries(st.sampled_from(ENV_NAMES), TEXT, max_size=6)


def load(env: Mapping[str, str], text: str | bytes | None) -> Settings | None:
    """load_settings on this env and config file text; None where it said ConfigError."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        if isinstance(text, bytes):
            config.write_bytes(text)
        elif text is not None:
            config.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            return load_settings({}, {"OLLANA_HOME": tmp, **env}, config)
        except ConfigError as exc:
            assert str(exc)
            return None


def assert_usable(s: Settings) -> None:
    """What the running parts assume of the limits and timings they are given."""
    for group in (s.limits, s.timings):
        for f in dataclasses.fields(group):
            value = getattr(group, f.name)
            assert isinstance(value, int | float), (f.name, value)
            assert math.isfinite(value) and value >= 0, (f.name, value)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(environments)
@example({"OLLANA_RETRY_BUFFER": "1e400"})
@example({"OLLANA_LIMITS_ROUTE_BODY_CAP": "infk"})
@example({"OLLANA_LIMITS_HEADER_TIMEOUT": "nan"})
@example({"OLLANA_LIMITS_STREAM_IDLE_TIMEOUT": "inf"})
@example({"OLLANA_LOG_FILE": "~nosuchuser/ollana.log"})
@example({"OLLANA_HOME": "~nosuchuser"})
def test_any_environment_gives_settings_or_a_config_error(env: dict[str, str]) -> None:
    s = load(env, None)
    if s is not None:
        assert_usable(s)


@FUZZ
@given(documents)
@example('[limits]\nheader_timeout = nan\nmax_connections = "1e400"\n')
@example("retry_buffer = 1e400\n")
@example('pid_file = "~nosuchuser/x.pid"\n')
def test_any_config_file_gives_settings_or_a_config_error(text: str) -> None:
    s = load({}, text)
    if s is not None:
        assert_usable(s)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
@example(b"\xff\xfe not utf-8")
@example("[limits\n")
@example("a = " + "[" * 2000 + "]" * 2000)
@example("a = " + "{b = " * 2000 + "1" + "}" * 2000)
@example("limits = 3\n")
@example("[limits.deeper]\nx = 1\n")
def test_any_bytes_as_a_config_file_give_settings_or_a_config_error(data: str | bytes) -> None:
    s = load({}, data)
    if s is not None:
        assert_usable(s)


def test_a_config_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('grace = 3\n[limits]\nheader_timeout = "soon"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings({}, {"OLLANA_HOME": str(tmp_path)}, config)
    message = str(caught.value)
    assert str(config) in message and "line 3" in message and "header_timeout" in message


@pytest.mark.parametrize(
    ("name", "value", "field", "expected"),
    [
        ("OLLANA_LIMITS_HEADER_TIMEOUT", "2.5s", "header_timeout", 2.5),
        ("OLLANA_LIMITS_MAX_HEADER_SIZE", "32k", "max_header_size", 32 * 1024),
        ("OLLANA_LIMITS_MAX_CONNECTIONS", "0", "max_connections", 0),
        ("OLLANA_LIMITS_DATAGRAM_RATE", "0", "datagram_rate", 0.0),
        ("OLLANA_LIMITS_ROUTE_BODY_CAP", "4M", "route_body_cap", 4 * 1024 * 1024),
    ],
)
def test_every_limit_has_an_environment_name(
    tmp_path: Path, name: str, value: str, field: str, expected: float
) -> None:
    s = load_settings({}, {"OLLANA_HOME": str(tmp_path), name: value}, tmp_path / "none.toml")
    assert getattr(s.limits, field) == expected


@pytest.mark.parametrize("value", ["inf", "nan", "-1", "1e400", "soon"])
def test_a_limit_that_is_not_a_finite_number_is_refused(tmp_path: Path, value: str) -> None:
    env = {"OLLANA_HOME": str(tmp_path), "OLLANA_LIMITS_HEADER_TIMEOUT": value}
    with pytest.raises(ConfigError, match="OLLANA_LIMITS_HEADER_TIMEOUT"):
        load_settings({}, env, tmp_path / "none.toml")
