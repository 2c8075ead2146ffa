"""Who may speak for a device: which announces and goodbyes are acted on (DESIGN §2).

Anyone on the LAN can put another device's ID in a datagram, from any address. For a
device this peer has paired, an announce or goodbye counts only when it carries a signature
that verifies against that device's certificate, and only for its current run (instance):
a goodbye of another run, or one older (by the sender's clock) than the run's last
announce, is a replay. For other devices only the address check of `Origins` applies;
they are never used, only listed as seen.

`Authority.check` returns "" for a datagram to act on, else the reason it is dropped:
"unsigned", "forged", "replay", or "duplicate" (another copy of a goodbye already taken:
it goes to every broadcast address). No I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ollana.discovery.origins import Origins
from ollana.discovery.protocol import Announce, Goodbye, Message, Signed
from ollana.discovery.signing import Verifier, cert_belongs_to

__all__ = ["ENDED_KEPT", "MAX_RUNS", "RUN_MEMORY", "Authority", "Runs"]

MAX_RUNS: Final = 1024  # paired devices whose current run is remembered
ENDED_KEPT: Final = 8  # earlier runs of one device remembered, to refuse their replays
# A run not heard for this long may be replaced by one whose clock is behind (a host
# that rebooted and has not set its clock yet); before, such a run counts as a replay.
RUN_MEMORY: Final = 60.0


@dataclass(slots=True)
class _Run:
    instance: str
    ts: float
    heard: float
    gone: bool = False
    ended: list[str] = field(default_factory=list)


class Runs:
    """The current run of each paired device, from its authenticated datagrams."""

    def __init__(self, max_devices: int = MAX_RUNS, memory: float = RUN_MEMORY) -> None:
        self._max = max_devices
        self._memory = memory
        self._runs: OrderedDict[str, _Run] = OrderedDict()

    def accept(self, msg: Announce | Goodbye, now: float) -> str:
        """ "" if an authenticated message belongs to the device's current run, else why not."""
        run = self._runs.get(msg.device)
        if isinstance(msg, Goodbye):
            if run is None or run.instance != msg.instance or msg.ts < run.ts:
                return "replay"
            if run.gone and msg.ts == run.ts:
                return "duplicate"
            run.ts, run.gone, run.heard = msg.ts, True, now
            return ""
        if run is None:
            self._runs[msg.device] = _Run(msg.instance, msg.ts, now)
            if len(self._runs) > self._max:
                self._runs.popitem(last=False)
            return ""
        if msg.instance in run.ended:
            return "replay"
        if msg.instance == run.instance:
            if msg.ts < run.ts:
                return "replay"
            run.ts, run.gone = msg.ts, False
        elif msg.ts > run.ts or run.gone or now - run.heard > self._memory:
            run.ended = [*run.ended[-(ENDED_KEPT - 1) :], run.instance]
            run.instance, run.ts, run.gone = msg.instance, msg.ts, False
        else:
            return "replay"
        run.heard = now
        self._runs.move_to_end(msg.device)
        return ""


class Authority:
    """Decides which announces and goodbyes to act on; see the module's docstring.

    `paired(device_id)` says whether a device is allowed here; `cert_of(device_id)` gives
    its certificate when the allow list knows it (else the one it sent is used, which its
    ID authenticates).
    """

    def __init__(
        self,
        paired: Callable[[str], bool] | None = None,
        cert_of: Callable[[str], bytes | None] | None = None,
    ) -> None:
        self._paired = paired
        self._cert_of = cert_of
        self._learned: OrderedDict[str, bytes] = OrderedDict()
        self._verifier = Verifier()
        self._runs = Runs()
        self.origins = Origins()

    def check(self, msg: Message, signed: Signed | None, host: str, now: float) -> str:
        """ "" to act on msg (heard from host, `signed` as split off its datagram), else why not."""
        if not isinstance(msg, Announce | Goodbye):
            return ""
        if self._paired is None or not self._paired(msg.device):
            if isinstance(msg, Announce):
                self.origins.announced(msg, host)
                return ""
            if self.origins.genuine(msg, host):
                return ""
            return "duplicate" if self.origins.repeated(msg, host) else "forged"
        if signed is None:
            return "unsigned"
        cert = self._cert(msg)
        if cert is None or not self._verifier.verify(cert, signed.data, signed.signature):
            return "forged"
        return self._runs.accept(msg, now)

    def _cert(self, msg: Announce | Goodbye) -> bytes | None:
        known = self._cert_of(msg.device) if self._cert_of is not None else None
        if known is not None:
            return known
        if msg.cert is not None and cert_belongs_to(msg.cert, msg.device):
            self._learned[msg.device] = msg.cert
            self._learned.move_to_end(msg.device)
            if len(self._learned) > MAX_RUNS:
                self._learned.popitem(last=False)
            return msg.cert
        return self._learned.get(msg.device)
