"""A wiretap for the LAN tests: every frame through one switch port, appended to a file.

    python tap.py --iface PORT --out FILE      (run inside the switch's namespace)

Prints "tapping" once the raw socket is bound; stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

ETH_P_ALL = 0x0003


def main() -> None:
    """Copy frames to the file until told to stop."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--iface", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((args.iface, 0))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("tapping", flush=True)
    with open(args.out, "ab") as out:
        while True:
            frame = sock.recv(65536)
            out.write(len(frame).to_bytes(4, "big") + frame)
            out.flush()


if __name__ == "__main__":
    main()
