"""The local endpoint's guard against DNS rebinding and hostile web pages (pure functions).

Client mode answers on 127.0.0.1 and reaches every Ollama on the LAN, so a web page
must not be able to use it. This follows Ollama's own guard (server/routes.go:
allowedHostsMiddleware, and gin-contrib/cors v1.7 configured from
envconfig.AllowedOrigins), with these differences, all stricter or safer:

- Host names: loopback names (localhost, *.localhost), this machine's host name and
  configured `allowed_hosts` only. Ollama also accepts *.local and *.internal, names
  that mDNS or LLMNR spoofing on the LAN can point at a page; list them in
  allowed_hosts to accept them. IP literals are judged as Ollama does (loopback,
  private and unspecified addresses pass): a literal cannot be rebound.
- The Host check applies to CORS preflights too (Ollama answers an allowed origin's
  preflight before looking at Host).
- Origin wildcards match prefix and suffix exactly ("http://localhost:*" does not
  match "http://localhost.evil.example").
- Refusals carry an Ollama-style {"error": "…"} body (Ollama sends an empty 403).

A request without Origin (curl, SDKs, other programs) is not a browser's cross-site
request and passes the Origin check, as in Ollama.

A guard remembers its last verdicts per Host and Origin (and preflight or not), so that
the usual request costs one dict lookup.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALLOW_HEADERS",
    "ALLOW_METHODS",
    "DEFAULT_ORIGINS",
    "MAX_AGE",
    "GuardDecision",
    "LocalGuard",
    "OriginPolicy",
    "check_host",
    "cors_headers",
    "default_origins",
]

ALLOW_METHODS: Final = "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"
# Ollama's corsConfig.AllowHeaders, as gin-contrib/cors sends them (canonical case).
_OLLAMA_ALLOW_HEADERS: Final = (
    "Authorization",
    "Content-Type",
    "User-Agent",
    "Accept",
    "X-Requested-With",
    "OpenAI-Beta",
    "x-stainless-arch",
    "x-stainless-async",
    "x-stainless-custom-poll-interval",
    "x-stainless-helper-method",
    "x-stainless-lang",
    "x-stainless-os",
    "x-stainless-package-version",
    "x-stainless-poll-helper",
    "x-stainless-retry-count",
    "x-stainless-runtime",
    "x-stainless-runtime-version",
    "x-stainless-timeout",
)
MAX_AGE: Final = str(12 * 3600)
# Verdicts kept per guard: the table starts over when full. Longer Host plus Origin values
# are judged each time, so that hostile headers cannot make the table big.
VERDICT_CACHE_SIZE: Final = 256
VERDICT_CACHE_KEY_LENGTH: Final = 512
_PRIVATE_NETWORKS: Final = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


def _canonical_header(name: str) -> str:
    """Go's http.CanonicalHeaderKey for the ASCII names used here."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


ALLOW_HEADERS: Final = ",".join(_canonical_header(h) for h in _OLLAMA_ALLOW_HEADERS)


def default_origins() -> tuple[str, ...]:
    """Ollama's built-in allowed origins (envconfig.AllowedOrigins without OLLAMA_ORIGINS)."""
    origins: list[str] = []
    for host in ("localhost", "127.0.0.1", "0.0.0.0"):
        origins += [f"http://{host}", f"https://{host}", f"http://{host}:*", f"https://{host}:*"]
    return (*origins, "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*")


DEFAULT_ORIGINS: Final = default_origins()


class OriginPolicy:
    """Which Origin values may make cross-site requests: defaults plus OLLAMA_ORIGINS."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        configured = [o.strip().lower() for o in extra if o.strip()]
        patterns = configured + list(DEFAULT_ORIGINS)
        self.allow_all = "*" in patterns
        self._exact = frozenset(p for p in patterns if "*" not in p)
        self._wildcards: list[tuple[str, str]] = []
        for pattern in patterns:
            if "*" not in pattern or pattern == "*":
                continue
            prefix, _, suffix = pattern.partition("*")
            if "*" in suffix:
                raise ValueError(f"origin {pattern!r}: only one * is allowed")
            self._wildcards.append((prefix, suffix))

    def allows(self, origin: str) -> bool:
        """Whether a browser page from `origin` may call the API."""
        if self.allow_all:
            return True
        origin = origin.strip().lower()
        if origin in self._exact:
            return True
        return any(
            len(origin) >= len(prefix) + len(suffix)
            and origin.startswith(prefix)
            and origin.endswith(suffix)
            for prefix, suffix in self._wildcards
        )


def cors_headers(origin: str, *, preflight: bool, allow_all: bool = False) -> list[tuple[str, str]]:
    """The CORS headers Ollama sends to an allowed origin (Vary appears several times)."""
    headers: list[tuple[str, str]] = []
    if preflight:
        headers += [
            ("Access-Control-Allow-Methods", ALLOW_METHODS),
            ("Access-Control-Allow-Headers", ALLOW_HEADERS),
            ("Access-Control-Max-Age", MAX_AGE),
        ]
    if allow_all:
        return [*headers, ("Access-Control-Allow-Origin", "*")]
    if preflight:
        headers += [
            ("Vary", "Origin"),
            ("Vary", "Access-Control-Request-Method"),
            ("Vary", "Access-Control-Request-Headers"),
        ]
    else:
        headers.append(("Vary", "Origin"))
    return [*headers, ("Access-Control-Allow-Origin", origin)]


def check_host(
    host_header: str | None, allowed_hosts: Iterable[str] = (), *, hostname: str | None = None
) -> bool:
    """Whether a Host header names this machine in a way no web page can forge."""
    host = _host_only(host_header or "")
    if not host:
        return True  # HTTP/1.0 without Host: no name, hence nothing to rebind
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if address.is_loopback or address.is_unspecified:
            return True
        if any(address in network for network in _PRIVATE_NETWORKS):
            return True
    else:
        own = (hostname if hostname is not None else socket.gethostname()).lower()
        if host in ("localhost", own) or host.endswith(".localhost"):
            return True
    return any(_host_matches(host, pattern) for pattern in allowed_hosts)


@dataclass(frozen=True, slots=True)
class GuardDecision:
    """What to do with a request: go on (status None) or answer now with `status`.

    `headers` go on the response either way (CORS headers for an allowed origin);
    `error` is the text of an Ollama-style {"error": …} body for a 403.
    """

    status: int | None
    headers: tuple[tuple[str, str], ...] = ()
    error: str | None = None


class LocalGuard:
    """The whole check for one request to the local endpoint."""

    def __init__(
        self,
        origins: Iterable[str] = (),
        allowed_hosts: Sequence[str] = (),
        *,
        check_hosts: bool = True,
        hostname: str | None = None,
    ) -> None:
        self.policy = OriginPolicy(origins)
        self.allowed_hosts = tuple(h.strip().lower() for h in allowed_hosts if h.strip())
        # Like Ollama, Host is only checked on a loopback listener.
        self.check_hosts = check_hosts and "*" not in self.allowed_hosts
        self.hostname = (hostname if hostname is not None else socket.gethostname()).lower()
        self._verdicts: dict[tuple[bool, str | None, str | None], GuardDecision] = {}

    def check(self, method: str, host: str | None, origin: str | None) -> GuardDecision:
        """Decide for one request from its method, Host and Origin headers."""
        key = (method.upper() == "OPTIONS", host, origin)
        decision = self._verdicts.get(key)
        if decision is None:
            decision = self._decide(*key)
            if len(host or "") + len(origin or "") <= VERDICT_CACHE_KEY_LENGTH:
                if len(self._verdicts) >= VERDICT_CACHE_SIZE:
                    self._verdicts.clear()
                self._verdicts[key] = decision
        return decision

    def _decide(self, preflight: bool, host: str | None, origin: str | None) -> GuardDecision:
        if self.check_hosts and not check_host(host, self.allowed_hosts, hostname=self.hostname):
            shown = _host_only(host or "")
            return GuardDecision(
                403,
                error=f"host {shown!r} is not allowed: the local endpoint answers to loopback"
                " names only (add it to allowed_hosts to accept it)",
            )
        headers: tuple[tuple[str, str], ...] = ()
        if origin and origin not in (f"http://{host}", f"https://{host}"):
            if not self.policy.allows(origin):
                return GuardDecision(
                    403,
                    error=f"origin {origin!r} is not allowed (add it to OLLAMA_ORIGINS to"
                    " accept it)",
                )
            allow_all = self.policy.allow_all
            headers = tuple(cors_headers(origin, preflight=preflight, allow_all=allow_all))
        if preflight:
            return GuardDecision(204, headers)
        return GuardDecision(None, headers)


def _host_only(value: str) -> str:
    """The host part of a Host header, lowercase, without port, brackets or final dot."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        value = value[1:end] if end > 0 else value[1:]
    elif value.count(":") == 1:
        value = value.partition(":")[0]
    return value.removesuffix(".")


def _host_matches(host: str, pattern: str) -> bool:
    pattern = _host_only(pattern)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    if pattern.startswith("."):
        return host.endswith(pattern) or host == pattern[1:]
    return host == pattern
