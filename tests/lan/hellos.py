"""A hello flood for the LAN tests: many made-up devices say hello to one server.

    python hellos.py --url https://HOST:PORT --count N [--forged]

Each hello carries a fresh certificate of ollana's profile (a new key each time), or with
--forged one whose self-signature is made with another key (what grinding an ID gives).
Prints one JSON line: how many hellos got each HTTP status, and the IDs sent.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import ssl
from collections import Counter

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ollana.identity import device_id_of
from ollana.identity.certs import create_certificate


def certificate(forged: bool) -> bytes:
    """A device certificate; forged: signed by a key that is not its own."""
    cert = create_certificate(ec.generate_private_key(ec.SECP256R1()))
    if forged:
        builder = (
            x509.CertificateBuilder()
            .subject_name(cert.subject)
            .issuer_name(cert.issuer)
            .public_key(cert.public_key())
            .serial_number(cert.serial_number)
            .not_valid_before(cert.not_valid_before_utc)
            .not_valid_after(cert.not_valid_after_utc)
        )
        for extension in cert.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
        cert = builder.sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.DER)


async def flood(url: str, count: int, forged: bool) -> dict[str, object]:
    """Say `count` hellos, one after another."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    statuses: Counter[int] = Counter()
    ids = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for _ in range(count):
            der = certificate(forged)
            ids.append(device_id_of(der))
            body = {"cert": base64.b64encode(der).decode(), "role": "client", "name": "flood"}
            async with session.post(f"{url}/ollana/v1/hello", json=body) as response:
                await response.read()
                statuses[response.status] += 1
    return {"statuses": {str(k): v for k, v in statuses.items()}, "ids": ids}


def main() -> None:
    """Run the flood and print what it got."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--forged", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(flood(args.url, args.count, args.forged))), flush=True)


if __name__ == "__main__":
    main()
