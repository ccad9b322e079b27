"""Old command logs must replay to the same state forever (command versions, upcasting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftsched.model import RunState
from raftsched.state import State

DATA = Path(__file__).resolve().parents[1] / "data"
# The first log was written before entries carried a CRC; both must replay forever.
GOLDEN = {
    "golden_v1.jsonl": "33:dc9bcb81fd0f3bed209859bb59eae27c",
    "golden_v1_crc.jsonl": "33:b6a2bc6feca07bbd243ebbad5e199dfd",
}


def replay(name: str = "golden_v1.jsonl") -> State:
    state = State()
    for line in (DATA / name).read_bytes().splitlines():
        state.apply(line)
    return state


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_log_replays_to_its_digest(name: str) -> None:
    state = replay(name)
    assert state.digest_hex() == GOLDEN[name]
    assert sorted(state.jobs) == ["a", "q"]
    assert state.term == 2 and state.leader == "n3"
    assert state.runs["a@1800000001000"].attempt == 2  # retried after its failure
    assert state.runs["a@1800000002000"].node == "n3"  # moved off the down node
    assert state.runs["a@1800000004000"].state is RunState.MISSED
    assert state.jobs["a"].version == 2


def test_golden_log_of_version_2_replays_to_its_digest() -> None:
    """Version 2's commands and forms: the cluster's version, the leader's accounting of paused
    ranges, resume / edit / delete carrying the ranges they overtake, and what is refused."""
    state = replay("golden_v2.jsonl")
    assert state.digest_hex() == "27:fffc30847ae16fd55b6155fc12023e87"
    assert state.cluster_version == 2 and state.clock_ms == 1800000006000
    assert sorted(state.jobs) == ["e"] and state.jobs["e"].version == 6
    assert (state.totals["skipped"], state.totals["missed"]) == (13, 5)
    edited = state.runs["e@1800000002000"]
    assert (edited.state, edited.until_ms, edited.count) == (RunState.MISSED, 1800000003000, 2)
    assert state.runs["e@1800000010000"].count == 2  # the paused range recorded by the edit
    restored = State()
    restored.load(state.dump())
    assert restored.dump() == state.dump()


def test_golden_replay_through_a_snapshot_is_identical() -> None:
    state = replay()
    restored = State()
    restored.load(state.dump())
    assert restored.dump() == state.dump()


def test_a_damaged_entry_is_refused_not_applied_as_another_command() -> None:
    line = (DATA / "golden_v1_crc.jsonl").read_bytes().splitlines()[5]
    damaged = line.replace(b"1800000", b"1800001", 1)
    state = State()
    assert state.apply(damaged) == {
        "ok": False,
        "code": "bad_command",
        "message": "checksum mismatch: the entry is damaged",
        "field": None,
    }


# The commands added for fast death detection and clean stops, in a log of their own (the first
# log's digest must never change). Both are version 2: the log raises the cluster's version first.
HANDBACK = ("golden_v2_handback.jsonl", "19:e3d5581093a12f71c171dfe469e14deb")


def test_golden_handback_log_replays_to_its_digest() -> None:
    state = replay(HANDBACK[0])
    assert state.digest_hex() == HANDBACK[1]
    k, j1, j2 = (
        state.runs[f"{job}@{T}"]
        for job, T in (("k", 1800000001000), ("j", 1800000001000), ("j", 1800000002000))
    )
    assert (k.node, k.attempt, k.state, k.claimed) == ("n3", 2, RunState.PENDING, False)  # handed back: moved
    assert (j1.node, j1.attempt, j1.state) == ("n2", 1, RunState.PENDING)  # its attempt 2 was fenced off
    assert state.nodes["n2"].draining
    assert state.nodes["n3"].down_reason == "refused connections"
    assert j2.state is RunState.MISSED and j2.reason == "not started within its misfire grace"
    restored = State()
    restored.load(state.dump())
    assert restored.dump() == state.dump()


# The alert commands (version 2), in a log of their own.
ALERTS = ("golden_v2_alerts.jsonl", "25:39cd2ae9ae6afe04e59532726e7ab7ab")


def test_golden_alerts_log_replays_to_its_digest() -> None:
    state = replay(ALERTS[0])
    assert state.digest_hex() == ALERTS[1]
    assert sorted(state.channels) == ["ops"] and state.alert_cluster == "golden"
    assert (state.alert_seq, state.alert_cursor, list(state.alert_events)) == (4, 4, [])
    alert = state.alerts["a1"]
    assert (alert.delivery.value, alert.attempt, alert.delivered_by) == ("delivered", 2, "n2")
    assert state.alert_throttle["ops"]["group"]["count"] == 2
    assert state.alert_counts == {"ops|failed": 1, "ops|delivered": 1}
    restored = State()
    restored.load(state.dump())
    assert restored.dump() == state.dump()
