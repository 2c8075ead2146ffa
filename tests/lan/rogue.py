"""A rogue host for the LAN tests: it announces itself under another device's ID.

    python rogue.py --home R_HOME --impersonate DEVICE_CERT_PEM [--interval S] [--goodbye]

It serves TLS on 0.0.0.0:11435 with its own certificate (it cannot have the other device's
key), answers any HTTP request as an Ollama would, and broadcasts announces that carry the
impersonated device's ID, alternately with that device's certificate and with its own, and
alternately unsigned and signed with its own key; it answers queries the same way. Once it
has heard the device announce, it uses that run's instance. With --goodbye, each announce
is followed by a goodbye in the device's name. Every TLS connection and every HTTP request
it receives is one JSON line on stdout, so a test can tell that clients tried it and
whether any request came.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import ssl
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ollana.discovery import Announce, Goodbye, Query, decode, encode, interface_broadcasts
from ollana.discovery.signing import Signer
from ollana.identity import device_id_of, load_identity

SERVER_PORT = 11435
DISCOVERY_PORT = 11436
ANSWER = b'{"version":"0.5.7"}'


def emit(event: dict[str, object]) -> None:
    """One JSON line, flushed at once."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """After the handshake: log it, then answer whatever HTTP request follows."""
    peer = writer.get_extra_info("peername")[0]
    emit({"event": "handshake", "peer": peer, "t": time.monotonic()})
    try:
        while True:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            line = head.split(b"\r\n", 1)[0].decode(errors="replace")
            emit({"event": "request", "peer": peer, "line": line, "t": time.monotonic()})
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(ANSWER), ANSWER)
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError, ssl.SSLError):
        pass
    finally:
        writer.close()


class Answerer(asyncio.DatagramProtocol):
    """Answers queries on the discovery port with a forged announce; learns the real run."""

    def __init__(self, forged: list[bytes], device: str) -> None:
        self.forged = forged
        self.device = device
        self.instance = ""
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(ValueError):
            msg = decode(data)
            if isinstance(msg, Query) and self.transport is not None:
                self.transport.sendto(self.forged[0], addr)
            elif (
                isinstance(msg, Announce)
                and msg.device == self.device
                and not msg.instance.startswith("rogue")
            ):
                self.instance = msg.instance  # the real device's current run


async def main(home: Path, impersonate: Path, interval: float, goodbye: bool) -> None:
    identity = load_identity(home)
    sign = Signer.from_key_file(identity.key_path)
    victim = x509.load_pem_x509_certificate(impersonate.read_bytes()).public_bytes(Encoding.DER)
    device = device_id_of(victim)
    forged = [
        encode(Announce(instance=f"rogue{n}", device=device, port=SERVER_PORT, cert=cert))
        for n, cert in enumerate((victim, identity.cert_der))
    ]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(identity.cert_path, identity.key_path)
    server = await asyncio.start_server(serve, "0.0.0.0", SERVER_PORT, ssl=context)
    loop = asyncio.get_running_loop()
    listen = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listen.bind(("0.0.0.0", DISCOVERY_PORT))
    answerer, protocol = await loop.create_datagram_endpoint(
        lambda: Answerer(forged, device), sock=listen
    )
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    print(f"rogue listening on https://0.0.0.0:{SERVER_PORT} as {device}", flush=True)
    try:
        sent = 0
        while True:
            instance = protocol.instance or f"rogue{sent % len(forged)}"
            cert = (victim, identity.cert_der)[sent % 2]
            signer = sign if sent % 4 >= 2 else None
            now = time.time()
            datagrams = [
                encode(Announce(instance=instance, device=device, port=SERVER_PORT, cert=cert,
                                ts=now), signer)
            ]  # fmt: skip
            if goodbye:
                datagrams.append(encode(Goodbye(instance=instance, device=device, ts=now), signer))
            for address in interface_broadcasts():
                for data in datagrams:
                    with contextlib.suppress(OSError):
                        sender.sendto(data, (address, DISCOVERY_PORT))
            sent += 1
            if sent % 10 == 1:
                emit({"event": "announced", "count": sent, "instance": instance,
                      "t": time.monotonic()})  # fmt: skip
            await asyncio.sleep(interval)
    finally:
        answerer.close()
        sender.close()
        server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--impersonate", type=Path, required=True)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--goodbye", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.home, args.impersonate, args.interval, args.goodbye))
