"""The slots no leader fires, as the `accounted` items that record them (state/paused.py).

Pure trigger maths over replicated records, no clock: the leader's accounting turns, the writes
that resume, edit or delete a job, and the reads that show a paused range before the leader
has recorded it all call `unaccounted`, so every node shows what the leader will record. Reads
bound it by the committed clock (`State.clock_ms`), never by their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import triggers
from .model import JobSpec, RunState
from .records import JobRecord, Run
from .state.paused import classify, edit_replans, position, range_record

__all__ = [
    "MAX_WALK",
    "NOTHING",
    "Overlay",
    "SlotRange",
    "edit_items",
    "overlay",
    "paused_items",
    "unaccounted",
]

MAX_WALK = 10_000  # cron and `at` slots walked per range (`every` ranges are counted, not walked)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlotRange:
    """Slots `from_ms`..`until_ms` (`count` of them) of one version of a job, right after
    `after_ms`, none of them fired."""

    job_id: str
    incarnation: int
    version: int
    after_ms: int
    from_ms: int
    until_ms: int
    count: int

    def item(self) -> dict[str, Any]:
        """The command item (`accounted`, `account_paused`'s `items`)."""
        return {
            "job_id": self.job_id,
            "incarnation": self.incarnation,
            "version": self.version,
            "after_ms": self.after_ms,
            "from_ms": self.from_ms,
            "until_ms": self.until_ms,
            "count": self.count,
        }


def unaccounted(job: JobRecord, until_ms: int, *, walk: int = MAX_WALK) -> list[SlotRange]:
    """The job's slots after its position up to `until_ms`, as ranges the state accepts in this
    order: a paused job's range is cut before `paused_ms` (missed before, skipped from it). A cron
    range longer than `walk` slots ends early; the next call goes on from there."""
    schedule = job.spec.schedule
    if schedule is None:
        return []  # a manual-only job has no slots
    after = position(job)
    bounds = [until_ms]
    if job.spec.paused and job.paused_ms is not None and after < job.paused_ms - 1 < until_ms:
        bounds.insert(0, job.paused_ms - 1)
    out = []
    for bound in bounds:
        found = triggers.slot_range(schedule, after, bound, created_ms=job.created_ms, limit=walk)
        if found is None:
            continue
        first, last, count = found
        out.append(
            SlotRange(
                job_id=job.spec.id,
                incarnation=job.incarnation,
                version=job.version,
                after_ms=after,
                from_ms=first,
                until_ms=last,
                count=count,
            )
        )
        if last < bound and schedule.every_s is None:
            break  # walked `walk` slots: the rest after this range, next time
        after = last
    return out


def paused_items(job: JobRecord | None, now_ms: int) -> list[dict[str, Any]]:
    """A resume's or a delete's `accounted` items: the job's paused range up to the write."""
    return [r.item() for r in unaccounted(job, now_ms)] if job is not None and job.spec.paused else []


def edit_items(old: JobRecord | None, spec: JobSpec, now_ms: int) -> list[dict[str, Any]]:
    """An edit's `accounted` items: the old schedule's unrecorded slots up to the write when the
    edit ends that schedule (a paused range, or slots due and never fired)."""
    if old is None or not edit_replans(old, spec):
        return []
    return [r.item() for r in unaccounted(old, now_ms)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Overlay:
    """A paused job's range up to the committed clock, as the records the leader will make of
    it: `replaced` is the job's newest record extended (or None), `added` the new records,
    newest first; `counts` what they add to the job's `skipped` / `missed` counters."""

    replaced: Run | None = None
    added: tuple[Run, ...] = ()
    counts: tuple[tuple[str, int], ...] = ()

    def runs(self, newest_first: Iterator[Run]) -> Iterator[Run]:
        """The job's records, newest first, with this overlay applied."""
        yield from self.added
        for run in newest_first:
            yield self.replaced if self.replaced is not None and run.run_id == self.replaced.run_id else run

    def last_slot_ms(self) -> int | None:
        """The newest slot the overlay covers (None: it covers none)."""
        newest = self.added[0] if self.added else self.replaced
        return None if newest is None else newest.until_ms or newest.nominal_ms


NOTHING = Overlay()


def overlay(job: JobRecord, newest: Run | None, clock_ms: int) -> Overlay:
    """What reads add for a paused `job` whose newest record is `newest`: its unrecorded range up
    to `clock_ms` (the committed clock), exactly as `account_paused` would record it then."""
    if not job.spec.paused:
        return NOTHING
    replaced: Run | None = None
    added: list[Run] = []
    counts = {RunState.SKIPPED.value: 0, RunState.MISSED.value: 0}
    for slots in unaccounted(job, clock_ms):
        verdict = classify(job, slots.from_ms, slots.until_ms)
        if verdict is None:
            continue  # not produced by `unaccounted`, which cuts at the pause
        record = range_record(job, newest, slots.item(), *verdict, clock_ms)
        if newest is None or record.run_id != newest.run_id:
            added.insert(0, record)
        elif added:
            added[0] = record
        else:
            replaced = record
        newest = record
        counts[verdict[0].value] += slots.count
    if replaced is None and not added:
        return NOTHING
    return Overlay(replaced=replaced, added=tuple(added), counts=tuple(counts.items()))
