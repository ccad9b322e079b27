"""The replicated data, and the bookkeeping that every command shares.

See `machine` for the contract: deterministic, never raises, one lock for readers.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..alerting import AlertRecord
from ..channels import ChannelSpec
from ..commands import Command
from ..model import AlertOn, Delivery, NotifyRule, RunState
from ..records import NO_RUNS, ZERO_STATS, JobRecord, NodeRecord, Run, evolve, new_stats
from ..routing import Candidate, pick_nodes

__all__ = ["ACTIVE", "OUTCOME_COUNTER", "TERMINAL", "Result", "StateData", "ok", "reject", "slot_record"]

JOB_CHANGES_KEPT = 4096  # generations; a leader further behind rebuilds its queue from every job
ACTIVE = frozenset({RunState.PENDING, RunState.RUNNING})  # `run.state in ACTIVE`: no property call

TERMINAL = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.SKIPPED,
        RunState.MISSED,
    }
)
OUTCOME_COUNTER = {
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.TIMED_OUT: "timed_out",
    RunState.CANCELLED: "cancelled",
    RunState.LOST: "lost",
    RunState.SKIPPED: "skipped",
    RunState.MISSED: "missed",
}

Result = dict[str, Any]
# Final outcomes that alert (`failed` is final here: a retried failure does not end the run).
_ALERTED = {
    RunState.FAILED: AlertOn.FAILED,
    RunState.TIMED_OUT: AlertOn.TIMED_OUT,
    RunState.LOST: AlertOn.LOST,
    RunState.MISSED: AlertOn.MISSED,
}


def ok(**fields: Any) -> Result:
    return {"ok": True, **fields}


def reject(code: str, message: str, field: str | None = None) -> Result:
    return {"ok": False, "code": code, "message": message, "field": field}


class StateData:
    """All replicated data. Mutated only through `State.apply`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.applied = 0
        self.digest = b"\0" * 16
        self.term = 0
        self.leader: str | None = None
        self.settings: dict[str, int] = {"history_per_job": 100, "output_tail_bytes": 4096}
        self.jobs: dict[str, JobRecord] = {}
        self.runs: dict[str, Run] = {}
        self.nodes: dict[str, NodeRecord] = {}
        # job -> its run ids, oldest first; pending/running ones; NO_RUNS (shared) while it has none
        self.job_runs: dict[str, dict[str, None]] = {}
        self.job_active: dict[str, dict[str, None]] = {}
        self.node_active: dict[str, dict[str, None]] = {}  # node -> pending/running run ids
        # node -> how many of its runs are executing (RUNNING): routing's load. Fire-ahead makes
        # a node's pending runs commitments for later, not load: counting them herded whole
        # stretches of fires onto whichever node had just reported its finishes.
        self.node_executing: dict[str, int] = {}
        self.job_waiting: dict[str, dict[str, None]] = {}  # job -> queued run ids (overlap `queue`)
        self.stats: dict[str, dict[str, Any]] = {}  # job -> counters and summaries (ZERO_STATS: none yet)
        self.totals: dict[str, Any] = new_stats()
        self.requests: dict[str, tuple[str, Result, int]] = {}
        self.audit: dict[str, list[dict[str, Any]]] = {}  # job -> its last mutations, oldest first
        self.removed: dict[
            str, int
        ] = {}  # node id -> when it was removed (a removed node may not re-register)
        self.next_incarnation = 1
        # The command versions (commands.py): the highest each node applies, as it published it
        # (absent: 1), and the cluster's, committed by the leader once every member covers it.
        self.published: dict[str, int] = {}
        self.cluster_version = 1
        # The latest `now_ms` a leader has committed (the max over leader commands, from cluster
        # version 2 on): every slot due by it is a run or a record, or in a paused range that
        # reads show as records up to it (state/paused.py). Never a node's own clock.
        self.clock_ms = 0
        # Alerts (state/alerts.py): channels and the cluster's rules; events noted and not yet
        # decided (their `seq` after `alert_cursor`); the alerts decided, oldest first; each
        # channel's throttle; delivery outcomes per "channel|outcome".
        self.channels: dict[str, ChannelSpec] = {}
        self.alert_rules: tuple[NotifyRule, ...] = ()
        self.alert_cluster = "raftsched"
        self.alert_events: deque[dict[str, Any]] = deque()
        self.alert_seq = 0
        self.alert_cursor = 0
        self.alert_events_dropped = 0
        self.alerts: dict[str, AlertRecord] = {}
        self.alert_throttle: dict[str, dict[str, Any]] = {}
        self.alert_counts: dict[str, int] = {}
        self.listeners: list[Callable[[Command, Result], None]] = []
        # Bumped whenever the job table changes other than by a fire (not replicated data: the
        # leader's due-time queue compares it to know when to rebuild).
        self.generation = 0
        # (generation, the job ids that change touched, or None: any) for the last JOB_CHANGES_KEPT
        # generations, so that the leader re-queues only those jobs (`jobs_changed_since`).
        self.job_changes: deque[tuple[int, tuple[str, ...] | None]] = deque(maxlen=JOB_CHANGES_KEPT)

    def _add_run(self, run: Run) -> None:
        self.runs[run.run_id] = run
        _ids(self.job_runs, run.job_id)[run.run_id] = None
        if run.state in ACTIVE:
            _ids(self.job_active, run.job_id)[run.run_id] = None
            if run.node is not None:
                _ids(self.node_active, run.node)[run.run_id] = None
                self._executing(run, 1)
            if run.waiting:
                _ids(self.job_waiting, run.job_id)[run.run_id] = None

    def _move(self, old: Run, new: Run) -> None:
        if old.node is not None:
            self.node_active.get(old.node, {}).pop(old.run_id, None)
            self._executing(old, -1)
        self.runs[new.run_id] = new
        if new.node is not None:
            self.node_active.setdefault(new.node, {})[new.run_id] = None
            self._executing(new, 1)

    def _started(self, run: Run, started_ms: int) -> Run:
        """PENDING -> RUNNING."""
        started = self.runs[run.run_id] = evolve(run, state=RunState.RUNNING, started_ms=started_ms)
        self._executing(started, 1)
        return started

    def _executing(self, run: Run, delta: int) -> None:
        if run.state is RunState.RUNNING and run.node is not None:
            self.node_executing[run.node] = self.node_executing.get(run.node, 0) + delta

    def _finish(
        self, run: Run, state: RunState, now_ms: int, *, reason: str | None = None, **report: Any
    ) -> None:
        """End an active run; `report` holds the worker's fields (output, exit code...), so that a
        reported run is copied once."""
        self.runs[run.run_id] = evolve(
            run, state=state, finished_ms=now_ms, waiting=False, reason=reason or run.reason, **report
        )
        _discard(self.job_active, run.job_id, run.run_id)
        if run.node is not None:
            _discard(self.node_active, run.node, run.run_id)
            self._executing(run, -1)
        if run.waiting:
            _discard(self.job_waiting, run.job_id, run.run_id)
        self._count(run.job_id, OUTCOME_COUNTER[state])
        if state in _ALERTED:
            self._note_run_event(_ALERTED[state], self.runs[run.run_id], now_ms)
        self._release_queued(run.job_id, now_ms)
        self._trim_history(run.job_id)

    def _note_run_event(self, kind: AlertOn, run: Run, now_ms: int, *, late_ms: int | None = None) -> None:
        """An event for the alerts (`AlertCommands` notes it, when a rule wants it)."""

    def _release_queued(self, job_id: str, now_ms: int) -> None:
        if not self.job_waiting.get(job_id):
            return  # nothing of the job waits: the usual case, without a list per finish
        active = [self.runs[r] for r in self.job_active.get(job_id, {})]
        if any(not r.waiting for r in active if not r.manual):
            return
        for run in active:
            if run.waiting:
                self.runs[run.run_id] = evolve(run, waiting=False, due_ms=max(run.due_ms, now_ms))
                _discard(self.job_waiting, job_id, run.run_id)
                return

    def _trim_history(self, job_id: str) -> None:
        ids = self.job_runs.get(job_id)
        if ids is None:
            return
        excess = len(ids) - len(self.job_active.get(job_id, {})) - self.settings["history_per_job"]
        if excess <= 0:
            return
        doomed = []  # the oldest `excess` ended runs, found without copying the whole history
        for rid in ids:
            if self.runs[rid].state in TERMINAL:
                doomed.append(rid)
                if len(doomed) == excess:
                    break
        for rid in doomed:
            del ids[rid]
            del self.runs[rid]

    def _count(self, job_id: str, counter: str, n: int = 1) -> None:
        """Add to a counter of the job (if it still exists) and of the cluster."""
        self.totals[counter] += n
        stats = self._job_stats(job_id)
        if stats is not None:
            stats[counter] += n

    def _observe(self, job_id: str, summary: str, value_ms: int) -> None:
        self.totals[summary].add(value_ms)
        stats = self._job_stats(job_id)
        if stats is not None:
            stats[summary].add(value_ms)

    def _job_stats(self, job_id: str) -> dict[str, Any] | None:
        """The job's own stats to change (its first change replaces the shared ZERO_STATS)."""
        stats = self.stats.get(job_id)
        if stats is ZERO_STATS:
            stats = self.stats[job_id] = new_stats()
        return stats

    def _delivery(self, run: Run) -> Delivery:
        job = self.jobs.get(run.job_id)
        return job.spec.delivery if job else Delivery.AT_LEAST_ONCE

    def _pick_node(self, job: JobRecord, salt: str, exclude: str | None = None) -> str | None:
        candidates = self.candidates()
        others = [c for c in candidates if c.id != exclude]
        picked = pick_nodes(
            evolve(job.spec.route, strategy=job.spec.route.strategy.LEAST_LOADED),
            job.spec.id,
            salt,
            others or candidates,
            broker=job.spec.task.broker,
        )
        return picked[0] if picked else None

    def _record(
        self,
        job: JobRecord,
        state: RunState,
        nominal_ms: int,
        now_ms: int,
        reason: str,
        *,
        until_ms: int | None = None,
        count: int = 1,
    ) -> None:
        run = slot_record(job, state, nominal_ms, now_ms, reason, until_ms=until_ms, count=count)
        if run.run_id in self.runs:
            return
        self._add_run(run)
        self._count(job.spec.id, OUTCOME_COUNTER[state], count)
        if state is RunState.MISSED:
            self._note_run_event(AlertOn.MISSED, run, now_ms)
        self._trim_history(job.spec.id)

    def _cancel_pending(self, job_id: str, now_ms: int, reason: str) -> None:
        for rid in list(self.job_active.get(job_id, {})):
            run = self.runs[rid]
            if run.state is RunState.PENDING:
                self._finish(run, RunState.CANCELLED, now_ms, reason=reason)

    # ------------------------------------------------------------------ reads (hold `lock`)

    def node_runs(self, node_id: str) -> tuple[int, int]:
        """(running, pending): the node's runs executing now, and those assigned but not started."""
        running = self.node_executing.get(node_id, 0)
        return running, len(self.node_active.get(node_id, {})) - running

    def candidates(self, *, executing: bool = False) -> list[Candidate]:
        """Routing's view of the nodes: tags, capacity and load per node.

        The load is the node's active runs (pending or running): what the replicated retry
        routing has always counted, and must keep counting for old logs to replay the same.
        `executing=True` counts the runs executing only: the leader's planner, whose choice the
        log records, routes on that (see `node_executing`)."""
        executing_on, active_on = self.node_executing.get, self.node_active.get
        return [
            Candidate(
                id=n.id,
                tags=n.tags,
                capacity=n.capacity,
                running=executing_on(n.id, 0) if executing else len(active_on(n.id, {})),
                up=n.up,
                draining=n.draining or not n.clock_ok,  # both take no new runs
                brokers=None if n.policy.brokers is None else frozenset(n.policy.brokers),
            )
            for n in self.nodes.values()
        ]

    def active_runs_of(self, node_id: str) -> list[Run]:
        return [self.runs[r] for r in self.node_active.get(node_id, {})]

    def newest_run(self, job_id: str) -> Run | None:
        """The job's run or record added last."""
        ids = self.job_runs.get(job_id)
        return self.runs[next(reversed(ids))] if ids else None

    def runs_newest_first(self, job_id: str | None = None) -> Iterator[Run]:
        ids = reversed(self.job_runs.get(job_id, {})) if job_id is not None else reversed(self.runs)
        return (self.runs[r] for r in ids)

    def jobs_changed_since(self, generation: int) -> set[str] | None:
        """The jobs changed after `generation` (hold `lock`), or None when that is not known: an
        unbounded change, a snapshot load, or changes older than the last JOB_CHANGES_KEPT."""
        changed: set[str] = set()
        covered = 0
        for gen, job_ids in reversed(self.job_changes):
            if gen <= generation:
                break
            if job_ids is None:
                return None
            changed.update(job_ids)
            covered += 1
        return changed if covered == self.generation - generation else None

    def digest_hex(self) -> str:
        return f"{self.applied}:{self.digest.hex()}"


def slot_record(
    job: JobRecord,
    state: RunState,
    nominal_ms: int,
    now_ms: int,
    reason: str,
    *,
    until_ms: int | None = None,
    count: int = 1,
) -> Run:
    """The record of a slot (or of a range of slots, from `nominal_ms` to `until_ms`) that did
    not run: `skipped` or `missed`, with its reason."""
    return Run(
        run_id=f"{job.spec.id}@{nominal_ms}",
        job_id=job.spec.id,
        incarnation=job.incarnation,
        attempt=0,
        nominal_ms=nominal_ms,
        due_ms=nominal_ms,
        node=None,
        state=state,
        created_ms=now_ms,
        finished_ms=now_ms,
        reason=reason,
        until_ms=until_ms,
        count=count,
    )


def _ids(index: dict[str, dict[str, None]], key: str) -> dict[str, None]:
    """The run ids under `key`, to add to (the shared NO_RUNS is replaced first)."""
    ids = index.get(key)
    if ids is None or ids is NO_RUNS:
        ids = index[key] = {}
    return ids


def _discard(index: dict[str, dict[str, None]], key: str, run_id: str) -> None:
    ids = index.get(key)
    if ids is not None:
        ids.pop(run_id, None)
