"""Pure planning: which fires and skip/missed records one job needs by `now + lookahead`.

No clock, no I/O: the scheduler passes the time and the replicated job record in and proposes
the result. The misfire policy applies once per gap however long the gap is.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import triggers
from .model import MisfirePolicy, Overlap
from .records import JobRecord
from .routing import NodeLoad

__all__ = ["Plan", "next_key", "plan_job"]


@dataclass(slots=True)
class Plan:
    fires: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skips: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # (incarnation, version) of each job record the plan was made from, to re-check before proposing
    versions: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict)
    generation: int = -1  # the state's job-table generation when planning began


def plan_job(
    job: JobRecord,
    active: bool,
    load: NodeLoad,
    now_ms: int,
    lookahead_ms: int,
    plan: Plan,
    *,
    first: int | None = None,
) -> int | None:
    """Add to `plan` the fires and skip/missed records of one job that are due by now + lookahead.

    Pure: reads the replicated job record, the job's activity (pending or running scheduled
    runs) and the node view, and counts the runs it assigns in `load`, so one batch spreads its
    load. `first`, when the caller knows it, is the job's first slot after its last one (saves
    the trigger maths). Returns when to look at the job next: the slot after the last one this
    plan fires or records, or the job's next slot when it planned nothing (None: no slot left).
    """
    spec = job.spec
    if spec.paused:
        return None
    horizon = now_ms + lookahead_ms
    after = _planned_after(job)
    nxt = job.next_nominal_ms
    if nxt is None or nxt <= after:
        nxt = first = first if first is not None else _next(job, after)
    if nxt is None or nxt > horizon:
        return nxt
    base = {"job_id": spec.id, "incarnation": job.incarnation, "version": job.version}
    skips = len(plan.skips)
    first = first if first is not None else _next(job, after)
    catch_up, first = _catch_up(job, first, after, now_ms, load, base, plan)
    fired, key = 0, None
    if catch_up is not None:  # else a long gap is being recorded, chunk by chunk, over several ticks
        slots = _chain(job, catch_up, first)
        fired, key = _fire(job, active, load, now_ms, horizon, slots, len(catch_up) + LIVE_LIMIT, base, plan)
    if not fired:
        if len(plan.skips) == skips:
            return nxt  # due but waiting (overlap, no node): looked at again next tick
        key = plan.skips[-1]["next_nominal_ms"]  # recorded a missed range, fired nothing
    plan.versions[spec.id] = (job.incarnation, job.version)
    return key


LIVE_LIMIT = 64  # slots fired ahead per job per plan


def _catch_up(
    job: JobRecord,
    first: int | None,
    after: int,
    now_ms: int,
    load: NodeLoad,
    base: dict[str, Any],
    plan: Plan,
) -> tuple[list[int] | None, int | None]:
    """The late slots to fire by the misfire policy (the rest recorded missed in `plan`; None while a
    long gap is being recorded) and the first slot after them. `first` is the first slot after
    `after`: when it is still within grace nothing was missed, and there is nothing to walk."""
    spec = job.spec
    boundary = now_ms - int(spec.misfire.grace * 1000)  # a slot before this can no longer start in grace
    if first is None or first >= boundary:
        return [], first
    has_node = bool(load.eligible(spec.route.tags, spec.task.broker))
    kept, after = _misfire(job, after, boundary, has_node, base, plan)
    return kept, (None if kept is None else _next(job, after))


def _chain(job: JobRecord, catch_up: list[int], first: int | None) -> Iterator[int | None]:
    """The catch-up slots, then `first` and each slot after it, computed only when asked for, so
    each slot's successor is computed once (it is the fire's `next_nominal_ms`); None: no more."""
    yield from catch_up
    slot = first
    while slot is not None:
        yield slot
        slot = _next(job, slot)
    yield None


def _fire(
    job: JobRecord,
    active: bool,
    load: NodeLoad,
    now_ms: int,
    horizon: int,
    slots: Iterator[int | None],
    limit: int,
    base: dict[str, Any],
    plan: Plan,
) -> tuple[int, int | None]:
    """Fire the slots up to `horizon` (at most `limit`) until overlap or routing says wait.

    Returns how many were fired and the slot after the last one fired."""
    spec = job.spec
    exclusive = spec.overlap is not Overlap.ALLOW
    fired, slot = 0, next(slots)
    while slot is not None and slot <= horizon and fired < limit:
        due = slot + triggers.jitter_ms(spec.id, slot, spec.jitter)
        if exclusive and (active or fired) and due > now_ms:
            break  # overlap decided at the due time, by the state (DESIGN.md §2.4)
        nodes = load.pick(
            spec.route,
            spec.id,
            f"{spec.id}@{slot}",
            counter=job.fired + len(plan.fires),
            due_ms=due,
            broker=spec.task.broker,
        )
        if not nodes:
            break  # no eligible node yet: retried next tick, recorded missed once past grace
        successor = next(slots)
        plan.fires.append(
            {**base, "nominal_ms": slot, "due_ms": due, "nodes": nodes, "next_nominal_ms": successor}
        )
        for node in nodes:
            load.add(node, due)
        fired, slot = fired + 1, successor
    return fired, slot


def _next(job: JobRecord, after_ms: int) -> int | None:
    return triggers.next_fire_ms(job.spec.schedule, after_ms, created_ms=job.created_ms)


MAX_MISSED_WALK = 100_000  # slots examined per job per tick when recording a long gap


def _misfire(
    job: JobRecord, after: int, boundary: int, has_node: bool, base: dict[str, Any], plan: Plan
) -> tuple[list[int] | None, int]:
    """Record the slots in (after, boundary) as missed per the job's policy.

    Returns the slots still to fire late (None while a gap longer than MAX_MISSED_WALK is still
    being recorded) and the slot after which live planning continues. However long the gap,
    the policy applies once: `fire_once` keeps the newest missed slot, `fire_all` the newest
    `max_catchup`, `skip` none; the rest become one `missed` range record.
    """
    spec = job.spec
    keep_n = {MisfirePolicy.FIRE_ALL: spec.misfire.max_catchup, MisfirePolicy.FIRE_ONCE: 1}.get(
        spec.misfire.policy, 0
    )
    kept: deque[int] = deque()
    first = last_dropped = None
    dropped = walked = 0
    cursor, complete = after, False
    while walked < MAX_MISSED_WALK:
        chunk = triggers.slots_between(
            spec.schedule, cursor, boundary - 1, created_ms=job.created_ms, limit=4096
        )
        if not chunk:
            complete = True
            break
        walked += len(chunk)
        cursor = chunk[-1]
        for slot in chunk:
            kept.append(slot)
            if len(kept) > keep_n:
                evicted = kept.popleft()
                first = evicted if first is None else first
                last_dropped, dropped = evicted, dropped + 1
    if not complete:  # too long to finish now: record what was walked, fire nothing yet
        while kept:
            evicted = kept.popleft()
            first = evicted if first is None else first
            last_dropped, dropped = evicted, dropped + 1
    if dropped and first is not None and last_dropped is not None:
        plan.skips.append(
            {
                **base,
                "state": "missed",
                "nominal_ms": first,
                "until_ms": last_dropped,
                "count": dropped,
                "reason": _missed_reason(spec.misfire.policy, spec.misfire.max_catchup, has_node),
                "next_nominal_ms": triggers.next_fire_ms(
                    spec.schedule, last_dropped, created_ms=job.created_ms
                ),
            }
        )
    if not complete:
        return None, after
    return list(kept), (kept[-1] if kept else cursor)


def _missed_reason(policy: MisfirePolicy, max_catchup: int, has_node: bool) -> str:
    if not has_node:
        return "no eligible node (route tags, capacity, liveness) within the grace period"
    if policy is MisfirePolicy.FIRE_ALL:
        return f"more than max_catchup={max_catchup} slots missed their grace period"
    if policy is MisfirePolicy.FIRE_ONCE:
        return "missed its grace period; coalesced into one catch-up run (fire_once)"
    return "missed its grace period (misfire policy skip)"


def _planned_after(job: JobRecord) -> int:
    """The job's slots to plan are those after this: its last slot; before its first, its creation,
    or just before its first slot if that is earlier (a one-shot `at` created within its misfire
    grace in the past: `triggers.first_slot_ms`)."""
    if job.last_slot_ms is not None:
        return job.last_slot_ms
    first = job.next_nominal_ms if job.next_nominal_ms is not None else job.created_ms
    return min(job.created_ms, first) - 1


def next_key(job: JobRecord) -> int | None:
    """When the leader must next look at `job`: its next slot (None: paused, or no slot left)."""
    if job.spec.paused:
        return None
    after = _planned_after(job)
    nxt = job.next_nominal_ms
    if nxt is None or nxt <= after:
        nxt = triggers.next_fire_ms(job.spec.schedule, after, created_ms=job.created_ms)
    return nxt
