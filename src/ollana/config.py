"""Settings: one typed, frozen object built from flags > OLLANA_* env > TOML file > defaults."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import os
import re
import socket
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import platformdirs

from ollana.filemodes import unsafe_file

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_CLIENT_PORT",
    "DEFAULT_DISCOVERY_PORT",
    "DEFAULT_MAX_QUEUE",
    "DEFAULT_OLLAMA_PARALLEL",
    "DEFAULT_OLLAMA_PORT",
    "DEFAULT_SERVER_PORT",
    "LOG_LEVELS",
    "ConfigError",
    "DeviceRule",
    "HostPort",
    "Limits",
    "Settings",
    "StaticServer",
    "Timings",
    "check_mode",
    "load_settings",
    "ollama_host",
    "parse_host_port",
    "parse_mac",
]

log = logging.getLogger(__name__)

DEFAULT_OLLAMA_PORT = 11434
DEFAULT_CLIENT_PORT = 11434
DEFAULT_SERVER_PORT = 11435
DEFAULT_DISCOVERY_PORT = 11436
DEFAULT_ADMIN_PORT = 11437
# Ollama's own defaults: OLLAMA_NUM_PARALLEL (1 since Ollama 0.11) and OLLAMA_MAX_QUEUE (512).
DEFAULT_OLLAMA_PARALLEL = 1
DEFAULT_MAX_QUEUE = 512

Mode = Literal["auto", "server", "client"]


class ConfigError(ValueError):
    """A setting could not be read; the message names the setting and where it came from."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP/UDP address as typed by a user; IPv6 hosts are kept without brackets."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connect_host(self) -> str:
        """The host to connect to: a wildcard listen address means this machine."""
        if self.host in ("", "0.0.0.0"):
            return "127.0.0.1"
        if self.host == "::":
            return "::1"
        return self.host


@dataclass(frozen=True, slots=True)
class StaticServer:
    """A server given with --server "HOST:PORT[@PRIORITY] [mac=MAC]"."""

    address: HostPort
    priority: int = 0
    mac: str = ""  # to wake it (Wake-on-LAN) before it was ever heard announcing one

    def __str__(self) -> str:
        text = f"{self.address}@{self.priority}" if self.priority else str(self.address)
        return f"{text} mac={self.mac}" if self.mac else text


@dataclass(frozen=True, slots=True)
class DeviceRule:
    """`[devices.<id-or-name>]` in the config file: one device's share of a server.

    `key` is an ID prefix (8+ hex digits) or a device name, as written; `max_concurrent`
    of 0 means no limit of its own; `weight` 2 gets twice the turns of weight 1.
    """

    key: str
    max_concurrent: int = 0
    weight: float = 1.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Protocol limits; defaults follow nginx, HAProxy, Envoy and Ollama (docs/limits.md).

    A timeout, a connection count or datagram_rate of 0 means no limit (handshake_timeout:
    asyncio's 60 s); a keepalive_timeout of 0 means no keep-alive.
    """

    max_line_size: int = 8 * 1024  # the request line (method, target, version): else 414
    max_header_size: int = 16 * 1024  # the header fields of a request, together: else 431
    max_header_fields: int = 100  # else 431
    max_connections: int = 1024  # open at once, per listener: else 503, then closed
    max_device_connections: int = 768  # one device's share of max_connections (server)
    # Client: connections per server it may open ahead of demand (0: none). Off by default:
    # connections opened ahead count against the server's share for this device.
    preconnect: int = 0
    anonymous_connections: int = 32  # without an allowed certificate, in all (server)
    anonymous_per_address: int = 4  # without an allowed certificate, from one address
    handshake_timeout: float = 10.0  # to complete a TLS handshake, from connect: else closed
    keepalive_timeout: float = 75.0  # idle time of a connection between requests
    header_timeout: float = 10.0  # to get a whole request head, from connect or first byte: 408
    body_timeout: float = 60.0  # silence inside a request body, while ollana reads it: 408
    send_timeout: float = 60.0  # a client reading nothing of its answer is cut off after it
    connect_timeout: float = 5.0  # opening an upstream connection, TLS handshake included
    stream_idle_timeout: float = 300.0  # silence inside an upstream response; none in total
    route_body_cap: int = 1024 * 1024  # bodies up to this size are read for the model named
    datagram_rate: float = 20.0  # discovery datagrams a second from one address (and burst)


@dataclass(frozen=True, slots=True)
class Timings:
    """Protocol timings; named so that tests can shrink them."""

    announce_interval: float = 5.0
    query_interval: float = 5.0
    probe_interval: float = 2.0
    probe_timeout: float = 1.0
    forget_after: float = 15.0
    models_refresh: float = 30.0
    # Saying hello again to a static server that is not usable: the first retry, then
    # doubling up to the cap for an address where nothing answers (a booting server is
    # found within about a second), or up to the longer one while it answers but will
    # not take us (an allow list must change first).
    hello_retry_first: float = 0.1
    hello_retry_max: float = 1.0
    hello_retry_refused: float = 3.0
    history_interval: float = 5.0  # between samples of the dashboard's 15-minute history
    # How long a client keeps a burst's connections to a server idle before letting them
    # go (a new mutual-TLS connection costs each side about a millisecond of CPU).
    connection_hold: float = 30.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a running ollana needs to know, resolved once at start."""

    mode: Mode = "auto"
    force_server_mode: bool = False
    listen: HostPort | None = None
    ollama: str = f"http://127.0.0.1:{DEFAULT_OLLAMA_PORT}"
    servers: tuple[StaticServer, ...] = ()
    discovery: bool = True
    discovery_port: int = DEFAULT_DISCOVERY_PORT
    discovery_targets: tuple[str, ...] = ()
    admin_listen: HostPort | None = HostPort("127.0.0.1", DEFAULT_ADMIN_PORT)
    open: bool = False
    read_only: bool = False
    allow_management: bool = False
    priority: int = 0
    name: str = field(default_factory=lambda: default_name())  # noqa: PLW0108 (defined below)
    retry_buffer: int = 16 * 1024 * 1024
    wait_for_server: float = 5.0
    wake: bool = True
    wake_timeout: float = 90.0
    grace: float = 30.0
    daemon: bool = False
    pid_file: Path | None = None
    log_file: Path | None = None
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    home: Path = field(default_factory=lambda: default_home())  # noqa: PLW0108 (defined below)
    origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    ollama_parallel: int = DEFAULT_OLLAMA_PARALLEL  # server: Ollama's slots; 0: no queue
    max_queue: int = DEFAULT_MAX_QUEUE  # server: requests waiting beyond this get 503
    usage: bool = True  # server: count usage per device and model in usage.sqlite
    devices: tuple[DeviceRule, ...] = ()
    limits: Limits = field(default_factory=Limits)
    timings: Timings = field(default_factory=Timings)

    def listen_address(self, server_mode: bool) -> HostPort:
        """The listen address of a mode: the flag, else the mode's default."""
        if self.listen is not None:
            return self.listen
        if server_mode:
            return HostPort("0.0.0.0", DEFAULT_SERVER_PORT)
        return HostPort("127.0.0.1", DEFAULT_CLIENT_PORT)

    @property
    def refuses_management(self) -> bool:
        """Whether management calls (pull, create, delete, …) are refused in server mode."""
        return self.read_only or (self.open and not self.allow_management)


MAX_NAME_BYTES = 64


def default_name() -> str:
    """This device's name for people: the host name, cut to what an announce carries."""
    text = "".join(c for c in socket.gethostname() if unicodedata.category(c)[0] != "C")
    while len(text.encode("utf-8")) > MAX_NAME_BYTES:
        text = text[:-1]
    return text


def _name(raw: object) -> str:
    text = _text(raw)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise ValueError(f"a name is at most {MAX_NAME_BYTES} bytes of UTF-8")
    if any(unicodedata.category(c)[0] == "C" for c in text):
        raise ValueError("a name may not hold control or format characters")
    return text


def default_home(env: Mapping[str, str] = os.environ) -> Path:
    """Where identity and allow list live: OLLANA_HOME, else the user data dir."""
    home = env.get("OLLANA_HOME", "").strip()
    if home:
        return Path(home).expanduser()
    return Path(platformdirs.user_data_dir("ollana", appauthor=False))


# --- OLLAMA_HOST, parsed as Ollama's own server parses it (envconfig.Host) ---------------


def _split_host_port(hostport: str) -> tuple[str, str] | None:
    """Go's net.SplitHostPort: None where Go returns an error."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0 or not hostport[end + 1 :].startswith(":"):
            return None
        host, port = hostport[1:end], hostport[end + 2 :]
        if ":" in port:
            return None
        return host, port
    if hostport.count(":") != 1:
        return None
    host, port = hostport.split(":")
    return host, port


def ollama_host(raw: str | None, warn: Callable[[str], None] | None = None) -> str:
    """Turn an OLLAMA_HOST value into a URL (scheme://host:port[/path]) as Ollama does."""
    s = (raw or "").strip().strip("\"'").strip()
    default_port = str(DEFAULT_OLLAMA_PORT)
    scheme, sep, hostport = s.partition("://")
    if not sep:
        scheme, hostport = "http", s
    elif scheme == "http":
        default_port = "80"
    elif scheme == "https":
        default_port = "443"
    hostport, _, path = hostport.partition("/")
    split = _split_host_port(hostport)
    if split is None:
        host, port = "127.0.0.1", default_port
        bare = hostport.strip("[]")
        try:
            host = str(ipaddress.ip_address(bare))
        except ValueError:
            if hostport:
                host = hostport
    else:
        host, port = split
    try:
        number = int(port, 10)
        valid = 0 <= number <= 65535
    except ValueError:
        valid = False
    if not valid:
        (warn or log.warning)(f"invalid port {port!r} in OLLAMA_HOST, using default {default_port}")
        port = default_port
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"{scheme}://{netloc}" + (f"/{path}" if path else "")


# --- value parsers: raw (str from env/flags, or a TOML value) -> typed --------------------


def parse_host_port(raw: object, default_port: int | None = None) -> HostPort:
    """Parse HOST:PORT, [V6]:PORT, :PORT (all interfaces) or HOST (with a default port)."""
    text = _text(raw)
    split = _split_host_port(text)
    if split is None:
        if default_port is None:
            raise ValueError(f"expected HOST:PORT, got {text!r}")
        host, port_text = text.strip("[]"), str(default_port)
    else:
        host, port_text = split
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 0-65535")
    return HostPort(host or "0.0.0.0", port)


def _optional_host_port(raw: object) -> HostPort | None:
    text = _text(raw)
    if text.lower() in ("", "off", "none", "false", "no"):
        return None
    return parse_host_port(text)


def _static_server(raw: object) -> StaticServer:
    """HOST:PORT[@PRIO] [mac=MAC], or a table {address = "HOST:PORT", priority, mac}."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"address", "priority", "mac"}
        if unknown:
            raise ValueError(f"unknown server key {sorted(unknown)[0]!r} (address, priority, mac)")
        where = parse_host_port(raw.get("address"), DEFAULT_SERVER_PORT)
        mac = parse_mac(raw["mac"]) if "mac" in raw else ""
        return StaticServer(where, _int(raw.get("priority", 0)), mac)
    text, *options = _text(raw).split() or [""]
    mac = ""
    for option in options:
        name, eq, value = option.partition("=")
        if name.lower() != "mac" or not eq:
            raise ValueError(f"unknown server option {option!r:.40} (expected mac=MAC)")
        mac = parse_mac(value)
    address, at, prio = text.rpartition("@") if "@" in text else (text, "", "")
    priority = 0
    if at:
        try:
            priority = int(prio)
        except ValueError:
            raise ValueError(f"priority {prio!r} is not a number") from None
    return StaticServer(parse_host_port(address, DEFAULT_SERVER_PORT), priority, mac)


_MAC_TEXT = re.compile(r"[0-9a-f]{2}([:-]?)[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}")


def parse_mac(raw: object) -> str:
    """A MAC address as lowercase aa:bb:cc:dd:ee:ff; ':' or '-' separated, or bare digits."""
    text = _text(raw).lower()
    digits = text.replace(":", "").replace("-", "") if _MAC_TEXT.fullmatch(text) else ""
    if not digits or digits in ("000000000000", "ffffffffffff"):
        raise ValueError(f"{text!r:.40} is not a MAC address (expected aa:bb:cc:dd:ee:ff)")
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def _text(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {type(raw).__name__}")
    return raw.strip()


def _bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = _text(raw).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected a whole number, got a boolean")
    if isinstance(raw, int):
        return raw
    try:
        return int(_text(raw), 0)
    except ValueError:
        raise ValueError(f"expected a whole number, got {raw!r}") from None


def _port(raw: object) -> int:
    value = _int(raw)
    if not 0 <= value <= 65535:
        raise ValueError(f"port {value} is out of range 0-65535")
    return value


def _seconds(raw: object) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number of seconds, got a boolean")
    try:
        value = float(raw if isinstance(raw, int | float) else _text(raw).lower().removesuffix("s"))
    except (ValueError, OverflowError):
        raise ValueError(f"expected a number of seconds, got {raw!r:.40}") from None
    # inf and nan would pass the sign check and then break every timer they reach.
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number of seconds, 0 or more, got {raw!r:.40}")
    return value


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gib": 1024**3,
}


def _size(raw: object) -> int:
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    else:
        text = _text(raw).lower()
        number = text.rstrip("kmgib")
        unit = text[len(number) :]
        if unit not in _SIZE_UNITS:
            raise ValueError(f"unknown size unit {unit!r} (use K, M or G)")
        try:
            value = int(float(number) * _SIZE_UNITS[unit])
        except (ValueError, OverflowError):  # OverflowError: "1e400", "inf"
            raise ValueError(f"expected a size such as 16M, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"expected a positive size, got {value}")
    return value


def _count(raw: object) -> int:
    value = _int(raw)
    if value < 0:
        raise ValueError(f"expected 0 or more, got {value}")
    return value


_DEVICE_KEYS = {"max_concurrent", "weight"}


def _devices(raw: object) -> tuple[DeviceRule, ...]:
    if not isinstance(raw, dict):
        raise ValueError("set it in the config file, a table per device: [devices.<id-or-name>]")
    rules = []
    for key, table in raw.items():
        if not isinstance(table, dict):
            raise ValueError(f"devices.{key}: expected a table with max-concurrent and weight")
        values = {name.replace("-", "_"): value for name, value in table.items()}
        unknown = sorted(set(values) - _DEVICE_KEYS)
        if unknown:
            raise ValueError(f"devices.{key}: unknown setting {unknown[0]!r}")
        weight = values.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"devices.{key}: weight must be a number, got {weight!r:.40}")
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"devices.{key}: weight must be more than 0, got {weight!r:.40}")
        rules.append(DeviceRule(str(key), _count(values.get("max_concurrent", 0)), float(weight)))
    return tuple(rules)


def _choice(*choices: str) -> Callable[[object], str]:
    def parse(raw: object) -> str:
        text = _text(raw).lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {text!r}")
        return text

    return parse


def _path(raw: object) -> Path:
    try:
        return Path(_text(raw)).expanduser()
    except RuntimeError:  # "~someone" where no such user exists
        raise ValueError(f"cannot expand {raw!r:.40}: no such user's home") from None


def _list(item: Callable[[object], Any]) -> Callable[[object], tuple[Any, ...]]:
    def parse(raw: object) -> tuple[Any, ...]:
        if isinstance(raw, list | tuple):
            return tuple(item(x) for x in raw)
        return tuple(item(x) for x in _text(raw).split(",") if x.strip())

    return parse


# The log levels every command and the docs offer (ollana.logs.LEVELS maps each).
LOG_LEVELS: Final = ("trace", "debug", "info", "warn", "warning", "error", "critical", "off")

# Each setting: its parser. Nested groups are addressed as "limits.x" / "timings.x".
_PARSERS: dict[str, Callable[[object], Any]] = {
    "mode": _choice("auto", "server", "client"),
    "force_server_mode": _bool,
    "listen": parse_host_port,
    "ollama": lambda raw: ollama_host(_text(raw)),
    "servers": _list(_static_server),
    "discovery": _bool,
    "discovery_port": _port,
    "discovery_targets": _list(_text),
    "admin_listen": _optional_host_port,
    "open": _bool,
    "read_only": _bool,
    "allow_management": _bool,
    "priority": _int,
    "name": _name,
    "retry_buffer": _size,
    "wait_for_server": _seconds,
    "wake": _bool,
    "wake_timeout": _seconds,
    "grace": _seconds,
    "daemon": _bool,
    "pid_file": _path,
    "log_file": _path,
    "log_level": _choice(*LOG_LEVELS),
    "log_format": _choice("text", "json"),
    "origins": _list(_text),
    "allowed_hosts": _list(_text),
    "ollama_parallel": _count,
    "max_queue": _count,
    "usage": _bool,
    "devices": _devices,
}
for _f in dataclasses.fields(Limits):
    _PARSERS[f"limits.{_f.name}"] = _seconds if _f.type == "float" else _size
for _f in dataclasses.fields(Timings):
    _PARSERS[f"timings.{_f.name}"] = _seconds

# Environment names that are not OLLANA_<SETTING>.
_ENV_ALIASES = {
    "OLLAMA_HOST": "ollama",
    "OLLAMA_ORIGINS": "origins",
    "OLLAMA_NUM_PARALLEL": "ollama_parallel",
    "OLLANA_LOG": "log_level",
    "RUST_LOG": "log_level",
}


def _env_name(key: str) -> str:
    return "OLLANA_" + key.replace(".", "_").upper()


def _from_env(env: Mapping[str, str]) -> dict[str, tuple[object, str]]:
    found: dict[str, tuple[object, str]] = {}
    # Aliases first, so that OLLANA_* names win over them.
    for name, key in sorted(_ENV_ALIASES.items(), key=lambda kv: kv[0] != "RUST_LOG"):
        if env.get(name, "").strip():
            value: object = env[name]
            if name == "RUST_LOG":
                value = _rust_log_level(env[name])
            found[key] = (value, f"environment variable {name}")
    for key in _PARSERS:
        name = _env_name(key)
        if name in env:
            found[key] = (env[name], f"environment variable {name}")
    return found


def _rust_log_level(value: str) -> str:
    """RUST_LOG may be 'info' or 'ollana=debug,hyper=warn': ollana's level, else the bare one."""
    bare = "info"
    for part in value.split(","):
        target, eq, level = part.strip().rpartition("=")
        if not eq:
            bare = level or bare
        elif target == "ollana" or target.startswith("ollana::"):
            return level
    return bare


def _from_file(path: Path) -> dict[str, tuple[object, str]]:
    # It can turn on --open or name a log file: one that others can change is refused.
    why = unsafe_file(path)
    if why is not None:
        raise ConfigError(why)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested arrays and tables
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    found: dict[str, tuple[object, str]] = {}

    def walk(table: Mapping[str, object], prefix: str) -> None:
        for name, value in table.items():
            key = prefix + name.replace("-", "_")
            if isinstance(value, dict) and key in ("limits", "timings"):
                walk(value, key + ".")
            elif key in _PARSERS:
                found[key] = (value, f"{path}, line {_line_of(text, name)}, key {prefix}{name}")
            else:
                line = _line_of(text, name)
                raise ConfigError(f"{path}, line {line}: unknown setting {prefix}{name!r}")

    walk(data, "")
    return found


def _line_of(text: str, key: str) -> int | str:
    """The line where a key is assigned, for messages; '?' where it cannot be told."""
    pattern = re.compile(rf"^[ \t]*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
    match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else "?"


def check_mode(settings: Settings, mode: str, why: str = "") -> None:
    """ConfigError when a setting has no meaning in the mode this process runs in."""
    if mode == "client" and settings.open:
        picked = f" ({why})" if why else ""
        raise ConfigError(
            f"setting 'open' (--open, OLLANA_OPEN or `open = true` in the config file) is for "
            f"servers, and this is client mode{picked}: it would make this client trust every "
            "server on the LAN and send prompts to any of them. Remove it here, or run a "
            "server with --mode server"
        )


def load_settings(
    flags: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings: flags (only those given) > OLLANA_* env > TOML file > defaults."""
    env = os.environ if env is None else env
    flags = dict(flags or {})
    home_raw = flags.pop("home", None) or env.get("OLLANA_HOME", "").strip() or None
    try:
        home = _path(home_raw) if home_raw else default_home(env)
    except ValueError as exc:
        raise ConfigError(f"setting 'home': {exc}") from None
    if config_file is None:
        from_env = env.get("OLLANA_CONFIG", "").strip()
        config_file = Path(from_env) if from_env else home / "config.toml"
    merged = _from_file(config_file)
    merged.update(_from_env(env))
    for key, value in flags.items():
        if value is None or value == ():
            continue
        if key not in _PARSERS:
            raise ConfigError(f"unknown setting {key!r}")
        merged[key] = (value, f"--{key.replace('_', '-')}")
    top: dict[str, Any] = {"home": home}
    groups: dict[str, dict[str, Any]] = {"limits": {}, "timings": {}}
    for key, (raw, source) in merged.items():
        try:
            value = _PARSERS[key](raw)
        except ValueError as exc:
            raise ConfigError(f"setting {key!r} from {source}: {exc}") from None
        group, dot, name = key.partition(".")
        if dot:
            groups[group][name] = value
        else:
            top[key] = value
    return Settings(limits=Limits(**groups["limits"]), timings=Timings(**groups["timings"]), **top)
