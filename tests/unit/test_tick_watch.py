"""The Raft tick thread's pulse, which /v1/health reports (replication.TickWatch)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftsched.replication import RaftSettings, Replicator, TickWatch
from raftsched.state import State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TickingSync:
    """The part of SyncObj that `tick_alive` reads: its tick thread exists."""

    def tick_thread_alive(self) -> bool:
        return True


def settings(tmp_path: Path) -> RaftSettings:
    return RaftSettings(
        self_addr="127.0.0.1:7101",
        partner_addrs=(),
        secret="s" * 40,
        data_dir=tmp_path,
        raft_min_timeout_s=0.4,
        raft_max_timeout_s=1.2,
        append_entries_period_s=0.02,
        heartbeat_period_s=0.1,
        auto_tick_period_s=0.01,
        leader_fallback_timeout_s=0.4,
        connection_timeout_s=3.5,
        log_compaction_min_entries=5000,
        log_compaction_min_time_s=300,
        fsync=False,
    )


def test_the_age_counts_from_the_last_stamp() -> None:
    clock = Clock()
    watch = TickWatch(clock)
    clock.now += 0.5
    assert watch.age_s() == 0.5
    watch.stamp()
    clock.now += 0.01
    assert round(watch.age_s(), 6) == 0.01


def test_a_tick_thread_that_stops_ticking_is_not_alive(tmp_path: Path) -> None:
    clock = Clock()
    replicator = Replicator(settings(tmp_path), State())
    replicator._sync, replicator._ticks = TickingSync(), TickWatch(clock)
    assert replicator.settings.tick_stall_s == pytest.approx(3.6)  # three of the longest election timeouts
    clock.now += 3.5
    assert replicator.tick_alive()
    clock.now += 0.2
    assert not replicator.tick_alive()
    replicator._ticks.stamp()
    assert replicator.tick_alive()
