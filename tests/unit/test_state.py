"""Scenario tests of the replicated state machine: commands in, facts out."""

from __future__ import annotations

from raftsched.commands import CommandType, encode
from raftsched.model import RunState
from raftsched.state import State

from statekit import T0, Driver, job_spec


def test_fire_is_idempotent_per_slot_and_run_id_is_deterministic() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    first = d.fire("j", T0 + 1000)
    assert first["fired"] == ["j@1800000001000"]
    again = d.fire("j", T0 + 1000, node="n3")
    assert again["fired"] == [] and again["rejected"] == 1
    run = d.state.runs["j@1800000001000"]
    assert run.node == "n2" and run.state is RunState.PENDING
    assert d.state.stats["j"]["fired"] == 1


def test_stale_term_fire_is_rejected() -> None:
    d = Driver()
    d.boot(term=1)
    d.add("j")
    assert d.cmd(CommandType.BEGIN_TERM, term=3, leader="n2", now_ms=T0)["ok"]
    result = d.fire("j", T0 + 1000, term=1)
    assert result == {
        "ok": False,
        "code": "stale_term",
        "message": "term 1 is not the current term 3",
        "field": None,
    }
    assert not d.state.runs
    assert not d.cmd(CommandType.BEGIN_TERM, term=2, leader="n1", now_ms=T0)["ok"]


def test_start_and_finish_are_fenced_by_attempt_and_node() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    d.fire("j", T0 + 1000)
    rid = "j@1800000001000"
    assert d.start(rid, node="n3")["accepted"] == []
    assert d.start(rid, attempt=2)["accepted"] == []
    assert d.start(rid)["accepted"] == [rid]
    assert d.finish(rid, attempt=7)["accepted"] == []
    assert d.state.runs[rid].state is RunState.RUNNING
    assert d.finish(rid)["accepted"] == [rid]
    assert d.state.runs[rid].state is RunState.SUCCEEDED
    assert d.finish(rid)["accepted"] == []  # a duplicate report changes nothing
    assert d.state.stats["j"]["succeeded"] == 1


def test_overlap_forbid_records_a_skip() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    d.fire("j", T0 + 1000)
    d.fire("j", T0 + 2000)
    skipped = d.state.runs["j@1800000002000"]
    assert skipped.state is RunState.SKIPPED and "overlap" in (skipped.reason or "")
    assert d.state.jobs["j"].last_slot_ms == T0 + 2000


def test_overlap_replace_cancels_and_queue_waits_for_one() -> None:
    d = Driver()
    d.boot()
    d.add("r", overlap="replace")
    d.fire("r", T0 + 1000)
    d.fire("r", T0 + 2000)
    assert d.state.runs["r@1800000001000"].state is RunState.CANCELLED
    assert d.state.runs["r@1800000002000"].state is RunState.PENDING

    d.add("q", overlap="queue")
    d.fire("q", T0 + 1000)
    d.fire("q", T0 + 2000)
    d.fire("q", T0 + 3000)
    assert d.state.runs["q@1800000002000"].waiting
    assert d.state.runs["q@1800000003000"].state is RunState.SKIPPED
    d.finish("q@1800000001000", at=T0 + 2500)
    released = d.state.runs["q@1800000002000"]
    assert not released.waiting and released.due_ms == T0 + 2500


def test_failure_is_retried_with_backoff_on_another_node() -> None:
    d = Driver()
    d.boot()
    d.add("j", retries={"max": 1, "initial_delay": 2, "jitter": 0})
    d.fire("j", T0 + 1000)
    rid = "j@1800000001000"
    d.finish(rid, outcome="failed", at=T0 + 1500)
    run = d.state.runs[rid]
    assert run.state is RunState.PENDING and run.attempt == 2 and run.node != "n2"
    assert run.due_ms == T0 + 1500 + 2000
    d.finish(rid, outcome="failed", node=run.node or "", attempt=2, at=T0 + 4000)
    assert d.state.runs[rid].state is RunState.FAILED
    assert d.state.stats["j"]["retried"] == 1 and d.state.stats["j"]["failed"] == 1


def test_output_truncated_follows_the_attempt_whose_output_the_run_shows() -> None:
    d = Driver()
    d.boot()
    d.add("j", retries={"max": 1, "initial_delay": 2, "jitter": 0})
    d.fire("j", T0 + 1000)
    rid = "j@1800000001000"
    d.finish(rid, outcome="failed", at=T0 + 1500, output_truncated=True)
    retry = d.state.runs[rid]
    assert retry.attempt == 2 and retry.output_truncated  # it still shows attempt 1's tail
    assert retry.to_dict()["output_truncated"] is True
    d.finish(rid, node=retry.node or "", attempt=2, at=T0 + 4000)  # a report without the field
    done = d.state.runs[rid]
    assert done.state is RunState.SUCCEEDED and not done.output_truncated
    assert "output_truncated" not in done.to_dict()
    restored = State()
    restored.load(d.state.dump())
    assert restored.dump() == d.state.dump()


def test_reassign_by_delivery_policy() -> None:
    d = Driver()
    d.boot()
    d.add("a")
    d.add("m", delivery="at_most_once")
    d.fire("a", T0 + 1000)
    d.fire("m", T0 + 1000)
    d.start("a@1800000001000")
    claim = d.cmd(
        CommandType.CLAIM_RUNS, node="n2", now_ms=T0, items=[{"run_id": "m@1800000001000", "attempt": 1}]
    )
    assert claim["accepted"] == ["m@1800000001000"]
    d.start("m@1800000001000")
    moves = [
        {"run_id": "a@1800000001000", "attempt": 1, "node": "n3"},
        {"run_id": "m@1800000001000", "attempt": 1, "node": "n3"},
    ]
    result = d.cmd(CommandType.REASSIGN_RUNS, term=1, now_ms=T0 + 2000, moves=moves)
    assert result["moved"] == ["a@1800000001000"] and result["lost"] == ["m@1800000001000"]
    moved = d.state.runs["a@1800000001000"]
    assert (moved.node, moved.attempt, moved.state) == ("n3", 2, RunState.PENDING)
    assert d.finish("a@1800000001000", node="n2", attempt=1)["accepted"] == []  # the stale result


def test_at_most_once_cannot_start_unclaimed() -> None:
    d = Driver()
    d.boot()
    d.add("m", delivery="at_most_once")
    d.fire("m", T0 + 1000)
    assert d.start("m@1800000001000")["accepted"] == []


def test_pause_cancels_pending_resume_records_skips_delete_forgets() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    d.fire("j", T0 + 1000)
    d.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 500)
    assert d.state.runs["j@1800000001000"].state is RunState.CANCELLED
    assert d.fire("j", T0 + 2000)["fired"] == []
    d.cmd(
        CommandType.RESUME_JOB,
        job_id="j",
        now_ms=T0 + 5500,
        next_nominal_ms=T0 + 6000,
        skipped={"from_ms": T0 + 2000, "until_ms": T0 + 5000, "count": 4},
    )
    assert d.state.runs["j@1800000002000"].count == 4
    assert d.state.stats["j"]["skipped"] == 4
    assert d.fire("j", T0 + 3000)["fired"] == []  # a slot before resuming never fires
    d.cmd(CommandType.DELETE_JOB, job_id="j", now_ms=T0 + 6000)
    assert "j" not in d.state.jobs and not any(r.job_id == "j" for r in d.state.runs.values())
    d.add("j", now_ms=T0 + 7000)
    assert d.state.jobs["j"].incarnation == 2 and not d.state.job_runs["j"]


def test_versions_and_compare_and_set() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    assert d.add("j")["code"] == "already_exists"
    put = {
        "spec": {"id": "j", "schedule": {"every": 2}, "task": {"type": "shell", "command": ["true"]}},
        "now_ms": T0,
        "mode": "put",
    }
    assert d.cmd(CommandType.PUT_JOB, **put, if_version=5)["code"] == "version_mismatch"
    assert d.cmd(CommandType.PUT_JOB, **put, if_version=1)["version"] == 2
    bad = {**put, "spec": {"id": "j", "schedule": {}, "task": {}}}
    assert d.cmd(CommandType.PUT_JOB, **bad)["field"] == "schedule"
    assert d.state.jobs["j"].version == 2


def test_request_ids_apply_once_and_detect_mismatch() -> None:
    d = Driver()
    d.boot()
    body = {
        "spec": {"id": "k", "schedule": {"every": 1}, "task": {"type": "shell", "command": ["true"]}},
        "now_ms": T0,
        "mode": "create",
        "fp": "abc",
    }
    first = d.cmd(CommandType.PUT_JOB, rid="idem:1", **body)
    second = d.cmd(CommandType.PUT_JOB, rid="idem:1", **body)
    assert first["ok"] and second["ok"] and second["duplicate"]
    assert (
        d.cmd(CommandType.PUT_JOB, rid="idem:1", **{**body, "fp": "other"})["code"] == "idempotency_mismatch"
    )


def test_history_is_bounded() -> None:
    d = Driver()
    d.boot()
    d.cmd(CommandType.BEGIN_TERM, term=2, leader="n1", now_ms=T0, history_per_job=3)
    d.add("j", overlap="allow")
    for k in range(1, 8):
        d.fire("j", T0 + k * 1000, term=2)
        d.finish(f"j@{T0 + k * 1000}")
    assert len(d.state.job_runs["j"]) == 3
    assert d.state.stats["j"]["succeeded"] == 7


def test_malformed_commands_never_raise_and_count_in_digest() -> None:
    state = State()
    for data in (
        b"",
        b"nope",
        b"[]",
        b'{"v": 99, "t": "noop", "body": {}}',
        b'{"v": 1, "t": "fire_runs", "body": {"term": 5}}',
        b'{"v": 1, "t": "put_job", "body": {"spec": 3}}',
    ):
        result = state.apply(data)
        assert result["ok"] is False, data
    report = encode(CommandType.FINISH_RUNS, {"node": "x", "items": [{"run_id": 1}]})
    assert state.apply(report) == {"ok": True, "accepted": []}
    assert state.applied == 7 and not state.runs and not state.jobs


def test_same_log_same_digest_and_snapshot_round_trip() -> None:
    d = Driver()
    d.boot()
    d.add("j")
    d.fire("j", T0 + 1000)
    d.start("j@1800000001000")
    replica = State()
    for data in d.log:
        replica.apply(data)
    assert replica.digest_hex() == d.state.digest_hex()
    restored = State()
    restored.load(d.state.dump())
    assert restored.dump() == d.state.dump()
    tail = encode(
        CommandType.FINISH_RUNS,
        {
            "node": "n2",
            "now_ms": T0,
            "items": [
                {"run_id": "j@1800000001000", "attempt": 1, "outcome": "succeeded", "finished_ms": T0 + 9}
            ],
        },
    )
    assert restored.apply(tail) == d.state.apply(tail)
    assert restored.digest_hex() == d.state.digest_hex()


def test_membership_add_drain_remove_and_no_return() -> None:
    d = Driver()
    d.boot()
    add = {"node": "n4", "raft": "n4:1", "http": "http://n4", "tags": {}, "now_ms": T0}
    assert d.cmd(CommandType.ADD_NODE, **add)["created"] is True
    assert d.state.nodes["n4"].up is False  # down until it registers itself
    assert d.cmd(CommandType.ADD_NODE, **{**add, "raft": "n4:2"})["code"] == "already_exists"
    d.add("j")
    d.fire("j", T0 + 1000, node="n4")
    remove = {"term": 1, "node": "n4", "now_ms": T0 + 2000}
    assert d.cmd(CommandType.REMOVE_NODE, **remove)["code"] == "rejected"  # not draining
    d.cmd(CommandType.DRAIN_NODE, node="n4", draining=True, leaving=True, now_ms=T0 + 1500)
    assert d.cmd(CommandType.REMOVE_NODE, **remove)["code"] == "rejected"  # a run is still on it
    d.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=T0 + 1600,
        moves=[{"run_id": "j@1800000001000", "attempt": 1, "node": "n2"}],
    )
    assert d.cmd(CommandType.REMOVE_NODE, **remove)["removed"] is True
    assert "n4" not in d.state.nodes and "n4" in d.state.removed
    register = {"node": "n4", "http": "http://n4", "raft": "n4:1", "now_ms": T0 + 3000}
    assert d.cmd(CommandType.REGISTER_NODE, **register)["code"] == "removed"
    assert d.cmd(CommandType.ADD_NODE, **add)["created"] is True  # an operator may add it again
    assert d.cmd(CommandType.REGISTER_NODE, **register)["ok"]
    assert d.state.nodes["n4"].up


def test_an_edit_that_cancels_runs_fired_ahead_loses_no_slot_of_the_new_schedule() -> None:
    d = Driver()
    d.boot()
    d.add("j", overlap="allow")
    for k in (1, 2, 3):
        d.fire("j", T0 + k * 1000)
    spec = {
        "id": "j",
        "schedule": {"every": 1.5},
        "overlap": "allow",
        "task": {"type": "shell", "command": ["true"]},
    }
    d.cmd(CommandType.PUT_JOB, spec=spec, now_ms=T0 + 300, mode="put", keep_slots=[T0 + 3000])
    job = d.state.jobs["j"]
    assert (job.last_slot_ms, job.next_nominal_ms) == (T0 + 300, None)  # plan from the edit
    assert d.state.runs["j@1800000001000"].state is RunState.CANCELLED
    assert d.state.runs["j@1800000003000"].state is RunState.PENDING  # in both schedules: kept
    assert d.fire("j", T0 + 1500)["fired"] == ["j@1800000001500"]
    assert d.fire("j", T0 + 3000)["fired"] == []  # the kept run is not fired twice
    assert d.state.jobs["j"].last_slot_ms == T0 + 3000


def test_a_schedule_change_plans_from_the_edit_even_when_every_pending_run_is_kept() -> None:
    d = Driver()
    d.boot()
    d.add("j", overlap="allow")
    d.fire("j", T0 + 2000)  # fired ahead; the new schedule (every 2 s) has this slot too
    spec = {
        "id": "j",
        "schedule": {"every": 2},
        "overlap": "allow",
        "task": {"type": "shell", "command": ["true"]},
    }
    d.cmd(CommandType.PUT_JOB, spec=spec, now_ms=T0 + 100, mode="put", keep_slots=[T0 + 2000])
    assert d.state.runs["j@1800000002000"].state is RunState.PENDING
    assert (d.state.jobs["j"].last_slot_ms, d.state.jobs["j"].next_nominal_ms) == (T0 + 100, None)
    assert d.fire("j", T0 + 2000)["fired"] == []  # kept, never fired twice


def test_a_fire_planned_from_a_replaced_version_is_refused() -> None:
    """Chaos seed 13: an edit committed between the leader's plan and its fire; the old
    schedule's slot fired and moved the job past a slot of the new one, which was lost."""
    d = Driver()
    d.boot()
    d.add("j")
    version = d.state.jobs["j"].version
    assert d.fire("j", T0 + 1000, version=version)["fired"]
    d.cmd(
        CommandType.PUT_JOB,
        spec=job_spec("j", schedule={"every": 1.5}),
        now_ms=T0 + 1200,
        mode="put",
        next_nominal_ms=T0 + 1500,
    )
    stale = d.fire("j", T0 + 2000, version=version)  # the plan read the job before the edit
    assert stale["fired"] == [] and stale["rejected"] == 1
    assert d.state.jobs["j"].last_slot_ms < T0 + 1500  # the new schedule's next slot is still due
    assert d.fire("j", T0 + 1500, version=version + 1)["fired"] == ["j@1800000001500"]
    d.fire("j", T0 + 3000)  # without a version (older logs): fenced by incarnation alone
    assert "j@1800000003000" in d.state.runs  # fired, or skipped by the overlap policy: decided
