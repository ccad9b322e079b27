"""Pure planning: which fires and skip/missed records one job needs by `now + lookahead`.

No clock, no I/O: the scheduler passes the time and the replicated job record in and proposes
the result. The misfire policy applies once per gap however long the gap is.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import triggers
from .model import MisfirePolicy, Overlap
from .records import JobRecord
from .routing import Candidate, eligible, pick_nodes

__all__ = ["Plan", "add_load", "next_key", "plan_job"]


@dataclass(slots=True)
class Plan:
    fires: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skips: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def add_load(candidates: list[Candidate], node_id: str) -> list[Candidate]:
    return [dataclasses.replace(c, running=c.running + 1) if c.id == node_id else c for c in candidates]


def plan_job(
    job: JobRecord, active: bool, candidates: list[Candidate], now_ms: int, lookahead_ms: int, plan: Plan
) -> list[Candidate]:
    """Add to `plan` the fires and skip/missed records of one job that are due by now + lookahead.

    Pure: reads the replicated job record, the job's activity (pending or running scheduled
    runs) and the node view; returns the node view updated with the runs it assigned, so one
    batch spreads its load.
    """
    spec = job.spec
    if spec.paused:
        return candidates
    horizon = now_ms + lookahead_ms
    after = job.last_slot_ms if job.last_slot_ms is not None else job.created_ms - 1
    nxt = job.next_nominal_ms
    if nxt is None or nxt <= after:
        nxt = triggers.next_fire_ms(spec.schedule, after, created_ms=job.created_ms)
    if nxt is None or nxt > horizon:
        return candidates
    base = {"job_id": spec.id, "incarnation": job.incarnation}
    boundary = now_ms - int(spec.misfire.grace * 1000)  # a slot before this can no longer start in grace
    has_node = bool(eligible(candidates, spec.route.tags))
    catch_up, after = _misfire(job, after, boundary, has_node, base, plan)
    if catch_up is None:
        return candidates  # a long gap is being recorded, chunk by chunk, over several ticks
    live = triggers.slots_between(spec.schedule, after, horizon, created_ms=job.created_ms, limit=64)
    exclusive = spec.overlap is not Overlap.ALLOW
    for slot in catch_up + live:
        due = slot + triggers.jitter_ms(spec.id, slot, spec.jitter)
        if exclusive and (active or plan_has(plan, spec.id)) and due > now_ms:
            break  # overlap decided at the due time, by the state (DESIGN.md §2.4)
        salt = f"{spec.id}@{slot}"
        nodes = pick_nodes(spec.route, spec.id, salt, candidates, counter=job.fired + len(plan.fires))
        if not nodes:
            break  # no eligible node yet: retried next tick, recorded missed once past grace
        nxt_after = triggers.next_fire_ms(spec.schedule, slot, created_ms=job.created_ms)
        plan.fires.append(
            {**base, "nominal_ms": slot, "due_ms": due, "nodes": nodes, "next_nominal_ms": nxt_after}
        )
        for node in nodes:
            candidates = add_load(candidates, node)
        active = active or exclusive
    return candidates


def plan_has(plan: Plan, job_id: str) -> bool:
    return any(f["job_id"] == job_id for f in plan.fires)


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


def next_key(job: JobRecord) -> int | None:
    """When the leader must next look at `job`: its next slot (None: paused, or no slot left)."""
    if job.spec.paused:
        return None
    after = job.last_slot_ms if job.last_slot_ms is not None else job.created_ms - 1
    nxt = job.next_nominal_ms
    if nxt is None or nxt <= after:
        nxt = triggers.next_fire_ms(job.spec.schedule, after, created_ms=job.created_ms)
    return nxt
