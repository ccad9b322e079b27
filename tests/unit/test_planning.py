"""Planning's cost and its hold of the state lock: the same decisions, cheaper.

Each planned slot's successor is computed once; the scheduler reads the state under its lock in
chunks and plans outside it, and drops what an edit replaced while it planned.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_scheduler import FIRE, Rig, rid

from raftsched import scheduler, triggers
from raftsched.commands import CommandType
from raftsched.model import iso_ms
from raftsched.state import State

from statekit import T0

S = 1000


def counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = triggers.next_fire_ms

    def next_fire_ms(*args: Any, **kwargs: Any) -> int | None:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(triggers, "next_fire_ms", next_fire_ms)
    return calls


async def spread_rig(jobs: int) -> Rig:
    """`jobs` jobs every second, phases 20 ms apart, the first plan made."""
    rig = Rig()
    for i in range(jobs):
        rig.add(f"j{i}", overlap="allow", schedule={"every": 1, "start_at": iso_ms(T0 + 20 * i)})
    await rig.tick()
    return rig


def keyed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The jobs whose next slot the scheduler looks up (`next_key`), in order."""
    keys: list[str] = []
    real = scheduler.next_key

    def next_key(job: Any) -> int | None:
        keys.append(job.spec.id)
        return real(job)

    monkeypatch.setattr(scheduler, "next_key", next_key)
    return keys


@pytest.mark.parametrize("schedule", [{"every": 1}, {"cron": "* * * * * *"}])
async def test_each_slot_costs_one_trigger_computation(
    monkeypatch: pytest.MonkeyPatch, schedule: dict[str, Any]
) -> None:
    """Its successor, recorded as the fire's next_nominal_ms and reused as the next plan's first slot."""
    rig = Rig()
    rig.add("j", overlap="allow", schedule=schedule)
    await rig.tick()  # the first plan of the term works out the first slot once more
    calls = counting(monkeypatch)
    for _ in range(40):
        await rig.tick(0.25)
    fired = sum(len(r["fired"]) for r in rig.proposer.results[2:])
    assert fired == 10 and len(calls) == fired


async def test_a_waiting_job_costs_no_trigger_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A `forbid` job whose run is active is looked at every tick until its next slot is due."""
    rig = Rig()
    rig.add("j")
    await rig.tick(1)
    rig.start(rid(T0 + S))
    calls = counting(monkeypatch)
    for _ in range(9):
        await rig.tick(0.1)
    assert rig.fired_slots() == [T0 + S] and calls == []


class WatchedLock:
    """The state's RLock, telling whether the loop holds it, and how many jobs each hold read."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.depth = inner, 0

    def __enter__(self) -> WatchedLock:
        self.inner.acquire()
        self.depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        self.inner.release()


async def test_planning_runs_outside_the_state_lock_reading_it_in_chunks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rig = Rig()
    jobs = scheduler.PLAN_CHUNK * 2 + 10
    for k in range(jobs):
        rig.add(f"j{k}")
    lock = rig.state.lock = WatchedLock(rig.state.lock)  # type: ignore[assignment]
    held: list[int] = []
    reads: list[int] = []
    real_plan_job, real_read = scheduler.plan_job, rig.scheduler._read_jobs

    def plan_job(*args: Any, **kwargs: Any) -> int | None:
        held.append(lock.depth)
        return real_plan_job(*args, **kwargs)

    def read_jobs(entries: list[tuple[int, str]]) -> dict[str, Any]:
        reads.append(len(entries))
        return real_read(entries)

    monkeypatch.setattr(scheduler, "plan_job", plan_job)
    monkeypatch.setattr(rig.scheduler, "_read_jobs", read_jobs)
    await rig.tick()
    assert len(held) == jobs and set(held) == {0}
    assert reads == [scheduler.PLAN_CHUNK, scheduler.PLAN_CHUNK, 10]
    assert len(rig.proposer.of(FIRE)) == 1 and len(rig.proposer.results[-1]["fired"]) == jobs


async def test_a_job_edited_while_the_plan_is_made_is_not_fired_from_its_old_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The edit commits between the read and the proposal: the plan drops the job's slots (the state
    would take a slot of the old schedule that is new to it), and the next tick plans the new one."""
    rig = Rig()
    rig.add("j", overlap="allow")
    rig.add("other", overlap="allow")
    real_plan_job = scheduler.plan_job
    edited: list[str] = []

    def plan_job(job: Any, *args: Any, **kwargs: Any) -> int | None:
        key = real_plan_job(job, *args, **kwargs)
        if job.spec.id == "j" and not edited:
            spec = {**job.spec.to_dict(), "schedule": {"every": 0.7}}
            result = rig.cmd(CommandType.PUT_JOB, spec=spec, now_ms=rig.clock.now_ms(), mode="put")
            edited.append(str(result["ok"]))
        return key

    monkeypatch.setattr(scheduler, "plan_job", plan_job)
    await rig.tick()
    assert edited == ["True"]
    fires = rig.proposer.of(FIRE)[0].body["fires"]
    assert {f["job_id"] for f in fires} == {"other"}
    assert "j" not in {rig.state.runs[r].job_id for r in rig.state.runs}
    await rig.tick(0.05)
    assert rig.fired_slots("j") == [T0 + 700 * k for k in range(1, 5)]  # the new schedule only


async def test_fires_of_one_plan_spread_the_load_as_before() -> None:
    """Least-loaded within one command: each fire sees the runs the earlier ones assigned."""
    rig = Rig()
    for k in range(9):
        rig.add(f"j{k}")
    await rig.tick()
    nodes = [f["nodes"][0] for f in rig.proposer.of(FIRE)[0].body["fires"]]
    assert sorted(nodes) == ["n1"] * 3 + ["n2"] * 3 + ["n3"] * 3


async def test_wake_ups_between_chunks_do_not_rebuild_the_due_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wake-up that plans nothing (the next chunk is not due) leaves the queue as it is: rebuilding
    it reads every job (seen: 5 % of a leader's loop at 1,000 jobs, once per commit)."""
    rig = await spread_rig(50)
    keys = keyed(monkeypatch)
    for _ in range(200):
        await rig.tick(0.01)
    assert len(rig.proposer.of(FIRE)) >= 19 and keys == []


async def test_a_job_table_change_requeues_only_the_jobs_it_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An API write re-queues the job it changed, not every job (rebuilding the queue on each write
    made runs seconds late under a burst of job creations at a few thousand jobs). Each kind of
    change still takes effect: created fires, edited follows its new schedule, paused and deleted
    stop."""
    rig = await spread_rig(40)
    keys = keyed(monkeypatch)
    now = rig.clock.now_ms()
    before = {j: set(rig.fired_slots(j)) for j in ("j1", "j2", "j4")}
    rig.add("new", overlap="allow")
    edited = {**rig.state.jobs["j1"].spec.to_dict(), "schedule": {"every": 0.5}}
    assert rig.cmd(CommandType.PUT_JOB, spec=edited, now_ms=now, mode="put")["ok"]
    assert rig.cmd(CommandType.PAUSE_JOB, job_id="j2", now_ms=now)["ok"]
    assert rig.cmd(CommandType.DELETE_JOB, job_id="j3", now_ms=now)["ok"]
    for _ in range(30):
        await rig.tick(0.1)
    assert sorted(set(keys)) == ["j1", "j2", "new"]  # j3 is gone: nothing to compute
    assert rig.fired_slots("new")[:2] == [T0 + S, T0 + 2 * S]
    assert set(rig.fired_slots("j1")) - before["j1"] and all(
        (s - T0) % 500 == 0 for s in set(rig.fired_slots("j1")) - before["j1"]
    )
    assert set(rig.fired_slots("j2")) == before["j2"]  # paused: nothing new
    assert "j3" not in rig.state.jobs and not any(r.startswith("j3@") for r in rig.state.runs)
    assert len(set(rig.fired_slots("j4")) - before["j4"]) == 3  # the others go on


async def test_changes_not_known_one_by_one_rebuild_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """A restore (any jobs) or more changes than the state keeps: every job is looked at again."""
    rig = await spread_rig(10)
    monkeypatch.setattr(rig.state, "job_changes", rig.state.job_changes.__class__(maxlen=2))
    for i in range(3):
        rig.add(f"k{i}", overlap="allow")
    keys = keyed(monkeypatch)
    await rig.tick(0.01)
    assert len(set(keys)) == 13
    await rig.tick(1)
    assert all(rig.fired_slots(f"k{i}") for i in range(3))


def test_jobs_changed_since_names_the_changed_jobs_until_it_cannot() -> None:
    rig = Rig()
    start = rig.state.generation
    rig.add("a")
    rig.add("b")
    assert rig.cmd(CommandType.DELETE_JOB, job_id="a", now_ms=T0)["ok"]
    assert rig.state.jobs_changed_since(start) == {"a", "b"}
    assert rig.state.jobs_changed_since(start + 2) == {"a"}
    assert rig.state.jobs_changed_since(rig.state.generation) == set()
    copy = State()
    copy.load(rig.state.dump())  # a snapshot: its changes are not known one by one
    assert copy.jobs_changed_since(copy.generation - 1) is None
    spec = rig.state.jobs["b"].spec.to_dict()
    restored = rig.cmd(CommandType.RESTORE_JOBS, jobs=[{"spec": spec}], now_ms=T0)
    assert rig.state.jobs_changed_since(rig.state.generation - 1) is None, restored


async def test_entries_left_by_requeued_jobs_do_not_pile_up() -> None:
    """Each edit re-queues the job and leaves its old entry in the heap until its key comes: a
    yearly cron edited often would grow the heap without bound."""
    rig = await spread_rig(5)
    rig.add("yearly", schedule={"cron": "0 0 1 1 *"})
    spec = rig.state.jobs["yearly"].spec.to_dict()
    for k in range(3 * scheduler.STALE_ENTRIES_KEPT):
        edited = {**spec, "description": f"edit {k}"}
        assert rig.cmd(CommandType.PUT_JOB, spec=edited, now_ms=rig.clock.now_ms(), mode="put")["ok"]
        rig.scheduler._refresh_queue()
    assert len(rig.scheduler._queue) <= 2 * len(rig.scheduler._stamps) + scheduler.STALE_ENTRIES_KEPT
    await rig.tick(1)
    assert rig.fired_slots("j0")  # the others still fire
