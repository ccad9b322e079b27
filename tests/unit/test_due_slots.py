"""Every due slot is a run (pending or not) or a record at the end, for every overlap policy and
both delivery policies, when a pause, a resume, an edit or a delete meets slots the leader has
not fired yet: by its own clock, or by a writer's clock ahead of or behind the leader's.

The leader is the real scheduler on a fake clock (test_scheduler's rig); the workers start each
run at its due time and run it for RUN_MS (longer than the period, so the overlap policies act);
the writes carry what the API builds for them (`raftsched.accounting`), stamped by the writer's
clock. The check reads only the state: each slot of the schedule in force up to the committed
clock is covered by a run, a record, or (paused) the range reads show.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from test_scheduler import Rig

from raftsched import triggers
from raftsched.accounting import edit_items, overlay, paused_items
from raftsched.commands import CommandType, encode
from raftsched.model import JobSpec, RunState
from raftsched.records import Run
from raftsched.state.paused import position

from statekit import T0, job_spec

RUN_MS = 1500
TICK_S = 0.1
POLICIES = [
    (overlap, delivery)
    for delivery in ("at_least_once", "at_most_once")
    for overlap in ("forbid", "allow", "replace", "queue")
]
SKEWS_MS = (-2000, 0, 2000)  # the writer's clock against the leader's


class Scenario:
    """One job (every 1 s) on a version 2 cluster, its workers, and the writes made to it."""

    def __init__(self, overlap: str, delivery: str, skew_ms: int) -> None:
        self.rig = Rig(lookahead_s=3.0)
        self.skew_ms = skew_ms
        for node in list(self.rig.state.nodes):
            rec = self.rig.state.nodes[node]
            self.rig.cmd(
                CommandType.REGISTER_NODE, node=node, http=rec.http, raft=rec.raft, commands=2, now_ms=T0
            )
        self.over = {"overlap": overlap, "delivery": delivery}
        self.rig.add("j", **self.over)
        # (schedule, in force after this slot, until this slot) for the check
        self.segments: list[tuple[dict[str, Any], int, int | None]] = [({"every": 1}, T0 - 1, None)]
        self.deleted_total: tuple[int, int] | None = None
        self.paused_at: int | None = None
        self.paused: list[tuple[int, int]] = []  # (after, until): no slot in it runs

    @property
    def state(self) -> Any:
        return self.rig.state

    def writer_ms(self) -> int:
        return self.rig.clock.now_ms() + self.skew_ms

    async def run(self, seconds: float) -> None:
        """The leader ticks and the workers work, TICK_S at a time."""
        for _ in range(round(seconds / TICK_S)):
            await self.rig.tick(TICK_S)
            self.work()

    def work(self) -> None:
        now = self.rig.clock.now_ms()
        for run in [self.state.runs[r] for r in self.state.job_active.get("j", {})]:
            if run.state is RunState.PENDING and not run.waiting and run.due_ms <= now:
                if self.over["delivery"] == "at_most_once":
                    self._report(CommandType.CLAIM_RUNS, run, {})
                self._report(CommandType.START_RUNS, run, {"started_ms": now})
            elif run.state is RunState.RUNNING and now - (run.started_ms or now) >= RUN_MS:
                self._report(CommandType.FINISH_RUNS, run, {"outcome": "succeeded", "finished_ms": now})

    def _report(self, cmd_type: CommandType, run: Run, extra: dict[str, Any]) -> None:
        item = {"run_id": run.run_id, "attempt": run.attempt, **extra}
        self.rig.cmd(cmd_type, node=run.node, now_ms=self.rig.clock.now_ms(), items=[item])

    # ---------------------------------------------------------------- the writes (as the API builds them)

    def write(self, cmd_type: CommandType, body: dict[str, Any]) -> dict[str, Any]:
        result = self.state.apply(encode(cmd_type, body, v=2 if "accounted" in body else None))
        assert result["ok"], result
        return result

    def pause(self) -> None:
        self.write(CommandType.PAUSE_JOB, {"job_id": "j", "now_ms": self.writer_ms()})
        # Slots the leader's clock had reached may have started before the pause was committed.
        self.paused_at = max(self.writer_ms(), self.rig.clock.now_ms())

    def resumed(self, now: int) -> None:
        if self.paused_at is not None:
            self.paused.append((self.paused_at, now))
            self.paused_at = None

    def resume(self) -> None:
        now, job = self.writer_ms(), self.state.jobs["j"]
        self.resumed(now)
        nxt = triggers.next_fire_ms(job.spec.schedule, now, created_ms=job.created_ms)
        body = {"job_id": "j", "now_ms": now, "next_nominal_ms": nxt, "accounted": paused_items(job, now)}
        self.write(CommandType.RESUME_JOB, body)

    def edit(self, **over: Any) -> None:
        now, old = self.writer_ms(), self.state.jobs["j"]
        raw = job_spec("j", **{**self.over, "paused": old.spec.paused, **over})
        spec = JobSpec.from_dict(raw)
        items = edit_items(old, spec, now)
        after = max(position(old), now) if items or spec.schedule != old.spec.schedule else position(old)
        nxt = triggers.next_fire_ms(spec.schedule, after, created_ms=old.created_ms)
        body = {"spec": raw, "now_ms": now, "mode": "put", "next_nominal_ms": nxt, "accounted": items}
        self.write(CommandType.PUT_JOB, body)
        if not spec.paused:
            self.resumed(now)
        if spec.schedule != old.spec.schedule:
            boundary = position(self.state.jobs["j"])  # the new schedule is in force after it
            self.segments[-1] = (*self.segments[-1][:2], boundary)
            self.segments.append((raw["schedule"], boundary, None))

    def delete(self) -> None:
        now, job = self.writer_ms(), self.state.jobs["j"]
        items = paused_items(job, now)
        last = items[-1]["until_ms"] if items else position(job)
        self.write(CommandType.DELETE_JOB, {"job_id": "j", "now_ms": now, "accounted": items})
        counted = sum(self.state.totals[k] for k in ("fired", "skipped", "missed"))
        self.deleted_total = (counted, last)

    # ---------------------------------------------------------------- the check

    def unaccounted(self) -> list[int]:
        """The due slots (by the committed clock) that no run or record covers."""
        if self.deleted_total is not None:
            counted, last = self.deleted_total
            due = triggers.slots_between(_schedule({"every": 1}), T0 - 1, last, created_ms=T0, limit=10**6)
            assert counted == len(due), "each slot up to the delete is counted once"
            return []
        covered = set()
        for run in _shown(self.state):
            covered.update(range(run.nominal_ms, (run.until_ms or run.nominal_ms) + 1))
            ran_while_paused = run.attempt > 0 and run.state is not RunState.CANCELLED
            assert not (ran_while_paused and any(lo < run.nominal_ms <= hi for lo, hi in self.paused)), run
        missing = []
        for schedule, low, high in self.segments:
            end = self.state.clock_ms if high is None else min(high, self.state.clock_ms)
            due = triggers.slots_between(_schedule(schedule), low, end, created_ms=T0, limit=10**6)
            missing.extend(slot for slot in due if slot not in covered)
        return missing


def _shown(state: Any) -> list[Run]:
    """The job's runs and records as a read shows them (with a paused range up to the clock)."""
    job = state.jobs["j"]
    shown = overlay(job, state.newest_run("j"), state.clock_ms)
    return [r for r in shown.runs(state.runs_newest_first("j")) if not r.manual]


def _schedule(raw: dict[str, Any]) -> Any:
    return JobSpec.from_dict(job_spec("j", schedule=raw)).schedule


Op = Callable[[Scenario], Awaitable[None]]


async def pause_for_long(s: Scenario) -> None:
    s.pause()
    await s.run(75)  # past a leader accounting turn


async def pause_then_resume(s: Scenario) -> None:
    s.pause()
    await s.run(3.3)
    s.resume()
    await s.run(5)


async def edit_the_schedule(s: Scenario) -> None:
    s.edit(schedule={"every": 0.7})
    await s.run(5)


async def edit_to_resume(s: Scenario) -> None:
    s.pause()
    await s.run(3.3)
    s.edit(paused=False)
    await s.run(5)


async def edit_while_paused(s: Scenario) -> None:
    s.pause()
    await s.run(2.2)
    s.edit(schedule={"every": 0.7})
    await s.run(2.2)
    s.resume()
    await s.run(4)


async def pause_then_delete(s: Scenario) -> None:
    s.pause()
    await s.run(3.3)
    s.delete()


OPS: list[Op] = [
    pause_for_long,
    pause_then_resume,
    edit_the_schedule,
    edit_to_resume,
    edit_while_paused,
    pause_then_delete,
]


@pytest.mark.parametrize("skew_ms", SKEWS_MS)
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.__name__)
@pytest.mark.parametrize(("overlap", "delivery"), POLICIES)
async def test_every_due_slot_is_a_run_or_a_record(overlap: str, delivery: str, op: Op, skew_ms: int) -> None:
    s = Scenario(overlap, delivery, skew_ms)
    await s.run(6.05)  # the cluster version rises, runs fire, overlap acts
    assert s.state.cluster_version == 2
    await op(s)
    await s.run(1.5)  # a last committed clock
    assert s.unaccounted() == []
    if s.deleted_total is None:
        assert s.state.clock_ms >= s.rig.clock.now_ms() - 1000  # the leader commits its clock
