"""Old command logs must replay to the same state forever (command versions, upcasting)."""

from __future__ import annotations

from pathlib import Path

from raftsched.model import RunState
from raftsched.state import State

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_v1.jsonl"
GOLDEN_DIGEST = "33:dc9bcb81fd0f3bed209859bb59eae27c"


def replay() -> State:
    state = State()
    for line in GOLDEN.read_bytes().splitlines():
        state.apply(line)
    return state


def test_golden_log_replays_to_its_digest() -> None:
    state = replay()
    assert state.digest_hex() == GOLDEN_DIGEST
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
