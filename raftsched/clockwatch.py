"""The leader's check of every node's clock (DESIGN.md §4).

Workers start runs by their own wall clock, so a node whose clock is off starts runs early or
late by that much. The leader measures each node's offset over the admin API the way NTP does
(`GET /v1/health` carries the node's `time_ms`; offset = peer time − midpoint of the request,
keeping the sample with the shortest round trip), and commits the offsets. A node further than
`max_clock_offset_s` from the cluster is `clock_ok = false`: reported unhealthy, given no new
runs, and its pending runs move (running ones finish).

"The cluster's clock" is the median of all the nodes' clocks, the leader's included, not the
leader's clock alone (DESIGN.md says "from the leader's clock"): with a leader whose own clock is
off, measuring from it would mark every healthy follower bad and leave the runs to the one node
with the wrong time. The offsets committed and reported are from that median too. A leader that
finds its own clock off hands leadership over: it plans the fires by its clock.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from .clock import Clock
from .commands import CommandType, encode
from .errors import RaftschedError
from .records import NodeRecord
from .state import State

__all__ = ["ClockCheck", "ClockSample", "ClockWatch", "clock_verdicts", "sample"]

log = logging.getLogger(__name__)

REPORT_CHANGE_MS = 100  # a measured offset this far from the committed one is committed again


@dataclass(frozen=True, slots=True)
class ClockSample:
    offset_ms: float  # the peer's clock minus ours
    rtt_ms: float


def sample(sent_ms: float, peer_ms: float, received_ms: float) -> ClockSample:
    """NTP's estimate from one request: the peer read its clock half a round trip after sending."""
    return ClockSample(offset_ms=peer_ms - (sent_ms + received_ms) / 2, rtt_ms=received_ms - sent_ms)


@dataclass(frozen=True, slots=True)
class ClockCheck:
    node: str
    offset_ms: int  # from the cluster's clock: the median of all the nodes' clocks
    ok: bool  # within the bound


def clock_verdicts(offsets: Mapping[str, float], leader: str, bound_ms: float) -> list[ClockCheck]:
    """Judge every measured node (and the leader, offset 0) against the median of all clocks."""
    every = {leader: 0.0, **offsets}
    median = statistics.median(every.values())
    return [
        ClockCheck(node=n, offset_ms=round(off - median), ok=abs(off - median) <= bound_ms)
        for n, off in sorted(every.items())
    ]


Probe = Callable[[NodeRecord], Awaitable[float]]  # the peer's `time_ms`, read over its admin API


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockWatchSettings:
    node_id: str
    max_offset_s: float = 1.0
    period_s: float = 5.0
    samples: int = 3


class ClockWatch:
    """Runs on every node; works while `leading()` returns the term this node has begun."""

    def __init__(
        self,
        settings: ClockWatchSettings,
        state: State,
        propose: Callable[[bytes], Awaitable[dict[str, object]]],
        clock: Clock,
        probe: Probe,
        leading: Callable[[], int],
        hand_over: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.propose = propose
        self.clock = clock
        self.probe = probe
        self.leading = leading
        self.hand_over = hand_over  # transfers leadership away from this node

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.settings.period_s)
            term = self.leading()
            if term:
                try:
                    await self.check(term)
                except RaftschedError as exc:  # no quorum, or the term ended: next period
                    log.info("clock check not committed: %s", exc)

    async def measure(self, node: NodeRecord) -> ClockSample | None:
        """The sample with the shortest round trip of a few, or None if the node did not answer."""
        best: ClockSample | None = None
        for _ in range(self.settings.samples):
            sent = self.clock.now_ms()
            try:
                peer = await self.probe(node)
            except (TimeoutError, OSError, ValueError) as exc:
                log.debug("clock probe of %s failed: %s", node.id, exc)
                return best
            s = sample(sent, peer, self.clock.now_ms())
            if best is None or s.rtt_ms < best.rtt_ms:
                best = s
        return best

    async def check(self, term: int) -> list[ClockCheck]:
        """Measure every node that is up, and commit what changed."""
        with self.state.lock:
            nodes = [n for n in self.state.nodes.values() if n.up and n.id != self.settings.node_id]
            committed = {n.id: (n.clock_offset_ms, n.clock_ok) for n in self.state.nodes.values()}
        bound_ms = self.settings.max_offset_s * 1000
        measured = await asyncio.gather(*(self.measure(n) for n in nodes))
        offsets = {
            n.id: s.offset_ms
            for n, s in zip(nodes, measured, strict=True)
            # A round trip longer than the bound cannot tell a good clock from a bad one.
            if s is not None and s.rtt_ms <= bound_ms
        }
        if len(offsets) + 1 < max(3, (len(nodes) + 1) // 2 + 1):
            # Two clocks cannot tell which one is wrong (their median is the midpoint: both would
            # look off), nor can a minority of them: keep the verdicts until enough nodes answer.
            log.info("clock check skipped: %d of %d nodes answered", len(offsets), len(nodes))
            return []
        checks = clock_verdicts(offsets, self.settings.node_id, bound_ms)
        changed = [
            c
            for c in checks
            if c.node in committed
            and (
                committed[c.node][1] != c.ok
                or committed[c.node][0] is None
                or abs(c.offset_ms - committed[c.node][0]) >= REPORT_CHANGE_MS  # type: ignore[operator]
            )
        ]
        for c in changed:
            if committed[c.node][1] != c.ok:
                log.warning(
                    "node %s clock is %+d ms from the leader's: %s",
                    c.node,
                    c.offset_ms,
                    "back within bounds" if c.ok else f"beyond {bound_ms:.0f} ms of the cluster, no new runs",
                    extra={"node": c.node},
                )
        if changed:
            await self.propose(
                encode(
                    CommandType.NODE_CLOCKS,
                    {
                        "term": term,
                        "now_ms": self.clock.now_ms(),
                        "clocks": [{"node": c.node, "offset_ms": c.offset_ms, "ok": c.ok} for c in changed],
                    },
                )
            )
        mine = next(c for c in checks if c.node == self.settings.node_id)
        if not mine.ok and len(checks) > 2 and self.hand_over is not None:
            log.warning("this node's clock is off the cluster's: handing leadership over")
            await self.hand_over()
        return checks
