"""Listen for Wake-on-LAN packets on UDP port 9 inside a host: one JSON line per datagram.

Run inside a host (`ip netns exec`); prints `listening` once bound, then for each datagram
{"mac": MAC or null, "to": the address it was sent to, "from": its source, "t": monotonic}.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

from ollana.wake import WOL_PORT, mac_of_packet

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def main() -> None:
    """Print every datagram that reaches port 9 until stopped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)  # to tell a broadcast from a unicast
    sock.bind(("0.0.0.0", WOL_PORT))
    print("listening", flush=True)
    while True:
        data, ancillary, _, source = sock.recvmsg(2048, socket.CMSG_SPACE(12))
        to = None
        for level, kind, value in ancillary:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(value) >= 12:
                _, _, header_destination = struct.unpack("i4s4s", value[:12])
                to = socket.inet_ntoa(header_destination)
        line = {"mac": mac_of_packet(data), "to": to, "from": source[0], "t": time.monotonic()}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(0)
