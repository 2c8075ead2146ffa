"""Settings precedence, parsing and errors; OLLAMA_HOST exactly as Ollama parses it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ollana.config import (
    ConfigError,
    DeviceRule,
    HostPort,
    Settings,
    StaticServer,
    load_settings,
    ollama_host,
    parse_host_port,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "http://127.0.0.1:11434"),
        ("", "http://127.0.0.1:11434"),
        ("   ", "http://127.0.0.1:11434"),
        ('"1.2.3.4"', "http://1.2.3.4:11434"),
        ("'1.2.3.4:5678'", "http://1.2.3.4:5678"),
        ("  example.com  ", "http://example.com:11434"),
        ("example.com:56789", "http://example.com:56789"),
        ("1.2.3.4", "http://1.2.3.4:11434"),
        ("1.2.3.4:56789", "http://1.2.3.4:56789"),
        ("http://1.2.3.4", "http://1.2.3.4:80"),
        ("https://1.2.3.4", "https://1.2.3.4:443"),
        ("http://1.2.3.4:56789", "http://1.2.3.4:56789"),
        ("https://1.2.3.4:56789/", "https://1.2.3.4:56789"),
        ("http://example.com/ollama", "http://example.com:80/ollama"),
        ("example.com/path/deeper", "http://example.com:11434/path/deeper"),
        (":56789", "http://:56789"),
        ("0.0.0.0", "http://0.0.0.0:11434"),
        ("::1", "http://[::1]:11434"),
        ("[::1]", "http://[::1]:11434"),
        ("[::1]:56789", "http://[::1]:56789"),
        ("fd00::1", "http://[fd00::1]:11434"),
        ("tcp://1.2.3.4:56789", "tcp://1.2.3.4:56789"),
    ],
)
def test_ollama_host_forms(raw: str | None, expected: str) -> None:
    assert ollama_host(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1.2.3.4:99999", "http://1.2.3.4:11434"),
        ("1.2.3.4:-1", "http://1.2.3.4:11434"),
        ("1.2.3.4:port", "http://1.2.3.4:11434"),
        ("https://1.2.3.4:70000", "https://1.2.3.4:443"),
    ],
)
def test_ollama_host_bad_port_falls_back_with_warning(raw: str, expected: str) -> None:
    warnings: list[str] = []
    assert ollama_host(raw, warnings.append) == expected
    assert len(warnings) == 1
    assert "invalid port" in warnings[0]


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, env={"OLLANA_HOME": str(tmp_path)})
    assert settings.home == tmp_path
    assert settings.ollama == "http://127.0.0.1:11434"
    assert settings.listen_address(server_mode=True) == HostPort("0.0.0.0", 11435)
    assert settings.listen_address(server_mode=False) == HostPort("127.0.0.1", 11434)
    assert settings.admin_listen == HostPort("127.0.0.1", 11437)
    assert settings.discovery_port == 11436
    assert settings.retry_buffer == 16 * 1024 * 1024


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'listen = "10.0.0.1:1"\ngrace = 7\npriority = 3\n[timings]\nprobe-interval = 0.5\n'
    )
    env = {"OLLANA_HOME": str(tmp_path), "OLLANA_LISTEN": "10.0.0.2:2", "OLLANA_GRACE": "8"}
    settings = load_settings({"listen": "10.0.0.3:3"}, env=env)
    assert settings.listen == HostPort("10.0.0.3", 3)
    assert settings.grace == 8.0
    assert settings.priority == 3
    assert settings.timings.probe_interval == 0.5
    assert load_settings({}, env=env).listen == HostPort("10.0.0.2", 2)


def test_ollama_host_env_and_aliases(tmp_path: Path) -> None:
    env = {
        "OLLANA_HOME": str(tmp_path),
        "OLLAMA_HOST": "0.0.0.0:9999",
        "RUST_LOG": "hyper=warn,ollana=debug",
    }
    settings = load_settings({}, env=env)
    assert settings.ollama == "http://0.0.0.0:9999"
    assert settings.log_level == "debug"
    env["OLLANA_LOG"] = "error"
    assert load_settings({}, env=env).log_level == "error"


def test_static_servers_with_priority(tmp_path: Path) -> None:
    settings = load_settings(
        {"servers": ("gpu.lan:11435@10", "10.0.0.5", "[fd00::2]:1@-1")},
        env={"OLLANA_HOME": str(tmp_path)},
    )
    assert settings.servers == (
        StaticServer(HostPort("gpu.lan", 11435), 10),
        StaticServer(HostPort("10.0.0.5", 11435), 0),
        StaticServer(HostPort("fd00::2", 1), -1),
    )


def test_admin_listen_off(tmp_path: Path) -> None:
    settings = load_settings({"admin_listen": "off"}, env={"OLLANA_HOME": str(tmp_path)})
    assert settings.admin_listen is None


def test_error_names_setting_and_source(tmp_path: Path) -> None:
    env = {"OLLANA_HOME": str(tmp_path), "OLLANA_DISCOVERY_PORT": "eleven"}
    with pytest.raises(ConfigError, match=r"discovery_port.*OLLANA_DISCOVERY_PORT"):
        load_settings({}, env=env)
    with pytest.raises(ConfigError, match=r"'listen' from --listen.*out of range"):
        load_settings({"listen": "1.2.3.4:70000"}, env={"OLLANA_HOME": str(tmp_path)})


def test_broken_toml_names_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('grace = 1\nlisten = "unterminated\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, env={"OLLANA_HOME": str(tmp_path)})
    assert str(config) in str(info.value)
    assert "line 2" in str(info.value)


def test_bad_value_in_file_names_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("\n\ngrace = true\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, env={"OLLANA_HOME": str(tmp_path)})
    assert str(config) in str(info.value)
    assert "grace" in str(info.value)
    assert "line 3" in str(info.value)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("lisen = 1\n")
    with pytest.raises(ConfigError, match="unknown setting 'lisen'"):
        load_settings({}, env={"OLLANA_HOME": str(tmp_path)})


def test_sizes_and_durations(tmp_path: Path) -> None:
    env = {
        "OLLANA_HOME": str(tmp_path),
        "OLLANA_RETRY_BUFFER": "1.5M",
        "OLLANA_WAIT_FOR_SERVER": "2.5s",
    }
    settings = load_settings({}, env=env)
    assert settings.retry_buffer == 1572864
    assert settings.wait_for_server == 2.5


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(AttributeError):
        settings.grace = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (":8080", HostPort("0.0.0.0", 8080)),
        ("[::]:1", HostPort("::", 1)),
        ("h:0", HostPort("h", 0)),
    ],
)
def test_parse_host_port(raw: str, expected: HostPort) -> None:
    assert parse_host_port(raw) == expected


def test_fair_share_settings(tmp_path: Path) -> None:
    env = {"OLLANA_HOME": str(tmp_path)}
    defaults = load_settings({}, env=env)
    assert (defaults.ollama_parallel, defaults.max_queue, defaults.usage) == (1, 512, True)
    assert defaults.devices == ()
    assert load_settings({}, env={**env, "OLLAMA_NUM_PARALLEL": "4"}).ollama_parallel == 4
    both = {**env, "OLLAMA_NUM_PARALLEL": "4", "OLLANA_OLLAMA_PARALLEL": "2"}
    assert load_settings({}, env=both).ollama_parallel == 2
    (tmp_path / "config.toml").write_text(
        "max-queue = 8\n[devices.laptop]\nmax-concurrent = 2\nweight = 2\n"
        '[devices."0123abcd-ef"]\nweight = 0.5\n'
    )
    settings = load_settings({"ollama_parallel": "3"}, env=env)
    assert (settings.ollama_parallel, settings.max_queue) == (3, 8)
    assert settings.devices == (
        DeviceRule("laptop", max_concurrent=2, weight=2.0),
        DeviceRule("0123abcd-ef", max_concurrent=0, weight=0.5),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[devices.x]\nspeed = 1\n", "devices.x: unknown setting 'speed'"),
        ("[devices.x]\nweight = 0\n", "weight must be more than 0"),
        ("[devices.x]\nmax-concurrent = -1\n", "expected 0 or more"),
        ("devices = 3\n", "a table per device"),
        ("max-queue = -2\n", "expected 0 or more"),
    ],
)
def test_bad_device_rules_name_the_setting(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings({}, env={"OLLANA_HOME": str(tmp_path)})
