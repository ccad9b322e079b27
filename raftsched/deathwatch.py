"""Fast, safe death detection: tell a peer that is certainly dead from one that is merely silent.

The leader commits a node down after `node_timeout_s` of silence (DESIGN.md §4): a node that is
paused, starved or cut off may come back, so silence alone must last. A *dead* node says so at
once: when its process ends (kill -9 included) the kernel resets its connections and closes its
listening ports, so connecting to them is refused (ECONNREFUSED) instead of timing out. And a node
process that is gone runs nothing: every task runs under a supervisor that kills the task's whole
tree when the node dies (executors/_supervisor.py). So:

    certainly dead  <=>  the leader's Raft connection to it is down, and two probes at least
                         `confirm_s` apart, each made while it stayed down, found both its Raft
                         port and its HTTP port refusing connections.

A paused node (SIGSTOP) still has its ports bound: the kernel accepts connections into the listen
backlog, so the probe connects and proves nothing. A partition that drops packets makes the probe
time out: nothing either. Those keep the timeout. A partition that *rejects* with TCP resets
looks dead; docs/design.md ("Death detection") says why that is acceptable.

The probes run as tasks beside the scheduler's tick (a dropped SYN would otherwise hold the tick
for the probe's timeout); `check` only reads the evidence gathered so far and starts the next
probe. The clock and the probe are injected, so the rule is unit-tested without sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .records import NodeRecord

__all__ = ["DeathWatch", "Probe", "refuses_connections"]

Probe = Callable[[NodeRecord], Awaitable[bool]]  # True: the node's Raft and HTTP ports both refused

PROBE_TIMEOUT_S = 0.25  # a connect on loopback or a LAN answers (or is refused) far sooner


@dataclass(slots=True)
class _Evidence:
    """What the probes of one suspect found since its Raft connection went down."""

    first_refused: float | None = None  # monotonic start of the first probe that was refused
    last_refused: float | None = None  # ... and of the latest one (refusals are consecutive)
    probed_at: float = -math.inf  # monotonic start of the latest probe
    flight: asyncio.Future[bool] | None = None


class DeathWatch:
    """The leader's evidence per peer; `check` once per tick for every peer that is up."""

    def __init__(
        self,
        probe: Probe,
        monotonic: Callable[[], float],
        *,
        confirm_s: float = 0.2,
        probe_every_s: float = 0.1,
    ) -> None:
        self.probe = probe
        self.monotonic = monotonic
        self.confirm_s = confirm_s
        self.probe_every_s = probe_every_s
        self._evidence: dict[str, _Evidence] = {}

    def check(self, node: NodeRecord, connected: bool) -> bool:
        """Is `node` certainly dead, by the evidence so far? Starts the next probe when one is due.

        `connected`: the leader's Raft connection to it is up now. Any connection, and any probe
        that was not refused, wipes the evidence: refusals count only while nothing else was
        heard in between."""
        if connected:
            self.forget(node.id)
            return False
        evidence = self._evidence.setdefault(node.id, _Evidence())
        now = self.monotonic()
        if evidence.flight is None and now - evidence.probed_at >= self.probe_every_s:
            evidence.probed_at = now
            flight = evidence.flight = asyncio.ensure_future(self.probe(node))
            flight.add_done_callback(lambda done: self._probed(node.id, evidence, now, done))
        first, last = evidence.first_refused, evidence.last_refused
        return first is not None and last is not None and last - first >= self.confirm_s

    def _probed(self, node_id: str, evidence: _Evidence, started: float, done: asyncio.Future[bool]) -> None:
        evidence.flight = None
        if self._evidence.get(node_id) is not evidence:
            return  # forgotten meanwhile (it reconnected, or a new term began): stale evidence
        refused = not done.cancelled() and done.exception() is None and done.result()
        if not refused:
            evidence.first_refused = evidence.last_refused = None
            return
        if evidence.first_refused is None:
            evidence.first_refused = started
        evidence.last_refused = started

    def forget(self, node_id: str) -> None:
        evidence = self._evidence.pop(node_id, None)
        if evidence is not None and evidence.flight is not None:
            evidence.flight.cancel()

    def clear(self) -> None:
        for node_id in list(self._evidence):
            self.forget(node_id)


async def refuses_connections(node: NodeRecord, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Do `node`'s Raft port and then its HTTP port both refuse a TCP connect? (A connect that
    succeeds is closed at once, before a byte is sent.)"""
    raft_host, _, raft_port = node.raft.rpartition(":")
    http = urlsplit(node.http)
    http_port = http.port or (443 if http.scheme == "https" else 80)
    return await _refused(raft_host, int(raft_port), timeout_s) and await _refused(
        http.hostname or "", http_port, timeout_s
    )


async def _refused(host: str, port: int, timeout_s: float) -> bool:
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        return True
    except (OSError, TimeoutError, ValueError):
        return False  # unreachable, timed out, unresolvable: silence, not death
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return False
