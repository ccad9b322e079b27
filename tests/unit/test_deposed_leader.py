"""A deposed leader's own uncommitted entry is never applied, and the proposal waiting on it never
answered "success", when the next leader reaches it with a snapshot instead of log entries.

The acknowledged write that was never applied: a leader cut off by a partition appended a PUT
(index i, its term t) and kept it; after the heal the new leader, whose log was compacted, sent
it a snapshot. Its first message (`serialized: None` while the dump is written, or a chunk)
carries no `prevLogIdx`, and PySyncObj's follower still took `min(leader's commit, own last
index)` as its commit index: it applied its own stale entry i, whose term matched the waiting
proposal's, so the proposal resolved SUCCESS; the snapshot then replaced the state.

Deterministic: one real SyncObj, ticked by hand, fed the messages of that story through the
receive hook the Replicator installs (its log-matching guard) — and, to show the story is the
real one, the same messages straight into PySyncObj."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.syncobj import _RAFT_STATE, FAIL_REASON

from raftsched.replication import RaftSettings, Replicator
from raftsched.state import State

from cluster import free_ports


class Writes(SyncObjConsumer):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.applied: list[str] = []

    @replicated  # type: ignore[untyped-decorator]
    def put(self, value: str) -> str:
        self.applied.append(value)
        return value


Deliver = Callable[[Any, dict[str, Any]], None]


@pytest.fixture
def deposed(tmp_path: Path) -> Iterator[tuple[SyncObj, Writes, Any]]:
    """A 2-node SyncObj that won term 1, so it leads alone and can commit nothing."""
    me, partner = (f"127.0.0.1:{p}" for p in free_ports(2))
    writes = Writes()
    conf = SyncObjConf(
        autoTick=False, raftMinTimeout=5, raftMaxTimeout=6, connectionTimeout=10, leaderFallbackTimeout=30
    )
    sync = SyncObj(me, [partner], conf=conf, consumers=[writes])
    try:
        sync.doTick(0)
        peer = next(iter(sync._SyncObj__otherNodes))
        sync._SyncObj__connectedNodes.add(peer)  # as if connected: a lone node stands for no election
        sync._SyncObj__raftElectionDeadline = 0  # time out now: stand as candidate for term 1
        sync.doTick(0)
        sync._SyncObj__onMessageReceived(peer, {"type": "response_vote", "term": 1})
        assert sync._SyncObj__raftState == _RAFT_STATE.LEADER
        yield sync, writes, peer
    finally:
        sync.destroy()


def _guarded(sync: SyncObj, tmp_path: Path) -> Deliver:
    """The receive hook a Replicator installs on its SyncObj."""
    settings = RaftSettings(
        self_addr="127.0.0.1:1",
        partner_addrs=(),
        secret="s",
        data_dir=tmp_path,
        raft_min_timeout_s=1,
        raft_max_timeout_s=2,
        append_entries_period_s=0.02,
        heartbeat_period_s=0.1,
        auto_tick_period_s=0.01,
        leader_fallback_timeout_s=0.4,
        connection_timeout_s=3.5,
        log_compaction_min_entries=100,
        log_compaction_min_time_s=60,
        fsync=False,
    )
    Replicator(settings, State())._guard_log_matching(sync)
    hook: Deliver = sync._SyncObj__transport._onMessageReceivedCallback
    return hook


def _story(sync: SyncObj, writes: Writes, peer: Any, deliver: Deliver) -> list[tuple[Any, int]]:
    """The PUT is proposed on the isolated leader; the next leader (term 2) sends its snapshot."""
    answers: list[tuple[Any, int]] = []
    writes.put("the PUT", callback=lambda result, reason: answers.append((result, reason)))
    sync.doTick(0)  # appended at (i, 1), waiting for a commit that a lone node cannot make
    stale_index = sync._SyncObj__getCurrentLogIndex()
    assert sync._SyncObj__raftLog[-1][2] == 1 and answers == []
    not_ready = {"type": "append_entries", "term": 2, "commit_index": stale_index + 50, "serialized": None}
    deliver(peer, not_ready)
    for _ in range(3):
        sync.doTick(0)
    assert sync._SyncObj__raftState == _RAFT_STATE.FOLLOWER
    return answers


def test_pysyncobj_alone_applies_the_stale_entry_and_answers_success(
    deposed: tuple[SyncObj, Writes, Any],
) -> None:
    sync, writes, peer = deposed
    answers = _story(sync, writes, peer, sync._SyncObj__onMessageReceived)
    assert answers == [("the PUT", FAIL_REASON.SUCCESS)] and writes.applied == ["the PUT"]


def test_the_guard_keeps_the_commit_index_where_no_prefix_was_proven(
    deposed: tuple[SyncObj, Writes, Any], tmp_path: Path
) -> None:
    sync, writes, peer = deposed
    commit_before = sync._SyncObj__raftCommitIndex
    answers = _story(sync, writes, peer, _guarded(sync, tmp_path))
    assert answers == [] and writes.applied == []
    assert sync._SyncObj__raftCommitIndex == commit_before
