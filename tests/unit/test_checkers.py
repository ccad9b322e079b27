"""Each chaos checker on hand-made histories: a clean one passes every checker, and each
violation is caught by the checker that owns it (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest
from chaoskit.checkers import (
    CHECKERS,
    History,
    Op,
    _ms,
    check_acknowledged_writes,
    check_bad_input,
    check_convergence,
    check_duplicate_executions,
    check_fencing,
    check_liveness,
    check_no_duplicate_fire,
    check_no_lost_fire,
    check_no_run_after_stop,
    check_overlap,
    slots_in,
)
from chaoskit.groundtruth import Execution, executions

BASE = 1_800_000_000_000  # wall ms at mono 0


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def wall(t: float) -> float:
    return BASE + t * 1000


def task(sleep: float) -> dict[str, Any]:
    return {"type": "shell", "command": ["python", "-S", "/x/gt_task.py", "/gt", str(sleep)]}


def spec(job: str, every: float = 1, sleep: float = 0.0, **extra: Any) -> dict[str, Any]:
    return {"id": job, "schedule": {"every": every}, "task": task(sleep), "overlap": "allow", **extra}


def op(kind: str, job: str, t0: float, t1: float, status: str = "ok", **extra: Any) -> Op:
    return Op(
        id=int(t0 * 1000),
        kind=kind,
        job=job,
        node="n1",
        invoke_mono=t0,
        invoke_wall_ms=wall(t0),
        complete_mono=t1,
        complete_wall_ms=wall(t1),
        status=status,
        **extra,
    )


def job_view(
    job: str, version: int, paused: bool = False, description: str = "", inc: int = 1
) -> dict[str, Any]:
    return {
        "id": job,
        "version": version,
        "incarnation": inc,
        "paused": paused,
        "description": description,
        "created_at": iso(BASE),
    }


def ex(
    job: str,
    k: int,
    attempt: int = 1,
    node: str = "n1",
    start: float | None = None,
    length: float = 0.01,
    ended: bool = True,
) -> Execution:
    slot = BASE + k * 1000
    t = k + 0.01 if start is None else start
    return Execution(
        run_id=f"{job}@{slot}",
        job=job,
        slot=slot,
        node=node,
        attempt=attempt,
        pid=int(t * 1000) + attempt * 7 + hash(node) % 5,
        start_mono=t,
        start_wall_ms=wall(t),
        end_mono=t + length if ended else None,
        end_wall_ms=wall(t + length) if ended else None,
        rc=0 if ended else None,
    )


def rec(
    job: str, k: int, state: str = "succeeded", attempt: int = 1, node: str = "n1", **extra: Any
) -> dict[str, Any]:
    slot = BASE + k * 1000
    return {
        "run_id": f"{job}@{slot}",
        "job_id": job,
        "scheduled_at": iso(slot),
        "state": state,
        "attempt": attempt,
        "node": node,
        "started_at": iso(slot + 10),
        "created_at": iso(slot - 2000),
        "reason": None,
        "manual": False,
        "shard": 0,
        **extra,
    }


def clean() -> History:
    """Job `m`, every second from BASE, created at t=0, paused at t=10.5: slots 1..10 ran once."""
    records = [rec("m", k) for k in range(1, 11)]
    return History(
        executions=[ex("m", k) for k in range(1, 11)],
        ops=[
            op(
                "create",
                "m",
                -0.05,
                0.0,
                spec=spec("m"),
                result=job_view("m", 1),
                read_after=job_view("m", 1),
            ),
            op("pause", "m", 10.5, 10.55, result=job_view("m", 2, paused=True)),
        ],
        records={"n1": records, "n2": copy.deepcopy(records)},
        digests={"n1": "50:ab", "n2": "50:ab"},
        samples=[
            {"mono": t / 2, "node": "n1", "ok": True, "role": "leader", "term": 3, "scheduler_term": 3}
            for t in range(0, 30)
        ],
        faults=[],
        probes=[
            {
                "kind": "bad_input",
                "name": "id",
                "status": 400,
                "field": "id",
                "expect_field": "id",
                "changed": False,
                "alive": True,
            }
        ],
        final_jobs={"m": job_view("m", 2, paused=True)},
        end_mono=20.0,
        end_wall_ms=wall(20.0),
    )


def names(history: History) -> set[str]:
    return {c.__name__ for c in CHECKERS if c(history).violations}


def test_the_clean_history_passes_every_checker() -> None:
    h = clean()
    failing = {c.__name__: c(h).violations for c in CHECKERS if c(h).violations}
    assert not failing
    # The pause is invoked at t=10.5: slots within lookahead + offset (+ a commit) of it are not judged.
    assert check_no_lost_fire(h).counts["slots_due"] == 8


def test_slots_are_computed_independently() -> None:
    assert slots_in({"every": 0.5}, BASE, BASE, BASE + 2000) == [
        BASE + 500,
        BASE + 1000,
        BASE + 1500,
        BASE + 2000,
    ]
    assert slots_in({"cron": "*/2 * * * * *"}, BASE, BASE, BASE + 5000) == [BASE + 2000, BASE + 4000]
    assert slots_in({"at": iso(BASE + 3000)}, BASE, BASE, BASE + 5000) == [BASE + 3000]


# ---------------------------------------------------------------- 1


def test_a_slot_neither_run_nor_recorded_is_lost() -> None:
    h = clean()
    h.executions = [e for e in h.executions if e.slot != BASE + 5000]
    for items in h.records.values():
        items[:] = [r for r in items if r["scheduled_at"] != iso(BASE + 5000)]
    v = check_no_lost_fire(h).violations
    assert [x["slot"] for x in v] == [BASE + 5000]
    assert names(h) == {"check_no_lost_fire"}


def test_a_skip_record_accounts_for_a_slot_only_with_a_reason() -> None:
    h = clean()
    h.executions = [e for e in h.executions if e.slot not in (BASE + 5000, BASE + 6000)]
    for items in h.records.values():
        items[:] = [r for r in items if r["scheduled_at"] not in (iso(BASE + 5000), iso(BASE + 6000))]
        items.append(
            rec("m", 5, "missed", attempt=0, reason="missed its grace", until=iso(BASE + 6000), count=2)
        )
    assert check_no_lost_fire(h).ok
    for items in h.records.values():
        items[-1]["reason"] = None
    assert not check_no_lost_fire(h).ok


def test_slots_while_paused_are_not_due() -> None:
    h = clean()
    h.ops.insert(1, op("pause", "m", 3.5, 3.55, result=job_view("m", 2, paused=True)))
    h.ops.insert(2, op("resume", "m", 7.5, 7.55, result=job_view("m", 3)))
    h.executions = [e for e in h.executions if not BASE + 4000 <= e.slot <= BASE + 7000]  # type: ignore[operator]
    for items in h.records.values():
        items[:] = [r for r in items if not iso(BASE + 4000) <= r["scheduled_at"] <= iso(BASE + 7000)]
    assert check_no_lost_fire(h).ok


def test_both_ends_of_a_window_are_judged_with_lookahead_plus_the_clock_offset() -> None:
    """A boundary read on the harness's clock is moved inwards on both sides: a node's clock may
    be off by the allowed offset, and the leader acts up to a lookahead ahead."""
    h = clean()
    h.ops.insert(1, op("pause", "m", 2.0, 2.05, result=job_view("m", 2, paused=True)))
    h.ops.insert(2, op("resume", "m", 2.5, 2.55, result=job_view("m", 3)))
    unrecorded = {BASE + k * 1000 for k in (5, 6, 8)}
    h.executions = [e for e in h.executions if e.slot not in unrecorded]
    for items in h.records.values():
        items[:] = [r for r in items if _ms(r["scheduled_at"]) not in unrecorded]
    h.max_clock_offset_s = 0.5  # the window is (2.55 + 2.6, 10.5 - 2.6]: slots 6 and 7
    assert [v["slot"] for v in check_no_lost_fire(h).violations] == [BASE + 6000]
    h.max_clock_offset_s = 0.0  # (2.55 + 2.1, 10.5 - 2.1]: slots 5 to 8
    assert [v["slot"] for v in check_no_lost_fire(h).violations] == [BASE + k * 1000 for k in (5, 6, 8)]


def left_paused(records_at: float) -> History:
    """The clean history, whose job stays paused from t=10.5 until the records are read."""
    h = clean()
    h.end_mono, h.end_wall_ms, h.records_wall_ms = 40.0, wall(40.0), wall(records_at)
    return h


def test_a_job_left_paused_must_have_its_range_as_records() -> None:
    h = left_paused(records_at=30.0)  # slots 13..27 lie in the judged range (10.55 + 2.1, 30 - 2.1]
    lost = list(check_no_lost_fire(h).violations)
    assert [v["slot"] for v in lost] == [BASE + k * 1000 for k in range(13, 28)]
    assert {v["what"] for v in lost} == {"a slot of the paused range is not a record"}
    paused = rec("m", 11, "skipped", attempt=0, reason="job paused", until=iso(BASE + 29_000), count=19)
    for items in h.records.values():
        items.append(copy.deepcopy(paused))
    assert check_no_lost_fire(h).ok
    for items in h.records.values():
        items[-1]["until"] = iso(BASE + 20_000)  # recorded only up to 20: the rest is missing
    assert [v["slot"] for v in check_no_lost_fire(h).violations] == [BASE + k * 1000 for k in range(21, 28)]


def test_an_execution_is_no_record_of_a_paused_slot_and_unknown_read_times_judge_nothing() -> None:
    h = left_paused(records_at=14.0)  # judges slot 12 only: (12.65, 11.9] is empty, so read later
    h.records_wall_ms = wall(16.0)  # (12.65, 13.9]: slot 13
    h.executions.append(ex("m", 13))
    assert [v["slot"] for v in check_no_lost_fire(h).violations] == [BASE + 13_000]
    h.records_wall_ms = 0.0  # an older history: the paused range is not judged
    assert check_no_lost_fire(h).ok


# ---------------------------------------------------------------- 2


def test_attempt_one_of_a_slot_on_two_nodes_is_two_fire_decisions() -> None:
    h = clean()
    h.executions.append(ex("m", 4, node="n2", start=4.02))
    assert not check_no_duplicate_fire(h).ok


def test_two_runs_for_one_slot_on_a_node_are_two_fire_decisions() -> None:
    h = clean()
    h.records["n1"].append({**rec("m", 4), "run_id": f"m@{BASE + 4000}~0"})
    assert not check_no_duplicate_fire(h).ok


# ---------------------------------------------------------------- 3


def test_one_run_attempt_executed_twice() -> None:
    h = clean()
    h.executions.append(ex("m", 4, node="n2", start=4.5))
    v = check_duplicate_executions(h).violations
    assert v and v[0]["what"] == "one (run, attempt) executed twice"


def test_at_most_once_never_executes_twice() -> None:
    h = clean()
    h.ops[0].spec = spec("m", delivery="at_most_once")
    h.executions.append(ex("m", 4, attempt=2, node="n2", start=4.5))
    for items in h.records.values():
        items[3] = rec("m", 4, attempt=2, node="n2")
    assert [x["what"] for x in check_duplicate_executions(h).violations] == [
        "an at_most_once run executed more than once"
    ]


def test_at_least_once_re_executes_only_with_a_committed_higher_attempt() -> None:
    h = clean()
    h.executions.append(ex("m", 4, attempt=2, node="n2", start=4.5))
    for items in h.records.values():
        items[3] = rec("m", 4, attempt=2, node="n2")
    result = check_duplicate_executions(h)
    assert result.ok and result.counts["duplicate_executions"] == 1
    for items in h.records.values():
        items[3] = rec("m", 4, attempt=1)
    assert not check_duplicate_executions(h).ok


def test_a_higher_attempt_of_a_deleted_job_known_only_from_earlier_samples_is_unverifiable() -> None:
    """The job was deleted after the run was reassigned: no final record, and the samples taken
    before only knew attempt 1. Not a violation; counted unverifiable. With the job still
    there, the final records are complete and the same history is a violation."""
    h = clean()
    h.executions.append(ex("m", 4, attempt=2, node="n2", start=4.5))
    h.snapshots.extend(dict(items[3]) for items in h.records.values())  # sampled at attempt 1
    for items in h.records.values():
        del items[3]  # the job's records went with it
    h.ops.append(op("delete", "m", 6.0, 6.1))
    result = check_duplicate_executions(h)
    assert result.ok and result.counts["unverifiable_deleted"] == 1
    h.ops.pop()
    assert not check_duplicate_executions(h).ok


# ---------------------------------------------------------------- 4


def test_an_execution_without_a_committed_fire() -> None:
    h = clean()
    h.executions.append(Execution("m@999", "m", 999, "n1", 1, 4242, 3.0, wall(3.0), 3.1, wall(3.1), 0))
    assert [x["what"] for x in check_fencing(h).violations] == ["executed without a committed fire"]


def test_a_result_of_an_attempt_that_did_not_run_there_is_stale() -> None:
    h = clean()
    for items in h.records.values():
        items[3] = rec("m", 4, attempt=2, node="n2")  # attempt 2 on n2 "succeeded", but only attempt 1 ran
    assert any("did not run there" in x["what"] for x in check_fencing(h).violations)


# ---------------------------------------------------------------- 5


def overlap_history(policy: str) -> History:
    h = clean()
    h.ops[0].spec = spec("m", sleep=2.5, overlap=policy)
    h.executions = [ex("m", 1, length=2.5), ex("m", 2, length=2.5)]  # slot 2 starts while slot 1 runs
    for items in h.records.values():
        items[:] = [rec("m", 1), rec("m", 2)] + [
            rec("m", k, "skipped", attempt=0, reason="overlap") for k in range(3, 11)
        ]
    return h


@pytest.mark.parametrize("policy", ["forbid", "queue", "replace"])
def test_overlap_is_caught_under_exclusive_policies(policy: str) -> None:
    assert not check_overlap(overlap_history(policy)).ok


def test_replace_allows_only_the_kill_of_the_replaced_run() -> None:
    h = overlap_history("replace")
    h.executions[0].end_mono, h.executions[0].signal = 2.3, 15  # killed 0.3 s after slot 2 started
    assert check_overlap(h).ok


def test_a_replace_the_failing_leader_never_announced_is_counted_apart() -> None:
    h = overlap_history("replace")
    h.executions[0] = ex("m", 1, node="n2", length=2.5)  # n2 never heard that slot 2 replaced it
    h.faults = [{"kind": "pause", "node": "n3", "mono": 2.2, "wall_ms": wall(2.2)}]
    assert not check_overlap(h).ok  # a follower's pause excuses nothing
    h.faults = [{"kind": "pause", "node": "n1", "mono": 2.2, "wall_ms": wall(2.2)}]
    result = check_overlap(h)
    assert result.ok and result.counts["overlap_cut_off"] == 1  # n1 led and stopped right after
    h.faults[0]["mono"] = 3.0  # stopped long after it could have told n2
    assert not check_overlap(h).ok


def test_overlap_is_fine_under_allow_and_for_a_superseded_attempt() -> None:
    assert check_overlap(overlap_history("allow")).ok
    h = overlap_history("forbid")
    h.executions.append(ex("m", 1, attempt=2, node="n2", start=1.5, length=0.1))  # attempt 1 was superseded
    h.executions.sort(key=lambda e: e.start_mono)
    for items in h.records.values():
        items[0] = rec("m", 1, attempt=2, node="n2")
    result = check_overlap(h)
    assert result.ok and result.counts["overlap_superseded"] == 1


# ---------------------------------------------------------------- 6


def test_a_start_after_a_pause_was_acknowledged() -> None:
    h = clean()
    h.ops.append(op("pause", "m", 4.0, 4.05, result=job_view("m", 2, paused=True)))
    h.ops.sort(key=lambda o: o.invoke_mono)
    assert [x["run"] for x in check_no_run_after_stop(h).violations][:1] == [f"m@{BASE + 5000}"]


def test_a_run_started_again_after_a_pause_is_a_violation_unless_tolerated() -> None:
    """Slot 4 ran on n2 from 4.01, the job was paused at 4.5, n2 died: attempt 2 started at 8."""
    h = clean()
    h.executions = [ex("m", k) for k in range(1, 4)] + [
        ex("m", 4, node="n2", ended=False),
        ex("m", 4, attempt=2, start=8.0),
    ]
    h.ops[1] = op("pause", "m", 4.5, 4.55, result=job_view("m", 2, paused=True))
    assert [v["run"] for v in check_no_run_after_stop(h).violations] == [f"m@{BASE + 4000}"]
    h.tolerate_rerun_after_pause = True
    result = check_no_run_after_stop(h)
    assert result.ok and result.counts["reruns_after_pause_tolerated"] == 1


def test_a_start_just_after_the_ack_or_on_a_cut_off_worker_is_allowed() -> None:
    h = clean()
    h.ops.append(op("pause", "m", 9.0, 9.3, result=job_view("m", 2, paused=True)))  # slot 10 at 10.01 is late
    h.ops.sort(key=lambda o: o.invoke_mono)
    assert not check_no_run_after_stop(h).ok
    h.faults = [
        {"kind": "isolate", "node": "n1", "mono": 8.5, "wall_ms": wall(8.5)},
        {"kind": "heal", "mono": 12.0, "wall_ms": wall(12.0)},
    ]
    result = check_no_run_after_stop(h)
    assert result.ok and result.counts["cut_off_starts"] == 1


def test_a_delete_kills_what_runs() -> None:
    h = clean()
    h.ops.append(op("delete", "m", 5.0, 5.05))
    h.ops.sort(key=lambda o: o.invoke_mono)
    h.executions = [e for e in h.executions if e.start_mono < 5] + [ex("m", 5, start=4.9, length=10)]
    h.final_jobs = {}
    assert [x["what"] for x in check_no_run_after_stop(h).violations] == [
        "still running after the delete was acknowledged"
    ]


# ---------------------------------------------------------------- 7


def test_two_cas_updates_from_one_version() -> None:
    h = clean()
    h.ops += [
        op("update", "m", 2.0, 2.1, if_match=1, spec=spec("m", description="a"), result=job_view("m", 2)),
        op("update", "m", 2.05, 2.2, if_match=1, spec=spec("m", description="b"), result=job_view("m", 2)),
    ]
    assert any(
        "compare" in x["what"] or "one version" in x["what"] for x in check_acknowledged_writes(h).violations
    )


def test_an_acknowledged_write_that_went_back_is_lost() -> None:
    h = clean()
    h.final_jobs = {"m": job_view("m", 1)}  # the pause acknowledged version 2
    result = check_acknowledged_writes(h)
    assert not result.ok and result.counts["lost_writes"] >= 1


def test_an_acknowledged_delete_undone_and_a_create_lost() -> None:
    h = clean()
    h.ops.append(op("delete", "m", 11.0, 11.1))
    assert not check_acknowledged_writes(h).ok  # the job still exists
    h2 = clean()
    h2.final_jobs = {}
    assert not check_acknowledged_writes(h2).ok  # created, never deleted, gone


def test_the_last_update_must_be_what_the_job_holds() -> None:
    h = clean()
    h.ops.insert(
        1,
        op(
            "update",
            "m",
            2.0,
            2.1,
            if_match=1,
            spec=spec("m", description="mine"),
            result=job_view("m", 2, description="mine"),
        ),
    )
    h.ops[-1].result = job_view("m", 3, paused=True, description="mine")
    h.final_jobs = {"m": job_view("m", 3, paused=True, description="mine")}
    assert check_acknowledged_writes(h).ok
    h.final_jobs = {"m": job_view("m", 3, paused=True, description="someone else")}
    assert not check_acknowledged_writes(h).ok


def test_a_read_right_after_a_write_must_see_it() -> None:
    h = clean()
    h.ops[0].read_after = {"version": None}
    assert not check_acknowledged_writes(h).ok


def test_indeterminate_ops_are_not_acknowledged() -> None:
    h = clean()
    h.ops.append(op("delete", "m", 11.0, 11.1, status="indeterminate"))
    assert check_acknowledged_writes(h).ok  # may or may not have applied: either final state is fine
    assert check_acknowledged_writes(h).counts["admin_ops"] == {"ok": 2, "indeterminate": 1}


def cas(t0: float, t1: float, if_match: int, description: str, shown: int | None, **extra: Any) -> Op:
    """A conditional update of `m` from version `if_match`; `shown`: the version its answer showed."""
    return op(
        "update",
        "m",
        t0,
        t1,
        if_match=if_match,
        spec=spec("m", description=description),
        result=None if shown is None else job_view("m", shown, description=description),
        **extra,
    )


def linearizable(h: History) -> list[str]:
    return [v["what"] for v in check_acknowledged_writes(h).violations]


def writes(*ops: Op, final: dict[str, Any]) -> History:
    """`m` created (version 1) at t=0, then these writes, then `final` at the end."""
    h = clean()
    h.ops = [h.ops[0], *ops]
    h.final_jobs = {"m": final}
    return h


def test_a_write_acknowledged_but_never_applied_is_lost() -> None:
    """The bug found by chaos: a deposed leader answered 200 to a PUT from its own stale entries
    (its answer shows version 2 with the write); the real version 2 is a pause by the new leader."""
    h = writes(
        cas(2.0, 2.1, 1, "mine", 2),
        op("pause", "m", 2.05, 2.2, result=job_view("m", 2, paused=True)),
        final=job_view("m", 2, paused=True),
    )
    found = linearizable(h)
    assert any("acknowledged update is lost" in w for w in found), found
    assert check_acknowledged_writes(h).counts["lost_writes"] == 1


def test_a_lost_write_superseded_by_no_later_acknowledged_write() -> None:
    h = writes(cas(2.0, 2.1, 1, "a", 2), cas(3.0, 3.1, 2, "b", 3), final=job_view("m", 3, description="b"))
    assert not linearizable(h)  # b superseded a: fine
    h.final_jobs = {"m": job_view("m", 3, description="a")}  # version 3 is b's, yet shows a
    assert any("acknowledged update is lost" in w for w in linearizable(h))
    h.final_jobs = {"m": job_view("m", 2, description="a")}  # b's version 3 went back
    assert any("went back" in w for w in linearizable(h))


def test_a_double_cas_success_is_caught_whatever_the_answers_show() -> None:
    h = writes(
        cas(2.0, 2.1, 1, "a", 2),
        cas(2.05, 2.3, 1, "b", 3),  # its answer was read after another write: it shows 3
        final=job_view("m", 3, description="b"),
    )
    assert "two conditional updates succeeded from one version" in linearizable(h)


def test_a_conditional_update_from_a_version_already_superseded() -> None:
    h = writes(
        cas(2.0, 2.1, 1, "a", 2),
        cas(3.0, 3.1, 1, "b", 2),  # began after version 2 was shown, yet succeeded from 1
        final=job_view("m", 2, description="b"),
    )
    assert any("older than one already shown" in w for w in linearizable(h))


def test_indeterminate_writes_may_or_may_not_have_applied() -> None:
    pending = cas(2.5, 14.0, 2, "maybe", None, status="indeterminate", http=504)
    for final in (job_view("m", 2, description="a"), job_view("m", 3, description="maybe")):
        h = writes(cas(2.0, 2.1, 1, "a", 2), pending, final=final)
        assert not linearizable(h), (final, linearizable(h))
    h = writes(cas(2.0, 2.1, 1, "a", 2), pending, final=job_view("m", 3, description="nobody"))
    assert linearizable(h)  # no write, done or maybe, made that description
    # An indeterminate update from version 1 cannot be what version 2 shows: 'a' made version 2.
    h = writes(
        cas(2.0, 2.1, 1, "a", 2),
        cas(1.9, 2.2, 1, "maybe", None, status="indeterminate"),
        final=job_view("m", 2, description="maybe"),
    )
    assert any("acknowledged update is lost" in w for w in linearizable(h))


def test_the_fine_history_with_504s_and_a_pause_passes() -> None:
    h = writes(
        cas(2.0, 2.1, 1, "a", 2),
        cas(3.0, 9.0, 2, "b", None, status="indeterminate", http=504),
        op("pause", "m", 9.5, 9.6, result=job_view("m", 4, paused=True, description="b")),
        cas(10.0, 10.1, 4, "c", 5),
        final=job_view("m", 6, paused=True, description="c"),
    )
    h.ops.append(op("pause", "m", 11.0, 11.1, result=job_view("m", 6, paused=True, description="c")))
    assert not linearizable(h), linearizable(h)


# ---------------------------------------------------------------- 8


def test_divergent_digests_and_records() -> None:
    h = clean()
    h.digests["n2"] = "50:cd"
    assert not check_convergence(h).ok
    h = clean()
    h.records["n2"][0]["state"] = "failed"
    assert not check_convergence(h).ok
    h = clean()
    h.digests["n3"] = None  # a node that does not answer has not converged
    assert not check_convergence(h).ok


def test_a_paused_jobs_growing_range_is_not_divergence() -> None:
    """Nodes read one after the other see a paused job's range recorded up to different committed
    clocks: invariant 1 judges it, convergence the rest."""
    h = clean()
    job_id = h.records["n1"][0]["job_id"]
    h.final_jobs = {**h.final_jobs, job_id: {"id": job_id, "paused": True}}
    extra = {"run_id": f"{job_id}@{BASE + 99_000}", "job_id": job_id, "state": "skipped", "attempt": 0}
    h.records["n2"].append(extra)
    assert check_convergence(h).ok
    h.records["n2"].append({**extra, "run_id": "other@1", "job_id": "other"})
    assert not check_convergence(h).ok


# ---------------------------------------------------------------- 9


def test_no_leader_after_a_recovery() -> None:
    h = clean()
    h.samples = [s for s in h.samples if s["mono"] < 3]
    h.faults = [{"kind": "heal", "mono": 4.0, "wall_ms": wall(4.0)}]
    assert not check_liveness(h).ok


def test_a_run_stuck_active_after_its_execution_ended() -> None:
    h = clean()
    for items in h.records.values():
        items[0] = rec("m", 1, state="running")
    assert not check_liveness(h).ok


# ---------------------------------------------------------------- 10


@pytest.mark.parametrize(
    "change", [{"status": 500}, {"status": 200}, {"field": None}, {"changed": True}, {"alive": False}]
)
def test_bad_input_must_get_a_4xx_naming_the_field_and_change_nothing(change: dict[str, Any]) -> None:
    h = clean()
    h.probes[0].update(change)
    assert not check_bad_input(h).ok


# ---------------------------------------------------------------- ground truth


def test_ground_truth_pairs_start_and_end_by_node_and_pid() -> None:
    events = [
        {
            "ev": "start",
            "run_id": "m@1",
            "job": "m",
            "slot": 1,
            "node": "n1",
            "attempt": 1,
            "pid": 7,
            "wall_ms": 10.0,
            "mono": 1.0,
        },
        {
            "ev": "start",
            "run_id": "m@1",
            "job": "m",
            "slot": 1,
            "node": "n2",
            "attempt": 2,
            "pid": 7,
            "wall_ms": 20.0,
            "mono": 2.0,
        },
        {
            "ev": "end",
            "run_id": "m@1",
            "job": "m",
            "slot": 1,
            "node": "n1",
            "attempt": 1,
            "pid": 7,
            "wall_ms": 30.0,
            "mono": 3.0,
            "rc": 143,
            "signal": 15,
        },
    ]
    out = executions(events)
    assert [(e.node, e.end_mono, e.signal) for e in out] == [("n1", 3.0, 15), ("n2", None, None)]


def test_an_overlap_while_the_older_runs_node_was_paused_is_counted_apart() -> None:
    h = overlap_history("replace")
    h.faults = [
        {"kind": "pause", "node": "n1", "mono": 1.5, "wall_ms": wall(1.5)},
        {"kind": "resume", "node": "n1", "mono": 5.0, "wall_ms": wall(5.0)},
    ]
    h.executions[1].node = "n2"
    result = check_overlap(h)
    assert result.ok and result.counts["overlap_cut_off"] == 1


def test_a_read_after_a_write_that_raced_another_client_proves_nothing() -> None:
    h = clean()
    h.ops[0].read_after = {"version": None}
    h.ops.insert(1, op("delete", "m", -0.04, 0.02, status="indeterminate"))
    assert not [v for v in check_acknowledged_writes(h).violations if "read right after" in v["what"]]


def test_a_run_started_after_the_log_cancelled_it() -> None:
    h = clean()
    for items in h.records.values():
        items[4] = rec(
            "m", 5, state="cancelled", reason="replaced by a newer slot", finished_at=iso(BASE + 3000)
        )
    assert [v["what"] for v in check_no_run_after_stop(h).violations] == [
        "started after the log had cancelled it"
    ]
    h.faults = [
        {"kind": "pause", "node": "n1", "mono": 2.0, "wall_ms": wall(2.0)},
        {"kind": "resume", "node": "n1", "mono": 4.8, "wall_ms": wall(4.8)},
    ]
    assert check_no_run_after_stop(h).ok  # a node that had just come back may still start it


def test_a_cancel_the_failed_leader_never_announced_excuses_a_start_within_a_lookahead() -> None:
    h = clean()
    for items in h.records.values():
        items[4] = rec("m", 5, state="cancelled", node="n2", finished_at=iso(BASE + 3500))
    h.executions[4] = ex("m", 5, node="n2")  # started at 5.01, 1.5 s after the cancel
    h.faults = [{"kind": "isolate", "node": "n3", "mono": 3.4, "wall_ms": wall(3.4)}]
    assert not check_no_run_after_stop(h).ok  # a follower's fault tells n2 nothing
    h.faults = [{"kind": "isolate", "node": "n1", "mono": 3.6, "wall_ms": wall(3.6)}]
    result = check_no_run_after_stop(h)
    assert result.ok and result.counts["cut_off_starts"] == 1  # the leader (n1) was cut off
    h.executions[4] = ex("m", 5, node="n2", start=6.5)  # later than a lookahead after the cancel
    assert not check_no_run_after_stop(h).ok


def test_a_cancel_by_a_write_that_waited_for_a_leader_counts_from_its_acknowledgement() -> None:
    h = clean()
    for items in h.records.values():  # the pause arrived at 3.0 but committed only at its ack, 5.2
        items[4] = rec("m", 5, state="cancelled", finished_at=iso(BASE + 3000))
    h.ops.insert(1, op("pause", "m", 2.95, 5.2, result=job_view("m", 2, paused=True)))

    def cancel_violations() -> list[str]:
        return [v["run"] for v in check_no_run_after_stop(h).violations if "log had cancelled" in v["what"]]

    assert cancel_violations() == []  # slot 5 started at 5.01, before the pause committed
    h.ops[1].status = "indeterminate"  # never acknowledged: when it committed is unknown
    assert cancel_violations() == []
    h.ops[1].complete_mono, h.ops[1].status = 3.5, "ok"  # acknowledged before slot 5 started
    assert cancel_violations() == [f"m@{BASE + 5000}"]


def test_a_cancel_stamped_by_a_node_whose_clock_is_behind_matches_its_write() -> None:
    """The pause arrived at 3.0 on a node 0.8 s behind (stamped 2.2) and committed at its ack,
    5.2: slot 5, started at 5.01, started before the cancel, whatever that node's clock said."""
    h = clean()
    for items in h.records.values():
        items[4] = rec("m", 5, state="cancelled", finished_at=iso(BASE + 2200))
    h.ops.insert(1, op("pause", "m", 2.95, 5.2, result=job_view("m", 2, paused=True)))
    h.ops = h.ops[:2]  # (no runs after the pause: only the cancel is judged)
    h.executions = h.executions[:5]

    def cancel_violations() -> list[str]:
        return [v["run"] for v in check_no_run_after_stop(h).violations if "log had cancelled" in v["what"]]

    h.max_clock_offset_s = 0.8
    assert check_no_run_after_stop(h).ok
    h.max_clock_offset_s = 0.0  # judged by the harness's clock alone, it would be a violation
    assert cancel_violations() == [f"m@{BASE + 5000}"]


def test_after_a_full_restart_the_old_leader_leading_again_ends_the_failover() -> None:
    from chaoskit.figures import _failovers

    h = clean()
    h.samples = [s for s in h.samples if not 3.0 <= s["mono"] < 5.0]  # no leader from 3 s to 5 s
    h.faults = [
        *({"kind": "kill", "node": n, "mono": 3.0, "wall_ms": wall(3.0)} for n in ("n1", "n2")),
        *({"kind": "start", "node": n, "mono": 4.0, "wall_ms": wall(4.0)} for n in ("n1", "n2")),
    ]
    events = _failovers(h)
    assert [(e["old_leader"], e["new_leader"], e["new_leader_s"]) for e in events] == [("n1", "n1", 2.0)]
