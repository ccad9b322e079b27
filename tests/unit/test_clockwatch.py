"""The leader's clock check (raftsched/clockwatch.py): NTP's estimate, the median rule, and what
it commits, with an injected clock and probe."""

from __future__ import annotations

from typing import Any

import pytest

from raftsched.clock import FakeClock
from raftsched.clockwatch import ClockWatch, ClockWatchSettings, clock_verdicts, sample
from raftsched.commands import CommandType, decode
from raftsched.records import NodeRecord

from statekit import T0, Driver


def test_the_offset_is_read_at_the_middle_of_the_round_trip() -> None:
    s = sample(sent_ms=1000, peer_ms=3050, received_ms=1100)
    assert (s.offset_ms, s.rtt_ms) == (2000, 100)


def test_a_follower_off_by_more_than_the_bound_is_not_ok() -> None:
    verdicts = {c.node: (c.offset_ms, c.ok) for c in clock_verdicts({"n2": 40, "n3": 1500}, "n1", 1000)}
    assert verdicts == {"n1": (-40, True), "n2": (0, True), "n3": (1460, False)}  # from the median (n2)


def test_a_leader_off_by_more_than_the_bound_is_the_one_not_ok() -> None:
    verdicts = {c.node: (c.offset_ms, c.ok) for c in clock_verdicts({"n2": -2000, "n3": -2050}, "n1", 1000)}
    assert verdicts == {"n1": (2000, False), "n2": (0, True), "n3": (-50, True)}


class Rig:
    def __init__(self, offsets: dict[str, float]) -> None:
        self.driver = Driver()
        self.driver.boot(("n1", "n2", "n3"))
        self.clock = FakeClock(T0)
        self.offsets = offsets
        self.proposed: list[dict[str, Any]] = []
        self.watch = ClockWatch(
            ClockWatchSettings(node_id="n1", max_offset_s=1.0),
            self.driver.state,
            self.propose,
            self.clock,
            self.probe,
            leading=lambda: 1,
        )

    async def probe(self, node: NodeRecord) -> float:
        if node.id not in self.offsets:
            raise ValueError("no answer")
        self.clock.advance(0.01)  # 10 ms each way
        peer = self.clock.now_ms() + self.offsets[node.id]
        self.clock.advance(0.01)
        return peer

    async def propose(self, data: bytes) -> dict[str, Any]:
        self.proposed.append(decode(data).body)
        return self.driver.state.apply(data)

    def node(self, node_id: str) -> NodeRecord:
        return self.driver.state.nodes[node_id]


async def test_the_leader_commits_offsets_and_verdicts_and_only_what_changed() -> None:
    rig = Rig({"n2": 30, "n3": 1800})
    await rig.watch.check(1)
    assert len(rig.proposed) == 1
    # Offsets from the median of the three clocks (n2's, here).
    assert (rig.node("n2").clock_offset_ms, rig.node("n2").clock_ok) == (0, True)
    assert (rig.node("n3").clock_offset_ms, rig.node("n3").clock_ok) == (1770, False)
    assert (rig.node("n1").clock_offset_ms, rig.node("n1").clock_ok) == (-30, True)
    await rig.watch.check(1)
    rig.offsets["n2"] = 80  # 50 ms from its last offset (< REPORT_CHANGE_MS): nothing to commit
    await rig.watch.check(1)
    assert len(rig.proposed) == 1
    rig.offsets["n3"] = 100  # corrected
    await rig.watch.check(1)
    assert {c["node"]: c["ok"] for c in rig.proposed[-1]["clocks"]}["n3"] is True
    assert rig.node("n3").clock_ok


async def test_a_node_that_does_not_answer_keeps_its_verdict() -> None:
    rig = Rig({"n2": 1500, "n3": 0})
    await rig.watch.check(1)
    assert not rig.node("n2").clock_ok
    del rig.offsets["n2"]
    await rig.watch.check(1)
    assert not rig.node("n2").clock_ok and len(rig.proposed) == 1


@pytest.mark.parametrize("bad", [{"clocks": [{"node": "n2", "offset_ms": "x", "ok": True}]}, {"clocks": 3}])
def test_a_malformed_clock_command_changes_nothing(bad: dict[str, Any]) -> None:
    driver = Driver()
    driver.boot(("n1", "n2"))
    before = driver.state.nodes["n2"]
    assert not driver.cmd(CommandType.NODE_CLOCKS, term=1, now_ms=T0, **bad)["ok"]
    assert driver.state.nodes["n2"] == before


async def test_a_leader_whose_own_clock_is_off_hands_leadership_over() -> None:
    rig = Rig({"n2": -3000, "n3": -3020})
    handed: list[bool] = []

    async def hand_over() -> bool:
        handed.append(True)
        return True

    rig.watch.hand_over = hand_over
    await rig.watch.check(1)
    assert handed and not rig.node("n1").clock_ok and rig.node("n2").clock_ok


async def test_clock_verdicts_survive_a_snapshot() -> None:
    from raftsched.state import State

    rig = Rig({"n2": 0, "n3": 2000})
    await rig.watch.check(1)
    copy = State()
    copy.load(rig.driver.state.dump())
    assert copy.nodes["n3"] == rig.node("n3") and not copy.nodes["n3"].clock_ok
    assert copy.digest_hex() == rig.driver.state.digest_hex()


async def test_two_clocks_alone_judge_nothing() -> None:
    rig = Rig({"n3": 3000})  # n2 does not answer: n1 and n3 disagree and nothing tells who is right
    assert await rig.watch.check(1) == [] and not rig.proposed
    assert rig.node("n1").clock_ok and rig.node("n3").clock_ok
