"""The commands added for fast death detection and clean stops: UNCLAIM_RUNS (a stopping node hands
back what it has not started), EXPIRE_RUNS (stale pending runs recorded missed), and the reason a
SET_NODE down carries."""

from __future__ import annotations

from raftsched.commands import CommandType
from raftsched.model import RunState

from statekit import T0, Driver

RUN, OTHER = f"j@{T0 + 1000}", f"k@{T0 + 1000}"


def booted() -> Driver:
    d = Driver()
    d.boot(version=2)
    d.add("j")
    d.add("k", delivery="at_most_once")
    d.fire("j", T0 + 1000)
    d.fire("k", T0 + 1000)
    return d


def unclaim(d: Driver, *items: tuple[str, int], node: str = "n2") -> dict[str, object]:
    return d.cmd(
        CommandType.UNCLAIM_RUNS,
        node=node,
        now_ms=T0 + 500,
        actor="shutdown",
        items=[{"run_id": r, "attempt": a} for r, a in items],
    )


def test_unclaim_drains_the_node_and_releases_a_claim_fenced_by_node_and_attempt() -> None:
    d = booted()
    d.cmd(CommandType.CLAIM_RUNS, node="n2", now_ms=T0, items=[{"run_id": OTHER, "attempt": 1}])
    assert d.state.runs[OTHER].claimed
    result = unclaim(d, (RUN, 1), (OTHER, 1), (RUN, 2), ("nope@1", 1))
    assert result == {"ok": True, "node": "n2", "released": [RUN, OTHER]}
    node = d.state.nodes["n2"]
    assert node.draining and not node.leaving and node.updated_ms == T0 + 500
    assert not d.state.runs[OTHER].claimed
    assert d.state.runs[RUN].state is RunState.PENDING  # still its; the leader moves it


def test_unclaim_leaves_alone_what_started_moved_or_belongs_to_another_node() -> None:
    d = booted()
    d.start(RUN)
    d.cmd(CommandType.CLAIM_RUNS, node="n2", now_ms=T0, items=[{"run_id": OTHER, "attempt": 1}])
    d.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=T0,
        moves=[{"run_id": OTHER, "attempt": 1, "node": "n3"}],
    )  # at_most_once and claimed: lost
    assert unclaim(d, (RUN, 1), (OTHER, 1))["released"] == []
    assert unclaim(d, (RUN, 1), node="n3")["released"] == []
    assert d.state.runs[RUN].state is RunState.RUNNING
    assert d.state.runs[OTHER].state is RunState.LOST


def test_unclaim_keeps_a_leaving_node_leaving_and_refuses_an_unknown_node() -> None:
    d = booted()
    d.cmd(CommandType.DRAIN_NODE, node="n2", draining=True, leaving=True, now_ms=T0)
    unclaim(d)
    assert d.state.nodes["n2"].leaving
    assert unclaim(d, node="n9")["code"] == "not_found"


def test_a_handed_back_at_most_once_run_moves_instead_of_being_lost() -> None:
    d = booted()
    d.cmd(CommandType.CLAIM_RUNS, node="n2", now_ms=T0, items=[{"run_id": OTHER, "attempt": 1}])
    unclaim(d, (OTHER, 1))
    result = d.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=T0 + 600,
        moves=[{"run_id": OTHER, "attempt": 1, "node": "n3"}],
    )
    assert result["moved"] == [OTHER] and result["lost"] == []
    run = d.state.runs[OTHER]
    assert (run.node, run.attempt, run.state, run.claimed) == ("n3", 2, RunState.PENDING, False)


def test_expire_records_a_pending_run_missed_fenced_by_term_attempt_claim_and_state() -> None:
    d = booted()
    d.cmd(CommandType.CLAIM_RUNS, node="n2", now_ms=T0, items=[{"run_id": OTHER, "attempt": 1}])
    items = [
        {"run_id": RUN, "attempt": 2, "reason": "x"},  # not its attempt
        {"run_id": OTHER, "attempt": 1, "reason": "x"},  # claimed: its node may be starting it
    ]
    stale_term = d.cmd(CommandType.EXPIRE_RUNS, term=0, now_ms=T0 + 70_000, items=items)
    assert stale_term["code"] == "stale_term"
    assert d.cmd(CommandType.EXPIRE_RUNS, term=1, now_ms=T0 + 70_000, items=items)["expired"] == []
    result = d.cmd(
        CommandType.EXPIRE_RUNS,
        term=1,
        now_ms=T0 + 70_000,
        items=[{"run_id": RUN, "attempt": 1, "reason": "not started within its misfire grace"}],
    )
    assert result["expired"] == [RUN]
    run = d.state.runs[RUN]
    assert (run.state, run.finished_ms, run.reason) == (
        RunState.MISSED,
        T0 + 70_000,
        "not started within its misfire grace",
    )
    assert not d.state.job_active["j"] and not d.state.node_active["n2"].get(RUN)
    assert d.state.stats["j"]["missed"] == 1
    # Already ended: nothing more.
    assert (
        d.cmd(CommandType.EXPIRE_RUNS, term=1, now_ms=T0 + 71_000, items=[{"run_id": RUN, "attempt": 1}])[
            "expired"
        ]
        == []
    )


def test_set_node_down_keeps_its_reason_until_up_and_old_commands_have_none() -> None:
    d = booted()
    d.cmd(CommandType.SET_NODE, term=1, node="n2", up=False, now_ms=T0, reason="refused connections")
    assert d.state.nodes["n2"].down_reason == "refused connections"
    assert d.state.nodes["n2"].to_dict()["down_reason"] == "refused connections"
    d.cmd(CommandType.SET_NODE, term=1, node="n2", up=True, now_ms=T0)
    assert d.state.nodes["n2"].down_reason is None
    d.cmd(CommandType.SET_NODE, term=1, node="n3", up=False, now_ms=T0)
    assert d.state.nodes["n3"].down_reason is None
    assert "down_reason" not in d.state.nodes["n3"].to_dict()  # snapshots keep their old bytes
