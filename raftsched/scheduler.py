"""The leader's loop: turn due slots into committed fires, and move runs off dead nodes.

Only the Raft leader runs it, and only after its `BeginTerm` has committed: every plan is
rebuilt from replicated state (each job's `last_slot_ms` / `next_nominal_ms`), never from
memory of an earlier term. Fires are committed up to `lookahead_s` before they fall due;
the assigned worker starts them on time by its own clock (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .accounting import unaccounted
from .alertdecider import AlertDecider
from .clock import Clock, wait_event
from .commands import VERSION as COMMAND_VERSION
from .commands import CommandType, encode, usable_version
from .deathwatch import DeathWatch, Probe
from .errors import RaftschedError
from .model import Delivery, RouteStrategy, RunState
from .planning import Plan, next_key, plan_job
from .records import JobRecord, Run
from .routing import PLANNER_GRAIN, DueDensity, NodeLoad
from .stale import expiry
from .state import State

__all__ = ["Leadership", "Scheduler", "SchedulerSettings"]

log = logging.getLogger(__name__)

FIRE_CHUNK_MAX_MS = 100  # see `fire_chunk_ms`
ACCOUNT_PERIOD_MS = 30_000  # every paused job's due slots are recorded at least this often (+ a turn)
ACCOUNT_CHUNK = 500  # paused jobs looked at per tick
ACCOUNT_WALK_BUDGET = 1_000  # cron / `at` slots walked per tick (`_paused_items`)
CLOCK_PERIOD_MS = 1_000  # the leader's clock is committed at least this often

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]
MAX_FIRES_PER_COMMAND = 2000
PLAN_CHUNK = 256  # due jobs read per hold of state.lock while planning
STALE_ENTRIES_KEPT = 1024  # re-queued jobs' old heap entries tolerated before a clean-up
STALE_SCAN_S = 1.0  # how often the leader looks for pending runs past their misfire grace
REFUSED = "refused connections"  # the reason of a down committed by the fast path (deathwatch)


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
        probe: Probe | None = None,
    ) -> None:
        self.settings = settings
        self.state = state
        self.leadership = leadership
        self.propose = propose
        self.clock = clock
        self.wake = wake
        self.active_term = 0
        self._last_seen: dict[str, float] = {}
        # Certain death, proven by refused connections (None: only the timeout).
        self.deaths = DeathWatch(probe, clock.monotonic) if probe is not None else None
        self._stale_at = 0.0  # monotonic: when to look for stale pending runs next
        # (next slot ms, job id, stamp): a heap; an entry counts only while its stamp is the job's
        # in `_stamps` (re-queueing a job leaves its old entry behind, skipped when it surfaces)
        self._queue: list[tuple[int, str, int]] = []
        self._stamps: dict[str, int] = {}
        self._next_stamp = 0
        self._queue_generation = -1
        self._queue_dirty = True
        # job -> (incarnation, version, last slot, the slot after it) as this leader computed it
        self._successors: dict[str, tuple[int, int, int, int | None]] = {}
        self._density = DueDensity()  # runs this leader assigned per node and due-time bucket
        self._planned_ms = 0  # when this leader last planned fires (`fire_chunk_ms`)
        self.alerts = AlertDecider(state, propose, clock)
        self._sweep: list[str] = []  # paused jobs still to account in this turn (`account_paused`)
        self._next_sweep_ms = 0

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
        await wait_event(self.wake, self.settings.tick_s)

    async def tick(self) -> None:
        if not self.leadership.is_leader():
            self.active_term = 0
            self._gather_evidence()
            return
        term = self.leadership.term()
        if self.active_term != term and not await self._begin_term(term):
            return
        # Stale runs first (no point moving them); then liveness, so that this tick's fires avoid a
        # node it has just committed down.
        await self.expire_stale()
        if self.active_term:
            await self.watch_nodes()
        if self.active_term:
            await self.fire_due()
        if self.active_term:
            await self.raise_alerts()
        if self.active_term:
            await self.raise_cluster_version()
        if self.active_term:
            await self.account_paused()
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
            self._queue_dirty = True  # a new term plans from the replicated state only
            self._last_seen.clear()  # every node gets a full node_timeout_s from the new term
            self._stale_at = 0.0
            self._successors.clear()
            self._sweep, self._next_sweep_ms = [], 0  # a new leader accounts paused jobs at once
            log.info("leading term %d", term, extra={"term": term, "node": s.node_id})
            return True
        log.warning("begin_term %d refused: %s", term, result.get("message"))
        return False

    def plan(self, now_ms: int) -> Plan:
        """Plan the jobs whose next slot falls within the lookahead, taken from the due queue.

        `state.lock` is held only to copy what planning reads (the node view, then the due jobs'
        records and activity, PLAN_CHUNK jobs at a time), never for the trigger maths and routing,
        so the tick thread keeps applying and sending heartbeats. A record that changes after it
        was read is fenced when the plan is applied: the term, the job's incarnation and paused
        flag, one fire per slot; `fire_due` also drops what an edit replaced meanwhile.
        """
        plan = Plan()
        lookahead_ms = int(self.settings.lookahead_s * 1000)
        horizon = now_ms + lookahead_ms
        self._refresh_queue()
        queue, stamps = self._queue, self._stamps
        while queue and stamps.get(queue[0][1]) != queue[0][2]:
            heapq.heappop(queue)
        chunk = fire_chunk_ms(lookahead_ms)
        if not queue or (queue[0][0] > horizon - chunk and now_ms < self._planned_ms + chunk):
            return plan
        self._planned_ms = now_ms
        with self.state.lock:
            load = self._node_load()
            plan.generation = self.state.generation
        due: list[tuple[int, str, int]] = []
        while queue and queue[0][0] <= horizon:
            entry = heapq.heappop(queue)
            if stamps.get(entry[1]) == entry[2]:
                due.append(entry)
        read: dict[str, tuple[JobRecord, bool]] = {}
        for index, entry in enumerate(due):
            if len(plan.fires) >= MAX_FIRES_PER_COMMAND:  # the rest wait for the next command
                for rest in due[index:]:
                    heapq.heappush(queue, rest)
                self._planned_ms = 0  # which may follow at once
                break
            if index % PLAN_CHUNK == 0:
                read = self._read_jobs(due[index : index + PLAN_CHUNK])
            if entry[1] in read:
                job, active = read[entry[1]]
                key = plan_job(job, active, load, now_ms, lookahead_ms, plan, first=self._first(job))
                self._remember(job, key, plan)
        return plan

    def _node_load(self) -> NodeLoad:
        """Routing's view for one batch (hold `state.lock`): executing counts in grains, then the
        runs this leader has assigned near each due time."""
        self._density.forget_before(self.clock.now_ms() - 1000)
        return NodeLoad(self.state.candidates(executing=True), grain=PLANNER_GRAIN, density=self._density)

    def _read_jobs(self, entries: list[tuple[int, str, int]]) -> dict[str, tuple[JobRecord, bool]]:
        """The jobs' records (frozen: safe to read after the lock) and whether each has a scheduled
        run pending or running (as the state's overlap rule counts them); deleted jobs are left out."""
        out = {}
        with self.state.lock:
            runs, jobs, job_active = self.state.runs, self.state.jobs, self.state.job_active
            for _, job_id, _ in entries:
                job = jobs.get(job_id)
                if job is not None:
                    out[job_id] = (job, any(not runs[r].manual for r in job_active.get(job_id, ())))
        return out

    def _first(self, job: JobRecord) -> int | None:
        """The job's first slot after its last one, when this leader computed it for that slot."""
        known = self._successors.get(job.spec.id)
        if known is not None and known[:3] == (job.incarnation, job.version, job.last_slot_ms):
            return known[3]
        return None

    def _remember(self, job: JobRecord, key: int | None, plan: Plan) -> None:
        """Queue the job again by `key` (the slot after what this plan fires or records, or its
        next slot if it waits); remember that successor for when the plan has committed."""
        self._queue_job(job.spec.id, key)
        last = _last_item(plan, job.spec.id)
        if last is not None:
            slot = last.get("until_ms") or last["nominal_ms"]
            self._successors[job.spec.id] = (job.incarnation, job.version, slot, key)

    def _queue_job(self, job_id: str, key: int | None) -> None:
        """(Re)queue `job_id` by `key`, or take it out of the queue (None)."""
        if key is None:
            self._stamps.pop(job_id, None)
            return
        self._next_stamp += 1
        self._stamps[job_id] = self._next_stamp
        heapq.heappush(self._queue, (key, job_id, self._next_stamp))

    def _refresh_queue(self) -> None:
        """After job-table changes, re-queue the jobs they changed by their next slot; after a new
        term, a failed proposal or changes not known one by one, every job. The records are copied
        under the lock, their keys computed after it. (Rebuilding from every job on each change
        cost the leader's loop milliseconds per API write at a few thousand jobs: runs went late
        by seconds under a burst of job creations.)"""
        with self.state.lock:
            generation = self.state.generation
            if self._queue_generation == generation and not self._queue_dirty:
                return
            changed = None if self._queue_dirty else self.state.jobs_changed_since(self._queue_generation)
            jobs = self.state.jobs
            if changed is None:
                records = list(jobs.values())
            else:
                records = [job for job_id in changed if (job := jobs.get(job_id)) is not None]
        self._queue_generation, self._queue_dirty = generation, False
        if changed is not None:
            for job_id in changed:
                self._stamps.pop(job_id, None)  # a deleted job's entries are skipped
            for job in records:
                self._queue_job(job.spec.id, next_key(job))
            if len(self._queue) > 2 * len(self._stamps) + STALE_ENTRIES_KEPT:
                # Entries left behind surface only at their key: a job edited often far from its
                # next slot (a yearly cron) would pile them up. Drop them all at once.
                stamps = self._stamps
                self._queue = [e for e in self._queue if stamps.get(e[1]) == e[2]]
                heapq.heapify(self._queue)
            return
        self._queue = [(key, job.spec.id, 0) for job in records if (key := next_key(job)) is not None]
        self._stamps = {job_id: 0 for _, job_id, _ in self._queue}
        heapq.heapify(self._queue)
        if len(self._successors) > len(records):
            present = {job.spec.id for job in records}
            self._successors = {k: v for k, v in self._successors.items() if k in present}

    async def fire_due(self) -> None:
        now_ms = self.clock.now_ms()
        plan = self.plan(now_ms)
        if plan.fires or plan.skips:
            plan = self._still_current(plan)
        if not plan.fires and not plan.skips:
            return
        self._queue_dirty = True  # until the fire is committed: the queue assumed it was
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
        self._queue_dirty = not result.get("ok")
        if result.get("ok") and log.isEnabledFor(logging.DEBUG):
            log.debug("fired %s", result.get("fired"))

    def _still_current(self, plan: Plan) -> Plan:
        """Drop what was planned from a job record that an edit, pause, resume or delete has replaced
        since it was read (the state would accept a slot of the old schedule that is new to it)."""
        with self.state.lock:
            if self.state.generation == plan.generation:
                return plan
            jobs = self.state.jobs
            stale = {
                job_id
                for job_id, seen in plan.versions.items()
                if (job := jobs.get(job_id)) is None or (job.incarnation, job.version) != seen
            }
        # No rebuild for the dropped ones: their change is in the state's job changes, and the
        # next `_refresh_queue` re-queues them from their records.
        if stale:
            plan.fires = [f for f in plan.fires if f["job_id"] not in stale]
            plan.skips = [s for s in plan.skips if s["job_id"] not in stale]
        return plan

    def _check_term(self, result: dict[str, Any], what: str) -> None:
        """A leader command refused for its term means this node no longer leads: stop acting."""
        if not result.get("ok"):
            log.warning("%s refused: %s", what, result.get("message"))
            if result.get("code") == "stale_term":
                self.active_term = 0

    async def raise_alerts(self) -> None:
        """Decide the alerts of the events noted since the last decision (`alertdecider`)."""
        result = await self.alerts.tick(self.active_term)
        if result is not None:
            self._check_term(result, "raise_alerts")

    async def raise_cluster_version(self) -> None:
        """Commit the cluster's command version: the lowest that the members publish, once it is
        above the committed one (commands.py). Until then no node proposes a newer command."""
        with self.state.lock:
            lowest = min((self.state.published.get(n, 1) for n in self.state.nodes), default=1)
            current = self.state.cluster_version
        if min(lowest, COMMAND_VERSION) <= current:
            return
        version = min(lowest, COMMAND_VERSION)
        log.warning("raising the cluster's command version from %d to %d", current, version)
        result = await self.propose(
            encode(
                CommandType.SET_CLUSTER_VERSION,
                {"term": self.active_term, "now_ms": self.clock.now_ms(), "version": version},
            )
        )
        self._check_term(result, "set_cluster_version")

    async def account_paused(self) -> None:
        """Record paused jobs' due slots (state/paused.py): every paused job at least once per
        ACCOUNT_PERIOD_MS, ACCOUNT_CHUNK jobs per tick, so that a big table costs the loop a
        bounded slice per tick. The same command carries this leader's clock, committed at
        least every CLOCK_PERIOD_MS, so reads of paused ranges are current on an idle cluster."""
        with self.state.lock:
            if self.state.cluster_version < 2:
                return
            committed_ms = self.state.clock_ms
        now_ms = self.clock.now_ms()
        items = self._paused_items(self._sweep_chunk(now_ms), now_ms)
        if not items and now_ms - committed_ms < CLOCK_PERIOD_MS:
            return
        result = await self.propose(
            encode(CommandType.ACCOUNT_PAUSED, {"term": self.active_term, "now_ms": now_ms, "items": items})
        )
        self._check_term(result, "account_paused")

    def _paused_items(self, jobs: list[JobRecord], now_ms: int) -> list[dict[str, Any]]:
        """The jobs' due paused slots as items. `every` ranges are counted by arithmetic; cron
        and `at` slots are walked one by one (~15 us each), at most ACCOUNT_WALK_BUDGET per tick:
        the jobs past the budget go back to this turn's sweep, and a range longer than what is
        left is recorded in part, the rest at the next turn."""
        items: list[dict[str, Any]] = []
        budget = ACCOUNT_WALK_BUDGET
        for index, job in enumerate(jobs):
            if budget <= 0:
                self._sweep.extend(j.spec.id for j in reversed(jobs[index:]))
                break
            ranges = unaccounted(job, now_ms, walk=budget)
            if job.spec.schedule is not None and job.spec.schedule.every_s is None:
                budget -= 1 + sum(r.count for r in ranges)
            items.extend(r.item() for r in ranges)
        return items

    def _sweep_chunk(self, now_ms: int) -> list[JobRecord]:
        """The next ACCOUNT_CHUNK paused jobs of this turn (a turn starts every ACCOUNT_PERIOD_MS)."""
        with self.state.lock:
            jobs = self.state.jobs
            if not self._sweep and now_ms >= self._next_sweep_ms:
                self._sweep = [job_id for job_id, job in jobs.items() if job.spec.paused]
                self._sweep.reverse()  # popped from the end: oldest jobs first
                self._next_sweep_ms = now_ms + ACCOUNT_PERIOD_MS
            chunk = [self._sweep.pop() for _ in range(min(ACCOUNT_CHUNK, len(self._sweep)))]
            return [job for job_id in chunk if (job := jobs.get(job_id)) is not None and job.spec.paused]

    async def watch_nodes(self) -> None:
        """Commit nodes down (up when back) and move their runs. Down: after `node_timeout_s` of
        silence, or at once when certainly dead (its connections refused: `deathwatch`)."""
        now = self.clock.monotonic()
        connected = self.leadership.connected_partners()
        with self.state.lock:
            nodes = list(self.state.nodes.values())
        for node in nodes:
            me = node.id == self.settings.node_id
            heard = me or connected.get(node.raft, False)
            if heard:
                self._last_seen[node.id] = now
            seen = self._last_seen.setdefault(node.id, now)
            if node.up and now - seen > self.settings.node_timeout_s:
                await self._set_node(node.id, up=False, reason=f"not heard from for {now - seen:.1f} s")
            elif node.up and not me and self.deaths is not None and self.deaths.check(node, heard):
                await self._set_node(node.id, up=False, reason=REFUSED)
            elif not node.up and heard:
                await self._set_node(node.id, up=True)
            if not self.active_term:
                return
        await self.reassign_from_down_nodes()

    def _gather_evidence(self) -> None:
        """A follower probes its disconnected peers too, so that when it wins the election that
        follows a leader's death, the evidence is complete and the old leader goes down in the
        new term's first tick (the election takes longer than the confirmation). Evidence is
        about a process, not a term: it holds across terms."""
        if self.deaths is None:
            return
        connected = self.leadership.connected_partners()
        with self.state.lock:
            peers = [n for n in self.state.nodes.values() if n.up and n.id != self.settings.node_id]
        for node in peers:
            self.deaths.check(node, connected.get(node.raft, False))

    async def _set_node(self, node_id: str, *, up: bool, reason: str | None = None) -> None:
        # A node coming up is routine; one going down is what an operator wants to see at the default level.
        log.log(
            logging.INFO if up else logging.WARNING,
            "node %s is %s%s",
            node_id,
            "up" if up else "down",
            f" ({reason})" if reason else "",
            extra={"node": node_id},
        )
        body: dict[str, Any] = {
            "term": self.active_term,
            "node": node_id,
            "up": up,
            "now_ms": self.clock.now_ms(),
        }
        if reason is not None:
            body["reason"] = reason
        result = await self.propose(encode(CommandType.SET_NODE, body))
        self._check_term(result, "set_node")
        if self.deaths is not None:
            self.deaths.forget(node_id)

    async def expire_stale(self) -> None:
        """Record `missed` the pending runs past their misfire grace that the job's policy no
        longer fires (`stale.expiry`), once every STALE_SCAN_S: a stale run must not hold a
        `forbid` job "active" while every slot that falls due is recorded `skipped`."""
        now = self.clock.monotonic()
        if now < self._stale_at:
            return
        self._stale_at = now + STALE_SCAN_S
        now_ms = self.clock.now_ms()
        items: list[dict[str, Any]] = []
        with self.state.lock:
            if usable_version(CommandType.EXPIRE_RUNS, self.state.cluster_version) is None:
                return  # a member does not apply it yet: stale runs wait for the upgrade
            jobs, runs = self.state.jobs, self.state.runs
            for ids in self.state.node_active.values():
                for rid in ids:
                    run = runs[rid]
                    job = jobs.get(run.job_id)
                    reason = expiry(job, run, now_ms) if job is not None else None
                    if reason is not None:
                        items.append({"run_id": rid, "attempt": run.attempt, "reason": reason})
        for start in range(0, len(items), MAX_FIRES_PER_COMMAND):
            result = await self.propose(
                encode(
                    CommandType.EXPIRE_RUNS,
                    {
                        "term": self.active_term,
                        "now_ms": now_ms,
                        "items": items[start : start + MAX_FIRES_PER_COMMAND],
                    },
                )
            )
            self._check_term(result, "expire")
            if not result.get("ok"):
                return
            log.warning("recorded missed: %s", result.get("expired"))

    async def reassign_from_down_nodes(self) -> None:
        """Move every active run of a node committed down, and the pending runs of a draining node
        (its running runs too once it has drained for longer than `drain_timeout_s`)."""
        now_ms = self.clock.now_ms()
        moves: list[dict[str, Any]] = []
        stops: list[str] = []
        with self.state.lock:
            load = self._node_load()
            for node in self.state.nodes.values():
                if node.up and not node.draining and node.clock_ok:
                    continue
                overdue = node.draining and now_ms - node.updated_ms > self.settings.drain_timeout_s * 1000
                for run in self.state.active_runs_of(node.id):
                    if node.up and run.state is RunState.RUNNING and not overdue:
                        continue  # a draining node finishes what it runs
                    if self._of_a_paused_job(run):
                        stops.append(run.run_id)
                    else:
                        self._move(run, load, moves)
        for run_id in stops:
            # A pause cancels pending runs; one already running when its job was paused, whose
            # node then died, must not start again elsewhere after the pause (a new attempt would).
            body = {
                "run_id": run_id,
                "now_ms": now_ms,
                "actor": "the leader: its job is paused, its node down",
            }
            await self.propose(encode(CommandType.CANCEL_RUN, body))
        if moves:
            result = await self.propose(
                encode(
                    CommandType.REASSIGN_RUNS, {"term": self.active_term, "now_ms": now_ms, "moves": moves}
                )
            )
            self._check_term(result, "reassign")
            log.warning("reassigned runs: moved %s, lost %s", result.get("moved"), result.get("lost"))

    def _of_a_paused_job(self, run: Run) -> bool:
        """An at_least_once run of a paused job: moving it would start it again (at_most_once
        moves never start a claimed run again: those are `lost`)."""
        job = self.state.jobs.get(run.job_id)
        return job is not None and job.spec.paused and job.spec.delivery is Delivery.AT_LEAST_ONCE

    def _move(self, run: Run, load: NodeLoad, moves: list[dict[str, Any]]) -> None:
        job = self.state.jobs.get(run.job_id)
        if job is None:
            return
        plain = dataclasses.replace(job.spec.route, strategy=RouteStrategy.LEAST_LOADED)
        picked = load.pick(plain, run.job_id, run.run_id, due_ms=run.due_ms, broker=job.spec.task.broker)
        if picked:
            moves.append({"run_id": run.run_id, "attempt": run.attempt, "node": picked[0]})
            load.add(picked[0], run.due_ms)

    async def finish_drains(self) -> None:
        """Remove each drained node: first from the table (it sees that and stops), then from Raft.
        A draining leader hands leadership over first; the next leader finishes the drain."""
        with self.state.lock:
            drained = [
                n for n in self.state.nodes.values() if n.leaving and not self.state.node_active.get(n.id)
            ]
        for node in drained:
            if node.id == self.settings.node_id:
                log.info("this node is drained: handing leadership over", extra={"node": node.id})
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
                log.info("node %s removed from the cluster", node.id, extra={"node": node.id})


def _last_item(plan: Plan, job_id: str) -> dict[str, Any] | None:
    """The last fire or skip record of `job_id` in `plan`, if the last one planned is the job's."""
    for items in (plan.fires, plan.skips):
        if items and items[-1]["job_id"] == job_id:
            return items[-1]
    return None


def fire_chunk_ms(lookahead_ms: int) -> int:
    """Fires go out in chunks: the leader plans at most once a chunk, unless a slot is due within
    `lookahead - chunk` (a new job, a catch-up: it goes out at once); each command then carries a
    chunk's worth of slots, every one committed at least `lookahead - chunk` ahead. Planning on
    every wake-up, as each commit wakes the leader, committed a sliver of the lookahead per
    command: ~40 fire entries a second at 1,000 runs/s, each paid for in Raft frames and
    applies on every node, more the faster commits came back."""
    return min(FIRE_CHUNK_MAX_MS, lookahead_ms // 10)
