"""nginx for comparison: a static Ollama stand-in, and a two-hop mutual-TLS chain.

Every config is written at run time into a temporary directory, with certificates made
there too; nothing is read from or written to /etc/nginx. Each nginx is one master and one
worker, in the foreground, on loopback.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "Nginx",
    "back_config",
    "backend_config",
    "free_port",
    "front_config",
    "make_cert",
    "sparse_file",
]

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0

# Ollama's small answers, as the static backend gives them.
STATIC = {
    "/api/version": '{"version":"0.5.7"}',
    "/api/tags": '{"models":[]}',
    "/api/ps": '{"models":[]}',
    "/api/show": '{"license":"","modelfile":"FROM x","parameters":"","template":"{{ .Prompt }}"}',
}

# Host passes through as the app sent it (a loopback name): Ollama refuses other hosts.
_PROXY = """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_set_header Host $http_host;
        proxy_buffering off;
        proxy_request_buffering off;
        proxy_read_timeout 1h;
        proxy_send_timeout 1h;
"""


@dataclass(frozen=True, slots=True)
class Cert:
    """A self-signed certificate and its key, as PEM files."""

    cert: Path
    key: Path


def make_cert(directory: Path, name: str) -> Cert:
    """An EC P-256 self-signed certificate for localhost/127.0.0.1, both client and server use."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{name}")])
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    paths = Cert(directory / f"{name}.crt", directory / f"{name}.key")
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths.key.chmod(0o600)
    return paths


def free_port() -> int:
    """A loopback port free right now (nginx cannot bind port 0 and tell which it got)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _main(directory: Path, name: str, http: str, *, access_log: bool = False) -> str:
    # nginx's default of 1,000 requests per connection would make wrk reconnect, which
    # aiohttp never asks for: lift it on both sides so both chains keep their connections.
    user = "user root;" if os.geteuid() == 0 else ""
    temp = "\n".join(
        f"    {kind}_temp_path {directory}/{name}-{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    log = f"{directory}/{name}.access.log" if access_log else "off"
    return f"""
{user}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 20000;
pid {directory}/{name}.pid;
error_log {directory}/{name}.error.log warn;
events {{ worker_connections 8192; }}
http {{
    access_log {log};
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    client_max_body_size 0;
{temp}
{http}
}}
"""


def backend_config(directory: Path, port: int, big_file: Path | None) -> str:
    """A static server answering Ollama's small endpoints, and /big from a file."""
    locations = "\n".join(
        f'        location = {path} {{ default_type "application/json; charset=utf-8";'
        f" return 200 '{body}'; }}"
        for path, body in STATIC.items()
    )
    big = (
        f"        location = /big {{ alias {big_file}; default_type application/octet-stream; }}"
        if big_file is not None
        else ""
    )
    http = f"""
    sendfile on;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
{locations}
{big}
        location / {{ return 404; }}
    }}"""
    return _main(directory, "backend", http)


def front_config(
    directory: Path, port: int, back_port: int, mine: Cert, peer: Cert, *, access_log: bool
) -> str:
    """The client-side nginx: plain HTTP in, mutual TLS out to `back_port`, kept alive."""
    http = f"""
    upstream back {{
        server 127.0.0.1:{back_port};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass https://back;
{_PROXY}
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {mine.cert};
            proxy_ssl_certificate_key {mine.key};
            proxy_ssl_trusted_certificate {peer.cert};
            proxy_ssl_verify on;
            proxy_ssl_name localhost;
            proxy_ssl_session_reuse off;
        }}
    }}"""
    return _main(directory, "front", http, access_log=access_log)


def back_config(
    directory: Path, port: int, backend_port: int, mine: Cert, peer: Cert, *, access_log: bool
) -> str:
    """The server-side nginx: mutual TLS in (client certificate required), plain HTTP out."""
    http = f"""
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 60s;
    }}
    server {{
        listen 127.0.0.1:{port} ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate {mine.cert};
        ssl_certificate_key {mine.key};
        ssl_client_certificate {peer.cert};
        ssl_verify_client on;
        ssl_session_tickets off;
        location / {{
            proxy_pass http://backend;
{_PROXY}
        }}
    }}"""
    return _main(directory, "back", http, access_log=access_log)


class Nginx:
    """One nginx (master + one worker) in the foreground; `with` starts and stops it."""

    def __init__(self, directory: Path, name: str, config: str, port: int) -> None:
        self.directory = directory
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.conf = directory / f"{name}.conf"
        self.conf.write_text(config)
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        log = (self.directory / f"{self.name}.stderr").open("ab")
        with log:
            self.proc = subprocess.Popen(
                [binary, "-p", str(self.directory), "-c", str(self.conf),
                 "-e", str(self.directory / f"{self.name}.error.log")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        try:
            self._await_port()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _await_port(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx {self.name} exited:\n{self.errors()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                if self.worker_pid() is not None:
                    return
            time.sleep(0.02)
        raise RuntimeError(f"nginx {self.name} did not listen within {START_TIMEOUT}s")

    def errors(self) -> str:
        """What nginx wrote to its error log so far."""
        path = self.directory / f"{self.name}.error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    @property
    def pid(self) -> int:
        """The master's pid."""
        assert self.proc is not None
        return self.proc.pid

    def worker_pid(self) -> int | None:
        """The one worker's pid (the process that does the work)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError, ValueError):
            pids = [int(p) for p in children.read_text().split()]
            if pids:
                return pids[0]
        return None

    def __exit__(self, *exc: object) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def sparse_file(directory: Path, size: int) -> Iterator[Path]:
    """A file of `size` zero bytes that takes no disk space; nginx serves it from memory."""
    path = directory / "big.bin"
    with path.open("wb") as f:
        f.truncate(size)
    # The first read of a hole is slow (the kernel makes its pages): do it before measuring.
    buffer = bytearray(1 << 20)
    with path.open("rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)
