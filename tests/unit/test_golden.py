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
# log's digest must never change). Cluster-version gated: see commands.GATED_TYPES.
HANDBACK = ("golden_v1_handback.jsonl", "15:3dd924505afb080b0c944f94f70e7f8a")


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
