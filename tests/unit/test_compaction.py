"""Compaction turns (compaction.py): each node snapshots at its own log positions and times, on a
fake SyncObj with an injected clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from raftsched.compaction import CompactionTurns, next_turn

EVERY, EVERY_S = 300, 60.0


@dataclass
class FakeNode:
    id: str

    def __hash__(self) -> int:
        return hash(self.id)


class FakeSerializer:
    def __init__(self) -> None:
        self._Serializer__pid = 0


class FakeSync:
    """The fields CompactionTurns reads; `forceLogCompaction` compacts at once, as a writer that
    finished within the tick would (the log is cut, the time noted)."""

    def __init__(self, me: str, others: list[str], now: list[float]) -> None:
        self.now = now
        self._SyncObj__selfNode = FakeNode(me)
        self._SyncObj__otherNodes = {FakeNode(o) for o in others}
        self._SyncObj__raftLastApplied = 0
        self._SyncObj__raftLog: list[int] = []
        self._SyncObj__lastSerializedTime = now[0]
        self._SyncObj__serializer = FakeSerializer()
        self.compacted_at: list[tuple[int, float]] = []

    def append(self, n: int) -> None:
        for _ in range(n):
            self._SyncObj__raftLastApplied += 1
            self._SyncObj__raftLog.append(self._SyncObj__raftLastApplied)

    def forceLogCompaction(self) -> None:  # noqa: N802 - PySyncObj's name
        self.compacted_at.append((self._SyncObj__raftLastApplied, self.now[0]))
        self._SyncObj__raftLog = self._SyncObj__raftLog[-1:]
        self._SyncObj__lastSerializedTime = self.now[0]


ADDRS = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"]


def rig(me: str, now: list[float]) -> tuple[FakeSync, CompactionTurns]:
    sync = FakeSync(me, [a for a in ADDRS if a != me], now)
    return sync, CompactionTurns(sync, every_entries=EVERY, every_s=EVERY_S, clock=lambda: now[0])


@pytest.mark.parametrize(
    ("position", "rank", "expected"),
    [(0, 0, 300), (0, 1, 100), (0, 2, 200), (100, 1, 400), (99, 1, 100), (299, 0, 300), (300, 0, 600)],
)
def test_entry_turns_are_spaced_by_rank(position: int, rank: int, expected: int) -> None:
    assert next_turn(position, 300, rank, 3) == expected


def test_time_turns_are_spaced_by_rank() -> None:
    assert next_turn(1000.0, 60.0, 0, 3) == 1020.0
    assert next_turn(1000.0, 60.0, 1, 3) == 1040.0
    assert next_turn(1000.0, 60.0, 2, 3) == 1060.0
    assert next_turn(1020.0, 60.0, 0, 3) == 1080.0  # strictly after


def test_three_nodes_on_one_log_compact_at_different_entries() -> None:
    now = [1000.0]
    rigs = [rig(a, now) for a in ADDRS]
    for step in range(1, 1201):  # 1,200 entries, one per 10 ms (12 s: no time turn)
        now[0] = 1000.0 + step * 0.01
        for sync, turns in rigs:
            sync.append(1)
            turns()
    at = [[idx for idx, _ in sync.compacted_at] for sync, _ in rigs]
    # The first turn of each is skipped where the log is still short (under half a period).
    assert at == [[300, 600, 900, 1200], [400, 700, 1000], [200, 500, 800, 1100]]
    assert [t.last_turn_index for _, t in rigs] == [1200, 1000, 1100]
    assert [t.turns_taken for _, t in rigs] == [4, 3, 4]


def test_idle_nodes_compact_at_different_times_and_only_when_stale() -> None:
    now = [1000.0]
    rigs = [rig(a, now) for a in ADDRS]
    for sync, turns in rigs:
        sync.append(3)
        turns()
    while now[0] < 1000.0 + 2 * EVERY_S:
        now[0] += 0.5
        for _, turns in rigs:
            turns()
    times = [[t for _, t in sync.compacted_at] for sync, _ in rigs]
    # n1's first turn comes 20 s after the last compaction (the start): under half a period.
    assert times == [[1080.0], [1040.0, 1100.0], [1060.0, 1120.0]]


def test_no_turn_while_a_writer_runs_and_none_right_after_a_compaction() -> None:
    now = [0.0]
    sync, turns = rig(ADDRS[0], now)
    turns()  # first turn: entry 300
    sync._SyncObj__serializer._Serializer__pid = 4242
    sync.append(301)
    turns()
    assert sync.compacted_at == []  # the running writer serves this turn
    sync._SyncObj__serializer._Serializer__pid = 0
    sync._SyncObj__raftLog = sync._SyncObj__raftLog[-10:]  # it finished and cut the log
    sync.append(299)
    turns()  # at 600, but only 309 entries since the cut: more than half a period, so it compacts
    assert [idx for idx, _ in sync.compacted_at] == [600]
    sync.append(200)
    sync._SyncObj__raftLog = sync._SyncObj__raftLog[-5:]  # a backstop compaction just ran
    sync.append(100)
    turns()  # turn 900: the log holds 105 entries, under half a period
    assert [idx for idx, _ in sync.compacted_at] == [600]


def test_a_new_voter_moves_the_turns() -> None:
    now = [0.0]
    sync, turns = rig(ADDRS[2], now)
    assert turns.rank() == (2, 3)
    sync._SyncObj__otherNodes.add(FakeNode("127.0.0.1:7100"))
    assert turns.rank() == (3, 4)
    turns()
    sync.append(EVERY + EVERY * 3 // 4)
    turns()
    assert [idx for idx, _ in sync.compacted_at] == [EVERY + EVERY * 3 // 4]
    assert turns.last_turn_index == EVERY * 3 // 4
