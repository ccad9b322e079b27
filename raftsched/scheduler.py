"""The leader's loop: turn due slots into committed fires, and move runs off dead nodes.

Only the Raft leader runs it, and only after its `BeginTerm` has committed: every plan is
rebuilt from replicated state (each job's `last_slot_ms` / `next_nominal_ms`), never from
memory of an earlier term. Fires are committed up to `lookahead_s` before they fall due;
the assigned worker starts them on time by its own clock (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from . import triggers
from .clock import Clock
from .commands import CommandType, encode
from .errors import RaftschedError
from .model import MisfirePolicy, Overlap, RouteStrategy, RunState
from .records import JobRecord, Run
from .routing import Candidate, eligible, pick_nodes
from .state import State

__all__ = ["Leadership", "Scheduler", "SchedulerSettings", "plan_job"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]
MAX_FIRES_PER_COMMAND = 2000


class Leadership(Protocol):
    """What the scheduler needs to know about Raft (the Replicator, or a fake in tests)."""

    def is_leader(self) -> bool: ...

    def term(self) -> int: ...

    def connected_partners(self) -> dict[str, bool]: ...

    async def change_membership(self, kind: str, addr: str) -> None: ...

    async def transfer_leadership(self) -> bool: ...

    async def wait_replicated(self, addr: str) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSettings:
    node_id: str
    lookahead_s: float = 3.0
    node_timeout_s: float = 5.0
    tick_s: float = 0.05
    history_per_job: int = 100
    drain_timeout_s: float = 300.0
    output_tail_bytes: int = 4096


@dataclass(slots=True)
class Plan:
    fires: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skips: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _load(candidates: list[Candidate], node_id: str) -> list[Candidate]:
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
            candidates = _load(candidates, node)
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


class Scheduler:
    """Runs on every node; acts only while this node leads and its term has begun."""

    def __init__(
        self,
        settings: SchedulerSettings,
        state: State,
        leadership: Leadership,
        propose: Propose,
        clock: Clock,
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.state = state
        self.leadership = leadership
        self.propose = propose
        self.clock = clock
        self.wake = wake
        self.active_term = 0
        self._last_seen: dict[str, float] = {}

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except RaftschedError as exc:
                log.warning("scheduler tick failed: %s", exc)
                self.active_term = 0 if not self.leadership.is_leader() else self.active_term
            await self._sleep()

    async def _sleep(self) -> None:
        self.wake.clear()
        try:
            await asyncio.wait_for(self.wake.wait(), self.settings.tick_s)
        except TimeoutError:
            pass

    async def tick(self) -> None:
        if not self.leadership.is_leader():
            self.active_term = 0
            return
        term = self.leadership.term()
        if self.active_term != term and not await self._begin_term(term):
            return
        # Liveness first, so that this tick's fires avoid a node it has just committed down.
        await self.watch_nodes()
        if self.active_term:
            await self.fire_due()
        if self.active_term:
            await self.finish_drains()

    async def _begin_term(self, term: int) -> bool:
        s = self.settings
        result = await self.propose(
            encode(
                CommandType.BEGIN_TERM,
                {
                    "term": term,
                    "leader": s.node_id,
                    "now_ms": self.clock.now_ms(),
                    "history_per_job": s.history_per_job,
                    "output_tail_bytes": s.output_tail_bytes,
                },
            )
        )
        if result.get("ok") or (self.state.term == term and self.state.leader == s.node_id):
            self.active_term = term
            self._last_seen.clear()  # every node gets a full node_timeout_s from the new term
            log.info("leading term %d", term, extra={"term": term, "node": s.node_id})
            return True
        log.warning("begin_term %d refused: %s", term, result.get("message"))
        return False

    def plan(self, now_ms: int) -> Plan:
        plan = Plan()
        lookahead_ms = int(self.settings.lookahead_s * 1000)
        with self.state.lock:
            candidates = self.state.candidates()
            for job in list(self.state.jobs.values()):
                runs = self.state.job_active.get(job.spec.id, {})
                active = any(not self.state.runs[r].manual for r in runs)  # as the state's overlap rule
                candidates = plan_job(job, active, candidates, now_ms, lookahead_ms, plan)
                if len(plan.fires) >= MAX_FIRES_PER_COMMAND:
                    break
        return plan

    async def fire_due(self) -> None:
        now_ms = self.clock.now_ms()
        plan = self.plan(now_ms)
        if not plan.fires and not plan.skips:
            return
        result = await self.propose(
            encode(
                CommandType.FIRE_RUNS,
                {
                    "term": self.active_term,
                    "now_ms": now_ms,
                    "fires": plan.fires,
                    "skips": plan.skips,
                },
            )
        )
        self._check_term(result, "fire")
        if result.get("ok") and log.isEnabledFor(logging.DEBUG):
            log.debug("fired %s", result.get("fired"))

    def _check_term(self, result: dict[str, Any], what: str) -> None:
        """A leader command refused for its term means this node no longer leads: stop acting."""
        if not result.get("ok"):
            log.warning("%s refused: %s", what, result.get("message"))
            if result.get("code") == "stale_term":
                self.active_term = 0

    async def watch_nodes(self) -> None:
        """Commit nodes down after `node_timeout_s` of silence (up when back); move their runs."""
        now = self.clock.monotonic()
        connected = self.leadership.connected_partners()
        with self.state.lock:
            nodes = list(self.state.nodes.values())
        for node in nodes:
            heard = node.id == self.settings.node_id or connected.get(node.raft, False)
            if heard:
                self._last_seen[node.id] = now
            seen = self._last_seen.setdefault(node.id, now)
            if node.up and now - seen > self.settings.node_timeout_s:
                await self._set_node(node.id, up=False)
            elif not node.up and heard:
                await self._set_node(node.id, up=True)
            if not self.active_term:
                return
        await self.reassign_from_down_nodes()

    async def _set_node(self, node_id: str, *, up: bool) -> None:
        log.warning("node %s is %s", node_id, "up" if up else "down", extra={"node": node_id})
        result = await self.propose(
            encode(
                CommandType.SET_NODE,
                {
                    "term": self.active_term,
                    "node": node_id,
                    "up": up,
                    "now_ms": self.clock.now_ms(),
                },
            )
        )
        self._check_term(result, "set_node")

    async def reassign_from_down_nodes(self) -> None:
        """Move every active run of a node committed down, and the pending runs of a draining node
        (its running runs too once it has drained for longer than `drain_timeout_s`)."""
        now_ms = self.clock.now_ms()
        moves: list[dict[str, Any]] = []
        with self.state.lock:
            candidates = self.state.candidates()
            for node in self.state.nodes.values():
                if node.up and not node.draining:
                    continue
                overdue = node.draining and now_ms - node.updated_ms > self.settings.drain_timeout_s * 1000
                for run in self.state.active_runs_of(node.id):
                    if node.up and run.state is RunState.RUNNING and not overdue:
                        continue  # a draining node finishes what it runs
                    candidates = self._move(run, candidates, moves)
        if moves:
            result = await self.propose(
                encode(
                    CommandType.REASSIGN_RUNS, {"term": self.active_term, "now_ms": now_ms, "moves": moves}
                )
            )
            self._check_term(result, "reassign")
            log.warning("reassigned runs: moved %s, lost %s", result.get("moved"), result.get("lost"))

    def _move(self, run: Run, candidates: list[Candidate], moves: list[dict[str, Any]]) -> list[Candidate]:
        job = self.state.jobs.get(run.job_id)
        if job is None:
            return candidates
        plain = dataclasses.replace(job.spec.route, strategy=RouteStrategy.LEAST_LOADED)
        picked = pick_nodes(plain, run.job_id, run.run_id, candidates)
        if not picked:
            return candidates
        moves.append({"run_id": run.run_id, "attempt": run.attempt, "node": picked[0]})
        return _load(candidates, picked[0])

    async def finish_drains(self) -> None:
        """Remove each drained node: first from the table (it sees that and stops), then from Raft.
        A draining leader hands leadership over first; the next leader finishes the drain."""
        with self.state.lock:
            drained = [
                n for n in self.state.nodes.values() if n.leaving and not self.state.node_active.get(n.id)
            ]
        for node in drained:
            if node.id == self.settings.node_id:
                log.warning("this node is drained: handing leadership over", extra={"node": node.id})
                await self.leadership.transfer_leadership()
                self.active_term = 0
                return
            result = await self.propose(
                encode(
                    CommandType.REMOVE_NODE,
                    {"term": self.active_term, "node": node.id, "now_ms": self.clock.now_ms()},
                )
            )
            self._check_term(result, "remove_node")
            if result.get("ok"):
                await self.leadership.wait_replicated(node.raft)  # so that it sees itself removed and stops
                await self.leadership.change_membership("remove", node.raft)
                log.warning("node %s removed from the cluster", node.id, extra={"node": node.id})
