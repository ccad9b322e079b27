"""The leader's send policy on top of PySyncObj: new entries and commit indexes every batch period,
heartbeats only every heartbeat period when idle (replication.PromptSender), on a fake SyncObj."""

from __future__ import annotations

from typing import Any

from pysyncobj.syncobj import _RAFT_STATE

from raftsched.replication import PromptSender, TickPacer

BATCH, HEARTBEAT = 0.02, 0.1


class FakeConf:
    autoTickPeriod = 0.01  # noqa: N815 - PySyncObj's name


class FakePoller:
    def __init__(self) -> None:
        self.subscribed: dict[int, Any] = {}

    def subscribe(self, descr: int, callback: Any, event_mask: int) -> None:
        self.subscribed[descr] = callback


class FakeSync:
    """The attributes PromptSender reads, and a send that behaves as PySyncObj's: it sends every
    entry a connected follower lacks and schedules the next heartbeat."""

    def __init__(self, now: list[float]) -> None:
        self.now = now
        self.log: list[int] = [1, 2, 3]
        self.sent: list[tuple[float, int, int]] = []  # (time, last index sent, commit index)
        self._SyncObj__raftState = _RAFT_STATE.LEADER
        self._SyncObj__raftCommitIndex = 3
        self._SyncObj__otherNodes = {"b", "c"}
        self._SyncObj__connectedNodes = {"b", "c"}
        self._SyncObj__raftNextIndex = {"b": 4, "c": 4}
        self._SyncObj__newAppendEntriesTime = now[0] + HEARTBEAT
        self._SyncObj__conf = FakeConf()
        self._poller = FakePoller()

    def _SyncObj__getCurrentLogIndex(self) -> int:  # noqa: N802 - PySyncObj's mangled name
        return self.log[-1]

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802
        nxt: dict[str, int] = self._SyncObj__raftNextIndex
        for node in self._SyncObj__connectedNodes:
            nxt[node] = self.log[-1] + 1
        self.sent.append((self.now[0], self.log[-1], self._SyncObj__raftCommitIndex))
        self._SyncObj__newAppendEntriesTime = self.now[0] + HEARTBEAT

    def heartbeat_due(self) -> bool:
        return self.now[0] >= self._SyncObj__newAppendEntriesTime


def ticks(sync: FakeSync, sender: PromptSender, until: float, step: float = 0.001) -> None:
    """PySyncObj's tick in miniature: its own heartbeat when due, then the tick callbacks."""
    while sync.now[0] < until - 1e-9:
        sync.now[0] = round(sync.now[0] + step, 6)
        if sync.heartbeat_due():
            sync._SyncObj__sendAppendEntries()
        sender()


def make(**changes: Any) -> tuple[FakeSync, PromptSender, list[float]]:
    now = [100.0]
    sync = FakeSync(now)
    for key, value in changes.items():
        setattr(sync, f"_SyncObj__{key}", value)
    return sync, PromptSender(sync, batch_s=BATCH, heartbeat_s=HEARTBEAT, clock=lambda: now[0]), now


def test_an_idle_leader_sends_only_heartbeats() -> None:
    sync, sender, _ = make()
    ticks(sync, sender, 101.0)
    assert sender.sends == 0
    assert len(sync.sent) == 10  # PySyncObj's heartbeats, one per heartbeat period


def test_new_entries_go_out_on_the_next_tick_after_an_idle_spell() -> None:
    sync, sender, now = make()
    ticks(sync, sender, 100.05)
    sync.log.append(4)
    ticks(sync, sender, 100.051)
    assert sync.sent[-1] == (100.051, 4, 3)


def test_a_busy_leader_sends_at_most_once_per_batch_period() -> None:
    sync, sender, now = make()
    while now[0] < 101.0:
        sync.log.append(sync.log[-1] + 1)  # a new entry every tick
        ticks(sync, sender, now[0] + 0.001)
    gaps = [b[0] - a[0] for a, b in zip(sync.sent, sync.sent[1:], strict=False)]
    assert 45 <= len(sync.sent) <= 51
    assert min(gaps) >= BATCH - 1e-9
    assert sync.sent[-1][1] >= sync.log[-1] - 20  # every entry goes out within a batch period


def test_a_commit_index_the_followers_have_not_heard_is_sent() -> None:
    sync, sender, now = make()
    ticks(sync, sender, 100.05)
    sync._SyncObj__raftCommitIndex = 4  # the followers acknowledged entry 4
    ticks(sync, sender, 100.051)
    assert sync.sent[-1] == (100.051, 3, 4)
    ticks(sync, sender, 100.09)
    assert sender.sends == 1  # heard: nothing more until the heartbeat


def test_a_disconnected_follower_does_not_keep_the_leader_sending() -> None:
    sync, sender, _ = make(connectedNodes={"b"}, raftNextIndex={"b": 4, "c": 1})
    ticks(sync, sender, 101.0)
    assert sender.sends == 0


def test_a_follower_behind_is_served_every_batch_period() -> None:
    now = [100.0]
    sync = StaysBehind(now)  # say, a snapshot in transfer
    sync._SyncObj__raftNextIndex = {"b": 4, "c": 2}
    sender = PromptSender(sync, batch_s=BATCH, heartbeat_s=HEARTBEAT, clock=lambda: now[0])
    ticks(sync, sender, 101.0)
    assert 45 <= sender.sends <= 50


class StaysBehind(FakeSync):
    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802
        self.sent.append((self.now[0], 0, 0))
        self._SyncObj__newAppendEntriesTime = self.now[0] + HEARTBEAT


def test_followers_and_candidates_do_not_send() -> None:
    sync, sender, _ = make(raftState=_RAFT_STATE.FOLLOWER)
    sync.log.append(4)
    sender()
    assert sender.sends == 0 and sync.sent == []


# ---------------------------------------------------------------- the tick period (TickPacer)


def pacer_rig() -> tuple[FakeSync, TickPacer, list[float]]:
    sync, _, now = make()
    return sync, TickPacer(sync, busy_s=0.01, idle_s=0.05, busy_for_s=1.0, clock=lambda: now[0]), now


def test_an_idle_node_ticks_slowly_and_a_leader_appending_entries_fast() -> None:
    sync, pacer, now = pacer_rig()
    pacer()
    assert sync._SyncObj__conf.autoTickPeriod == 0.01  # a new leader: its log just changed
    now[0] += 1.1
    pacer()
    assert sync._SyncObj__conf.autoTickPeriod == 0.05  # nothing appended for a second
    sync.log.append(4)
    pacer()
    assert sync._SyncObj__conf.autoTickPeriod == 0.01
    now[0] += 0.5
    pacer()
    assert sync._SyncObj__conf.autoTickPeriod == 0.01  # still within a second of the append
    sync._SyncObj__raftState = _RAFT_STATE.FOLLOWER
    pacer()
    assert sync._SyncObj__conf.autoTickPeriod == 0.05  # followers are woken by messages


def test_a_wake_up_from_another_thread_makes_the_poll_return() -> None:
    import select

    sync, pacer, _ = pacer_rig()
    pacer.wake()  # before the tick thread subscribed: nothing to wake, no error
    pacer()
    ((read_fd, drain),) = sync._poller.subscribed.items()
    poll = select.poll()
    poll.register(read_fd, select.POLLIN)
    assert poll.poll(0) == []
    for _ in range(3):
        pacer.wake()
    assert poll.poll(0) == [(read_fd, select.POLLIN)]
    drain(read_fd, 0)
    assert poll.poll(0) == []  # drained: the next poll waits again
    for _ in range(100_000):
        pacer.wake()  # a full pipe is a pending wake-up, not an error
