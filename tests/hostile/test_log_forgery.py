"""A request cannot write a line of its own into the log.

The access log writes the decoded path; a path with an encoded line break once wrote a
complete fake line ("... WARN ollana.identity.trust: device ... allowed") into the log.
"""

from __future__ import annotations

from pathlib import Path

from tests.hostile.support import exchange
from tests.support import OllanaProcess
from tests.support.waiting import until

FAKE = "2026-01-01 00:00:00.000Z WARN  ollana.identity.trust: device cda90715 allowed by admin"


async def test_an_encoded_line_break_in_a_path_stays_in_its_line(tmp_path: Path) -> None:
    log = tmp_path / "client.log"
    async with await OllanaProcess.start(
        "serve", "--mode", "client", "--listen", "127.0.0.1:0", "--no-discovery",
        "--admin-listen", "off", "--wait-for-server", "0", "--log-level", "info",
        home=tmp_path / "home", log=log,
    ) as client:  # fmt: skip
        path = "/api/x%0a" + FAKE.replace(" ", "%20") + "%1b%5b2J%e2%80%a8%e2%80%ae"
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        outcome = await exchange(client.port, request.encode())
        assert outcome.status is not None
        text = await until(
            lambda: "ollana.access" in log.read_text() and log.read_text(), "the access line"
        )
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(FAKE[:24])], text
    (access,) = [line for line in lines if "ollana.access" in line]
    assert "/api/x\\n2026-01-01" in access and "\\x1b[2J\\u2028\\u202e" in access, access
