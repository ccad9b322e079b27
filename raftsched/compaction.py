"""Compaction turns: the nodes of a cluster snapshot their state at different points.

PySyncObj compacts when its log is longer than `logCompactionMinEntries` or older than
`logCompactionMinTime`. Every node holds the same log, so every node crossed the entry threshold
at the same entry, and nodes started together crossed the time threshold together: all forked
their snapshot writer at once. On one machine (a development cluster, the benchmark) three
writers then took a core, and every node's runs came seconds late during a burst of API writes
(docs/performance.md, item 15). PySyncObj's own `logCompactionSplit` staggers by time windows
only, and holds back even a forced compaction until the node's window comes.

Here each node takes its turn at its own places instead: the node of rank `r` among `n` voters
(ranked by Raft address, the same order on every node) compacts when its applied index passes
`k * every_entries + r * every_entries // n`, and when the monotonic clock passes
`k * every_s + r * every_s / n`. Entry turns are the same on every machine; time turns line up
within one machine, where the monotonic clock is shared, which is where turns matter. A turn is
skipped when the node compacted recently (half a period), so entry and time turns do not add up.
PySyncObj's own thresholds stay as a backstop at twice the periods.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["CompactionTurns", "next_turn"]

log = logging.getLogger(__name__)

BACKSTOP = 2  # PySyncObj's own thresholds, as multiples of the turn periods


def next_turn(position: float, period: float, rank: int, count: int) -> float:
    """The first turn strictly after `position` for the node of `rank` among `count`: turns are
    `k * period + rank * period / count` (integral when `period` and `position` are)."""
    offset = rank * period // count if isinstance(period, int) else rank * period / count
    return (position - offset) // period * period + period + offset


class CompactionTurns:
    """A PySyncObj tick callback (it runs on the tick thread) that forces this node's compaction
    at its turns. `sync` is the SyncObj; its private fields are read the way `PromptSender` does."""

    def __init__(
        self,
        sync: Any,
        *,
        every_entries: int,
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sync, self.every_entries, self.every_s, self.clock = sync, every_entries, every_s, clock
        self._entry_turn: int | None = None
        self._time_turn: float | None = None
        self.turns_taken = 0  # compactions this callback started
        self.last_turn_index = 0  # the entry turn of the last one started by entries (0: none yet)

    def rank(self) -> tuple[int, int]:
        """(this node's rank, voters): by Raft address, the order every node sees."""
        me = self.sync._SyncObj__selfNode.id
        ids = sorted({me, *(node.id for node in self.sync._SyncObj__otherNodes)})
        return ids.index(me), len(ids)

    def __call__(self) -> None:
        sync = self.sync
        applied, now = int(sync._SyncObj__raftLastApplied), self.clock()
        if self._entry_turn is None or self._time_turn is None:
            rank, count = self.rank()
            self._entry_turn = int(next_turn(applied, self.every_entries, rank, count))
            self._time_turn = next_turn(now, self.every_s, rank, count)
            return
        by_entries, by_time = applied >= self._entry_turn, now >= self._time_turn
        if not (by_entries or by_time):
            return
        turn = self._entry_turn
        rank, count = self.rank()
        if by_entries:
            self._entry_turn = int(next_turn(applied, self.every_entries, rank, count))
        if by_time:
            self._time_turn = next_turn(now, self.every_s, rank, count)
        if sync._SyncObj__serializer._Serializer__pid != 0:
            return  # a writer is running: this turn is its
        long_log = len(sync._SyncObj__raftLog) > self.every_entries // 2
        stale = now - sync._SyncObj__lastSerializedTime > self.every_s / 2
        if (by_entries and long_log) or (by_time and stale):
            sync.forceLogCompaction()
            self.turns_taken += 1
            if by_entries and long_log:
                self.last_turn_index = turn
            log.debug(
                "compaction turn",
                extra={"applied": applied, "entry_turn": turn, "rank": rank, "voters": count},
            )
