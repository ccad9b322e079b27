"""Every node's worker: runs what the applied state assigns to this node.

The worker never decides what runs; it follows its own applied copy of the log. It sets a
timer for each pending run's `due_ms` (fires arrive up to `lookahead_s` early), starts the
task on time by its own clock, reports `StartRun` / `FinishRun` in batches, and kills a local
run as soon as the state shows it cancelled, replaced or reassigned (fencing by attempt).
`at_most_once` runs are claimed in the log before they start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clock import Clock
from .commands import CommandType, encode
from .errors import RaftschedError
from .executors import ExecResult, Executor, RunContext
from .model import Delivery, JobSpec, RunState, TaskSpec, TaskType
from .records import Run
from .state import State

__all__ = ["Worker", "WorkerSettings"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]
ExecutorFor = Callable[[TaskType], Executor]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    node_id: str
    capacity: int = 8
    output_dir: Path | None = None
    report_period_s: float = 0.02
    reconcile_period_s: float = 0.05
    shutdown_grace_s: float = 30.0


@dataclass(slots=True)
class _Local:
    attempt: int
    task: asyncio.Task[None]
    executing: bool = False


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        state: State,
        propose: Propose,
        clock: Clock,
        executor_for: ExecutorFor,
        wake: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.state = state
        self.propose = propose
        self.clock = clock
        self.executor_for = executor_for
        self.wake = wake
        self.draining = False
        self._local: dict[str, _Local] = {}
        self._claims: dict[str, dict[str, Any]] = {}
        self._starts: list[dict[str, Any]] = []
        self._finishes: list[dict[str, Any]] = []
        self._reported = asyncio.Event()
        self._capacity = asyncio.Semaphore(settings.capacity)

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._reconcile_loop())
            group.create_task(self._report_loop())

    async def _reconcile_loop(self) -> None:
        try:
            while True:
                self.reconcile()
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.settings.reconcile_period_s)
        finally:
            for local in self._local.values():
                local.task.cancel()

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_period_s)
            await self.flush_reports()

    # ------------------------------------------------------------------ reconciliation

    def reconcile(self) -> None:
        """Start timers for new assignments; kill local runs the state no longer gives us."""
        with self.state.lock:
            mine = {r.run_id: r for r in self.state.active_runs_of(self.settings.node_id)}
            specs = {
                r.job_id: self.state.jobs[r.job_id].spec for r in mine.values() if r.job_id in self.state.jobs
            }
        for rid, local in list(self._local.items()):
            run = mine.get(rid)
            if run is None or run.attempt != local.attempt:
                if not local.task.done():
                    log.info(
                        "stopping local run %s attempt %d: no longer ours",
                        rid,
                        local.attempt,
                        extra={"run": rid, "node": self.settings.node_id},
                    )
                    local.task.cancel()
                del self._local[rid]
        if self.draining:
            return
        for run in mine.values():
            spec = specs.get(run.job_id)
            if spec is not None and not run.waiting and run.run_id not in self._local:
                self._adopt(run, spec)

    def _adopt(self, run: Run, spec: JobSpec) -> None:
        if run.state is RunState.RUNNING:
            # Running in the log but not here: this node restarted mid-run. Report it failed.
            self._finishes.append(
                self._finish_item(
                    run, ExecResult(outcome="failed", error="the node restarted while the run was in flight")
                )
            )
            self._local[run.run_id] = _Local(run.attempt, asyncio.create_task(asyncio.sleep(0)))
            return
        if spec.delivery is Delivery.AT_MOST_ONCE and not run.claimed:
            self._claims.setdefault(run.run_id, {"run_id": run.run_id, "attempt": run.attempt})
            return
        task = asyncio.create_task(self._execute(run, spec), name=f"run {run.run_id}#{run.attempt}")
        self._local[run.run_id] = _Local(run.attempt, task)

    # ------------------------------------------------------------------ one run

    async def _execute(self, run: Run, spec: JobSpec) -> None:
        await self.clock.sleep_until_ms(run.due_ms)
        async with self._capacity:
            local = self._local.get(run.run_id)
            if local is None or local.attempt != run.attempt or self.draining:
                return
            local.executing = True
            try:
                await self._run_task(run, spec)
            finally:
                local.executing = False

    async def _run_task(self, run: Run, spec: JobSpec) -> None:
        started_ms = self.clock.now_ms()
        self._starts.append({"run_id": run.run_id, "attempt": run.attempt, "started_ms": started_ms})
        task = _with_overrides(spec.task, run)
        ctx = RunContext(
            job_id=run.job_id,
            run_id=run.run_id,
            attempt=run.attempt,
            scheduled_ms=run.nominal_ms,
            node_id=self.settings.node_id,
            shard=run.shard,
            shards=run.shards,
        )
        result = await self.executor_for(task.type).run(
            task, ctx, timeout_s=spec.timeout, output_path=self._output_path(run)
        )
        item = self._finish_item(run, result)
        item["started_ms"] = started_ms
        self._finishes.append(item)

    def _finish_item(self, run: Run, result: ExecResult) -> dict[str, Any]:
        return {
            "run_id": run.run_id,
            "attempt": run.attempt,
            "outcome": result.outcome,
            "finished_ms": self.clock.now_ms(),
            "exit_code": result.exit_code,
            "http_status": result.http_status,
            "error": result.error,
            "output": result.output_tail,
        }

    def _output_path(self, run: Run) -> Path | None:
        base = self.settings.output_dir
        if base is None:
            return None
        base.mkdir(parents=True, exist_ok=True)
        return base / f"{run.run_id.replace('/', '_')}.{run.attempt}.log"

    # ------------------------------------------------------------------ reports

    async def flush_reports(self) -> None:
        """Send claims, starts and finishes, one command each; keep them for retry on failure."""
        node = self.settings.node_id
        batches = (
            (CommandType.CLAIM_RUNS, list(self._claims.values())),
            (CommandType.START_RUNS, self._starts),
            (CommandType.FINISH_RUNS, self._finishes),
        )
        for cmd_type, items in batches:
            if not items:
                continue
            sent = list(items)
            try:
                await self.propose(
                    encode(cmd_type, {"node": node, "now_ms": self.clock.now_ms(), "items": sent})
                )
            except RaftschedError as exc:
                log.warning("report %s not committed yet: %s", cmd_type.value, exc)
                return
            if cmd_type is CommandType.CLAIM_RUNS:
                for item in sent:
                    self._claims.pop(item["run_id"], None)
            else:
                del items[: len(sent)]
        self._reported.set()

    async def drain(self, grace_s: float) -> None:
        """Stop taking runs, give running ones `grace_s` to finish, then report what we have."""
        self.draining = True
        running = [local.task for local in self._local.values() if local.executing]
        if running:
            await asyncio.wait(running, timeout=grace_s)
        for local in self._local.values():
            local.task.cancel()
        with contextlib.suppress(RaftschedError):
            await asyncio.wait_for(self.flush_reports(), 5)


def _with_overrides(task: TaskSpec, run: Run) -> TaskSpec:
    """A manual trigger's `env` / `kwargs` override the task's own."""
    if not run.env and not run.kwargs:
        return task
    return dataclasses.replace(
        task, env={**task.env, **(run.env or {})}, kwargs={**task.kwargs, **(run.kwargs or {})}
    )
