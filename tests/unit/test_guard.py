"""The local endpoint's Host/Origin guard, against Ollama's behaviour."""

from __future__ import annotations

import pytest

from ollana.http.guard import (
    ALLOW_HEADERS,
    DEFAULT_ORIGINS,
    LocalGuard,
    OriginPolicy,
    check_host,
    cors_headers,
)

HOSTNAME = "workstation"


@pytest.fixture
def guard() -> LocalGuard:
    return LocalGuard(hostname=HOSTNAME)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:11434",
        "127.0.0.1",
        "127.1.2.3:80",
        "localhost:11434",
        "LOCALHOST",
        "localhost.:11434",
        "app.localhost:11434",
        "[::1]:11434",
        "[::1]",
        "0.0.0.0:11434",
        "192.168.1.10:11434",
        "10.0.0.5",
        "[fd00::1]:11434",
        "[::ffff:127.0.0.1]:11434",
        "workstation:11434",
        "",
        None,
    ],
)
def test_loopback_local_and_own_hosts_pass(host: str | None) -> None:
    assert check_host(host, hostname=HOSTNAME)


@pytest.mark.parametrize(
    "host",
    [
        "evil.example:11434",
        "evil.example",
        "localhost.evil.example",
        "127.0.0.1.nip.io:11434",
        "8.8.8.8:11434",
        "[2001:db8::1]:11434",
        "printer.local:11434",
        "svc.internal",
        "workstation.evil.example",
    ],
)
def test_foreign_hosts_are_refused(host: str) -> None:
    assert not check_host(host, hostname=HOSTNAME)


def test_configured_hosts_pass() -> None:
    allowed = ["ollama.lan", "*.home.arpa", ".local"]
    for host in ("ollama.lan:11434", "OLLAMA.LAN", "box.home.arpa", "printer.local", "local"):
        assert check_host(host, allowed, hostname=HOSTNAME), host
    for host in ("ollama.lan.evil.example", "home.arpa.evil.example", "notlocal"):
        assert not check_host(host, allowed, hostname=HOSTNAME), host


def test_foreign_host_is_refused_with_an_explanation(guard: LocalGuard) -> None:
    decision = guard.check("GET", "rebind.evil.example:11434", None)
    assert decision.status == 403
    assert decision.error is not None and "rebind.evil.example" in decision.error
    assert decision.headers == ()


def test_dns_rebinding_same_origin_request_is_refused(guard: LocalGuard) -> None:
    # The page's own origin, rebound to 127.0.0.1: not a CORS request, but a foreign Host.
    origin = "http://rebind.evil.example:11434"
    decision = guard.check("POST", "rebind.evil.example:11434", origin)
    assert decision.status == 403


def test_request_without_origin_passes(guard: LocalGuard) -> None:
    decision = guard.check("POST", "127.0.0.1:11434", None)
    assert (decision.status, decision.headers, decision.error) == (None, (), None)


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://localhost.evil.example",
        "http://127.0.0.1.evil.example:8080",
        "null",
        "chrome-extension://abcdef",
        "http://192.168.1.10:3000",
    ],
)
def test_foreign_origin_is_refused(guard: LocalGuard, origin: str) -> None:
    for method in ("GET", "POST", "OPTIONS"):
        decision = guard.check(method, "127.0.0.1:11434", origin)
        assert decision.status == 403
        assert decision.error is not None and origin in decision.error
        assert decision.headers == ()


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:3000",
        "https://127.0.0.1:8443",
        "http://0.0.0.0:5173",
        "app://obsidian.md",
        "file://",
        "tauri://localhost",
        "vscode-webview://1a2b3c",
        "vscode-file://vscode-app",
    ],
)
def test_default_origins_get_ollamas_cors_headers(guard: LocalGuard, origin: str) -> None:
    decision = guard.check("POST", "127.0.0.1:11434", origin)
    assert decision.status is None
    assert list(decision.headers) == [("Vary", "Origin"), ("Access-Control-Allow-Origin", origin)]


def test_preflight_is_answered_like_ollama(guard: LocalGuard) -> None:
    decision = guard.check("OPTIONS", "localhost:11434", "http://localhost:3000")
    assert decision.status == 204
    assert list(decision.headers) == [
        ("Access-Control-Allow-Methods", "GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"),
        (
            "Access-Control-Allow-Headers",
            "Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,"
            "X-Stainless-Arch,X-Stainless-Async,X-Stainless-Custom-Poll-Interval,"
            "X-Stainless-Helper-Method,X-Stainless-Lang,X-Stainless-Os,"
            "X-Stainless-Package-Version,X-Stainless-Poll-Helper,X-Stainless-Retry-Count,"
            "X-Stainless-Runtime,X-Stainless-Runtime-Version,X-Stainless-Timeout",
        ),
        ("Access-Control-Max-Age", "43200"),
        ("Vary", "Origin"),
        ("Vary", "Access-Control-Request-Method"),
        ("Vary", "Access-Control-Request-Headers"),
        ("Access-Control-Allow-Origin", "http://localhost:3000"),
    ]


def test_preflight_on_a_foreign_host_is_refused(guard: LocalGuard) -> None:
    assert guard.check("OPTIONS", "evil.example", "http://localhost:3000").status == 403


def test_options_without_origin_is_answered_empty(guard: LocalGuard) -> None:
    decision = guard.check("OPTIONS", "127.0.0.1:11434", None)
    assert (decision.status, decision.headers) == (204, ())


def test_ollama_origins_add_exact_and_wildcard_origins() -> None:
    guard = LocalGuard(["https://chat.example.com", "chrome-extension://*", "https://*.corp"])
    for origin in ("https://chat.example.com", "chrome-extension://abc", "https://a.b.corp"):
        decision = guard.check("GET", "127.0.0.1:11434", origin)
        assert decision.status is None, origin
        assert ("Access-Control-Allow-Origin", origin) in decision.headers
    for origin in ("https://chat.example.com.evil", "https://corp", "http://a.corp"):
        assert guard.check("GET", "127.0.0.1:11434", origin).status == 403, origin


def test_star_allows_every_origin_with_a_star_header() -> None:
    guard = LocalGuard(["*"])
    decision = guard.check("GET", "127.0.0.1:11434", "https://anything.example")
    assert decision.status is None
    assert list(decision.headers) == [("Access-Control-Allow-Origin", "*")]
    preflight = guard.check("OPTIONS", "127.0.0.1:11434", "https://anything.example")
    assert ("Access-Control-Allow-Origin", "*") in preflight.headers
    assert not any(name == "Vary" for name, _ in preflight.headers)
    # Origins do not open the Host check.
    assert guard.check("GET", "evil.example", "https://anything.example").status == 403


def test_host_checks_can_be_off_for_a_non_loopback_listener() -> None:
    guard = LocalGuard(check_hosts=False)
    assert guard.check("GET", "evil.example", None).status is None
    assert LocalGuard(allowed_hosts=["*"]).check("GET", "evil.example", None).status is None


def test_default_origin_list_is_ollamas() -> None:
    assert DEFAULT_ORIGINS[:4] == (
        "http://localhost",
        "https://localhost",
        "http://localhost:*",
        "https://localhost:*",
    )
    assert len(DEFAULT_ORIGINS) == 17
    assert DEFAULT_ORIGINS[-5:] == (
        "app://*",
        "file://*",
        "tauri://*",
        "vscode-webview://*",
        "vscode-file://*",
    )


def test_two_stars_are_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="only one"):
        OriginPolicy(["http://*.example:*"])


def test_cors_headers_of_a_plain_request() -> None:
    assert cors_headers("http://localhost:1", preflight=False) == [
        ("Vary", "Origin"),
        ("Access-Control-Allow-Origin", "http://localhost:1"),
    ]
    assert "Content-Type" in ALLOW_HEADERS.split(",")
