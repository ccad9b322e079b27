"""Slots that no leader fires, recorded: a paused job's range, and the slots an edit overtakes.

A job's *position* is its `last_slot_ms` (`created_ms - 1` before its first slot): every slot of
the job up to its position has a run or a record, and no slot after it has either. While the job
is enabled, the leader fires and records slots from its position on. While it is paused, the
slots after its position form its *paused range*: those before `paused_ms` (due before the pause
took effect, and never fired) are `missed`, the later ones `skipped` ("job paused").

The range is recorded without a slot being lost or counted twice:
- reads show it, up to the committed clock `clock_ms`, as the records it will become
  (`raftsched.accounting`);
- the leader records it at least once a minute (`account_paused`), extending the job's newest
  record of the range rather than adding one per turn, so a paused job holds at most two;
- a resume, an edit and a delete record what is left of it (their `accounted` items, command
  version 2) before they change the job, and an edit that changes an enabled job's schedule
  records the old schedule's slots it overtakes (due by the edit, never fired) as `missed`.

Trigger maths stays outside the state: an item names the slots it covers (`from_ms`, `until_ms`,
`count`) and the position it starts after (`after_ms`); the state accepts it only when that is
the job's position, so items computed from a stale view are refused, never applied twice.
"""

from __future__ import annotations

from typing import Any

from ..model import JobSpec, RunState
from ..records import JobRecord, Run, evolve
from .data import OUTCOME_COUNTER, Result, StateData, ok, slot_record

__all__ = ["PAUSED", "PausedCommands", "check_item", "classify", "edit_replans", "position", "range_record"]

PAUSED = "job paused"
UNFIRED_BEFORE_PAUSE = "not fired before the job was paused"
UNFIRED_BEFORE_EDIT = "not fired before the job was edited"
_ITEM_FIELDS = ("incarnation", "after_ms", "from_ms", "until_ms", "count")


def position(job: JobRecord) -> int:
    """The job's last accounted slot: every slot after it has neither a run nor a record."""
    return job.last_slot_ms if job.last_slot_ms is not None else job.created_ms - 1


def edit_replans(old: JobRecord, spec: JobSpec) -> bool:
    """Does an edit of `old` to `spec` end its schedule (a new one, or resumed), so that the old
    one's unrecorded slots are recorded first and the job plans on from the edit?"""
    return spec.schedule != old.spec.schedule or (old.spec.paused and not spec.paused)


def classify(job: JobRecord, from_ms: int, until_ms: int) -> tuple[RunState, str] | None:
    """How slots from_ms..until_ms of `job`, none fired, are recorded (None: the range straddles
    the moment the job was paused, and must be two ranges)."""
    if not job.spec.paused:
        return RunState.MISSED, UNFIRED_BEFORE_EDIT
    if job.paused_ms is None or from_ms >= job.paused_ms:
        return RunState.SKIPPED, PAUSED  # a slot at the pause's instant is paused too
    if until_ms < job.paused_ms:
        return RunState.MISSED, UNFIRED_BEFORE_PAUSE
    return None


class PausedCommands(StateData):
    def _apply_account_paused(self, body: dict[str, Any]) -> Result:
        """The leader's turn: paused jobs' due slots recorded (the body's `now_ms` is also the
        committed clock, which this command advances when nothing else commits)."""
        accounted = refused = 0
        for item in body.get("items", ()):
            job = self.jobs.get(str(item.get("job_id")))
            if job is not None and job.spec.paused and self._account(job, [item], body["now_ms"]) is not None:
                accounted += 1
            else:
                refused += 1
        return ok(accounted=accounted, refused=refused)

    def _account(self, job: JobRecord, items: list[dict[str, Any]], now_ms: int) -> JobRecord | None:
        """Record `items`, ranges of `job`'s slots after its position, oldest first, each
        starting where the one before ended. Returns the job moved past them, or None, having
        recorded nothing, when one does not fit (a stale view: the proposer may read again)."""
        at = position(job)
        checked: list[tuple[dict[str, Any], tuple[RunState, str]]] = []
        for item in items:
            verdict = check_item(job, item, at, now_ms)
            if verdict is None:
                return None
            checked.append((item, verdict))
            at = item["until_ms"]
        if not checked:
            return job
        for item, (state, reason) in checked:
            self._record_range(job, item, state, reason, now_ms)
        moved = self.jobs[job.spec.id] = evolve(job, last_slot_ms=at)
        return moved

    def _record_range(
        self, job: JobRecord, item: dict[str, Any], state: RunState, reason: str, now_ms: int
    ) -> None:
        newest = self.newest_run(job.spec.id)
        record = range_record(job, newest, item, state, reason, now_ms)
        if newest is not None and record.run_id == newest.run_id:
            self.runs[record.run_id] = record
            self._count(job.spec.id, OUTCOME_COUNTER[state], item["count"])
        else:
            self._record(
                job, state, record.nominal_ms, now_ms, reason, until_ms=record.until_ms, count=record.count
            )


def range_record(
    job: JobRecord, newest: Run | None, item: dict[str, Any], state: RunState, reason: str, now_ms: int
) -> Run:
    """The record an accepted `item` becomes: the job's `newest` record extended, when it is
    the same kind of record and ends right before the item (a paused range recorded over several
    turns), else a new one."""
    count = item["count"]
    if (
        newest is not None
        and newest.state is state
        and newest.reason == reason
        and newest.incarnation == job.incarnation
        and (newest.until_ms or newest.nominal_ms) == item["after_ms"]
    ):
        return evolve(newest, until_ms=item["until_ms"], count=newest.count + count, finished_ms=now_ms)
    until = item["until_ms"] if count > 1 else None
    return slot_record(job, state, item["from_ms"], now_ms, reason, until_ms=until, count=count)


def check_item(
    job: JobRecord, item: dict[str, Any], after_ms: int, now_ms: int
) -> tuple[RunState, str] | None:
    """The record `item` becomes, if it is well formed, names `job` as it is, starts right after
    `after_ms` and covers only slots due by `now_ms`."""
    if item.get("job_id") != job.spec.id:
        return None
    values = [v for name in _ITEM_FIELDS if type(v := item.get(name)) is int]  # no bool, no float
    if len(values) != len(_ITEM_FIELDS):
        return None
    incarnation, after, first, last, count = values
    if incarnation != job.incarnation or after != after_ms or not after < first <= last <= now_ms:
        return None
    if not 1 <= count <= last - first + 1 or (count == 1) != (first == last):
        return None
    if item.get("version", job.version) != job.version:
        return None  # a write's items are computed from one version of the job
    return classify(job, first, last)
