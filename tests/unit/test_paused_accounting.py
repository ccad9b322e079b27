"""Every due slot is accounted: a paused job's range, and the slots an edit overtakes (state/paused.py).

The state's own rules first (which items it accepts, what it records), then what reads show
(`accounting.overlay`: exactly what the leader records later), then the writes of version 2
(resume, edit, delete), each against the version 1 gap it closes.
"""

from __future__ import annotations

from typing import Any

from raftsched.accounting import edit_items, overlay, paused_items, unaccounted
from raftsched.commands import CommandType, encode
from raftsched.model import JobSpec, RunState
from raftsched.records import Run
from raftsched.state.paused import PAUSED, UNFIRED_BEFORE_EDIT, UNFIRED_BEFORE_PAUSE, position

from statekit import T0, Driver, job_spec, upgrade

S = 1000


def paused_driver(**over: Any) -> Driver:
    """A version 2 cluster with job j (every 1 s from T0) fired up to T0+2s, paused at T0+2.5s."""
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j", overlap="allow", **over)
    for k in (1, 2):
        d.fire("j", T0 + k * S)
    assert d.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 2500)["ok"]
    return d


def account(d: Driver, now_ms: int, items: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The leader's turn, as the scheduler builds it."""
    job = d.state.jobs["j"]
    body = [r.item() for r in unaccounted(job, now_ms)] if items is None else items
    return d.cmd(CommandType.ACCOUNT_PAUSED, term=1, now_ms=now_ms, items=body)


def records(d: Driver, job_id: str = "j") -> list[Run]:
    return [d.state.runs[r] for r in d.state.job_runs.get(job_id, {})]


def covered(runs: list[Run]) -> set[int]:
    """The slots (every 1 s from T0) that the job's runs and records account for."""
    out: set[int] = set()
    for run in runs:
        if not run.manual:
            out.update(range(run.nominal_ms, (run.until_ms or run.nominal_ms) + 1, S))
    return out


def test_the_leader_records_a_paused_range_and_extends_it_turn_after_turn() -> None:
    d = paused_driver()
    result = account(d, T0 + 10_400)
    assert result == {"ok": True, "accounted": 1, "refused": 0}
    skipped = d.state.runs["j@1800000003000"]
    assert (skipped.state, skipped.reason, skipped.until_ms, skipped.count) == (
        RunState.SKIPPED,
        PAUSED,
        T0 + 10 * S,
        8,
    )
    assert position(d.state.jobs["j"]) == T0 + 10 * S and d.state.clock_ms == T0 + 10_400
    account(d, T0 + 70_000)
    assert len(records(d)) == 3  # two fired runs and one record, however long the pause
    assert d.state.runs["j@1800000003000"].count == 68 and d.state.stats["j"]["skipped"] == 68
    assert account(d, T0 + 70_500) == {"ok": True, "accounted": 0, "refused": 0}  # a clock tick


def test_slots_due_before_the_pause_and_never_fired_are_missed_the_rest_skipped() -> None:
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j")
    d.fire("j", T0 + S)  # then no leader: T0+2s and T0+3s are never fired
    d.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 3500)  # without the `missed` offer
    items = [r.item() for r in unaccounted(d.state.jobs["j"], T0 + 6000)]
    assert [(i["from_ms"], i["until_ms"], i["count"]) for i in items] == [
        (T0 + 2 * S, T0 + 3 * S, 2),
        (T0 + 4 * S, T0 + 6 * S, 3),
    ]
    assert account(d, T0 + 6000)["accounted"] == 2
    missed, skipped = d.state.runs["j@1800000002000"], d.state.runs["j@1800000004000"]
    assert (missed.state, missed.reason, missed.count) == (RunState.MISSED, UNFIRED_BEFORE_PAUSE, 2)
    assert (skipped.state, skipped.reason, skipped.count) == (RunState.SKIPPED, PAUSED, 3)
    assert covered(records(d)) >= set(range(T0 + S, T0 + 6 * S + 1, S))


def test_items_that_do_not_start_at_the_position_or_are_not_due_are_refused() -> None:
    d = paused_driver()
    good = [r.item() for r in unaccounted(d.state.jobs["j"], T0 + 5000)][0]
    bad = [
        {**good, "after_ms": good["after_ms"] - S},  # a stale view
        {**good, "until_ms": T0 + 6000, "count": 4},  # not due by the command's now
        {**good, "version": good["version"] - 1},  # another version of the job
        {**good, "incarnation": 99},
        {**good, "count": True},
        {**good, "count": 10**6},  # more slots than milliseconds
        {**good, "job_id": "other"},
    ]
    assert account(d, T0 + 5000, bad) == {"ok": True, "accounted": 0, "refused": len(bad)}
    assert position(d.state.jobs["j"]) == good["after_ms"]
    assert account(d, T0 + 5000, [good, good]) == {"ok": True, "accounted": 1, "refused": 1}  # once


def test_a_range_across_the_pause_is_refused_it_must_be_two() -> None:
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j")
    d.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 2500)
    job = d.state.jobs["j"]
    across = {"job_id": "j", "incarnation": job.incarnation, "after_ms": T0 - 1}
    across.update(from_ms=T0 + S, until_ms=T0 + 4 * S, count=4)
    assert account(d, T0 + 5000, [across])["refused"] == 1


def test_account_paused_is_a_leader_command_of_version_2() -> None:
    d = paused_driver()
    assert d.cmd(CommandType.ACCOUNT_PAUSED, term=0, now_ms=T0 + 9000, items=[])["code"] == "stale_term"
    d.cmd(CommandType.RESUME_JOB, v=2, job_id="j", now_ms=T0 + 3000, accounted=[], next_nominal_ms=T0 + 4000)
    item = {"job_id": "j", "incarnation": 1, "after_ms": T0 + 3000, "from_ms": T0 + 4000}
    item.update(until_ms=T0 + 4000, count=1)
    assert account(d, T0 + 9000, [item])["refused"] == 1  # not paused: the leader fires it


def test_reads_show_what_the_leader_records_later_identically() -> None:
    d = paused_driver()
    account(d, T0 + 6000)
    job, clock = d.state.jobs["j"], T0 + 9700
    shown = overlay(job, d.state.newest_run("j"), clock)
    listed = list(shown.runs(d.state.runs_newest_first("j")))
    assert dict(shown.counts) == {"skipped": 3, "missed": 0}
    account(d, clock)
    assert listed == list(d.state.runs_newest_first("j"))
    assert shown.last_slot_ms() == T0 + 9 * S


def test_resume_records_the_range_and_a_stale_resume_applies_nothing() -> None:
    d = paused_driver()
    job = d.state.jobs["j"]
    stale = paused_items(job, T0 + 8000)
    account(d, T0 + 5000)  # the leader's turn commits between the read and the resume
    body = {"job_id": "j", "now_ms": T0 + 8000, "next_nominal_ms": T0 + 9000}
    refused = d.state.apply(encode(CommandType.RESUME_JOB, {**body, "accounted": stale}, rid="idem:r", v=2))
    assert refused["code"] == "unavailable" and d.state.jobs["j"].spec.paused
    fresh = paused_items(d.state.jobs["j"], T0 + 8000)
    accepted = encode(CommandType.RESUME_JOB, {**body, "accounted": fresh}, rid="idem:r", v=2)
    assert d.state.apply(accepted)["ok"]
    assert covered(records(d)) == set(range(T0 + S, T0 + 8 * S + 1, S))
    assert position(d.state.jobs["j"]) == T0 + 8000 and not d.state.jobs["j"].spec.paused


def test_delete_of_a_paused_job_counts_its_range() -> None:
    """Version 1 deleted a paused job's range uncounted: its records went with it, and nothing
    had recorded them before."""
    d = paused_driver()
    before = dict(d.state.totals)
    items = paused_items(d.state.jobs["j"], T0 + 12_000)
    assert d.cmd(CommandType.DELETE_JOB, v=2, job_id="j", now_ms=T0 + 12_000, accounted=items)["ok"]
    assert d.state.totals["skipped"] - before["skipped"] == 10 and "j" not in d.state.jobs


def test_an_edit_that_resumes_records_the_range_skipped_and_plans_from_the_edit() -> None:
    """Version 1: a PUT with `paused: false` dropped the range, and planning from the old
    position then fired a catch-up run and recorded the rest `missed`."""
    d = paused_driver()
    old = d.state.jobs["j"]
    spec = job_spec("j", overlap="allow", paused=False)
    items = edit_items(old, JobSpec.from_dict(spec), T0 + 7500)
    put = {"spec": spec, "now_ms": T0 + 7500, "mode": "put", "next_nominal_ms": T0 + 8000}
    assert d.state.apply(encode(CommandType.PUT_JOB, {**put, "accounted": items}, v=2))["ok"]
    job = d.state.jobs["j"]
    assert not job.spec.paused and position(job) == T0 + 7500 and job.next_nominal_ms == T0 + 8000
    assert covered(records(d)) == set(range(T0 + S, T0 + 7 * S + 1, S))
    assert d.state.runs["j@1800000003000"].state is RunState.SKIPPED


def test_an_edit_of_a_paused_schedule_records_the_old_range_and_stays_paused() -> None:
    d = paused_driver()
    spec = job_spec("j", overlap="allow", paused=True, schedule={"every": 2})
    items = edit_items(d.state.jobs["j"], JobSpec.from_dict(spec), T0 + 6500)
    put = {"spec": spec, "now_ms": T0 + 6500, "mode": "put", "next_nominal_ms": None, "accounted": items}
    assert d.state.apply(encode(CommandType.PUT_JOB, put, v=2))["ok"]
    job = d.state.jobs["j"]
    assert job.spec.paused and position(job) == T0 + 6500
    assert covered(records(d)) == set(range(T0 + S, T0 + 6 * S + 1, S))
    later = unaccounted(job, T0 + 12_000)  # the new schedule's range goes on from the edit
    assert [(r.from_ms, r.count) for r in later] == [(T0 + 8000, 3)]


def test_an_edit_that_overtakes_due_unfired_slots_records_them_missed() -> None:
    """A forbid job waits for its due time while a run is active: an edit of its schedule in
    that moment (or by a clock ahead of the leader's) overtook slots no one fired, and version 1
    planned the new schedule from the old position, so those slots were neither run nor
    recorded."""
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j")
    d.fire("j", T0 + S)
    d.start("j@1800000001000", at=T0 + S)  # still running at T0+2s: the leader waits
    spec = job_spec("j", schedule={"every": 5})
    items = edit_items(d.state.jobs["j"], JobSpec.from_dict(spec), T0 + 3200)
    put = {"spec": spec, "now_ms": T0 + 3200, "mode": "put", "next_nominal_ms": T0 + 5000}
    assert d.state.apply(encode(CommandType.PUT_JOB, {**put, "accounted": items}, v=2))["ok"]
    missed = d.state.runs["j@1800000002000"]
    assert (missed.state, missed.reason, missed.until_ms, missed.count) == (
        RunState.MISSED,
        UNFIRED_BEFORE_EDIT,
        T0 + 3 * S,
        2,
    )
    assert position(d.state.jobs["j"]) == T0 + 3200


def test_an_edit_that_keeps_the_schedule_records_nothing_and_the_leader_fires_on() -> None:
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j")
    d.fire("j", T0 + S)
    spec = job_spec("j", description="same schedule")
    assert edit_items(d.state.jobs["j"], JobSpec.from_dict(spec), T0 + 3200) == []
    put = {"spec": spec, "now_ms": T0 + 3200, "mode": "put", "next_nominal_ms": T0 + 2000, "accounted": []}
    assert d.state.apply(encode(CommandType.PUT_JOB, put, v=2))["ok"]
    assert position(d.state.jobs["j"]) == T0 + S  # T0+2s and T0+3s are still the leader's to fire


def test_a_slot_at_the_instant_of_the_pause_is_paused_not_missed() -> None:
    """A job created paused at a whole second has a cron slot at that instant: it was never due
    while the job was enabled."""
    d = Driver()
    d.boot()
    upgrade(d)
    d.add("j", paused=True, schedule={"cron": "* * * * * *"})
    items = paused_items(d.state.jobs["j"], T0 + 3000)
    assert [(i["from_ms"], i["count"]) for i in items] == [(T0, 4)]
    assert account(d, T0 + 3000, items)["accounted"] == 1
    assert d.state.runs[f"j@{T0}"].state is RunState.SKIPPED
