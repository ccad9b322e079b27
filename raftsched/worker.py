"""Every node's worker: runs what the applied state assigns to this node.

The worker never decides what runs; it follows its own applied copy of the log. It sets a
timer for each pending run's `due_ms` (fires arrive up to `lookahead_s` early), starts the
task on time by its own clock, reports `StartRun` / `FinishRun` in batches, and kills a local
run as soon as the state shows it cancelled, replaced or reassigned (fencing by attempt).
`at_most_once` runs are claimed in the log before they start.

What it leaves on disk, in the node's data directory:

- `outputs/<safe run id>.<attempt>.log`: the full output of every attempt run here (the state
  keeps only a tail). Retention keeps at most `output_keep_files` files and `output_keep_bytes`
  bytes, oldest first, never a file still being written: pruned in a thread at start, then every
  `output_prune_period_s` or after `output_prune_every_runs` runs, whichever comes first, but not
  more often than `output_prune_min_interval_s` (see `executors.outputs`).
- `running-pgids.json`: the process groups of the runs executing now, so that the node's next
  life kills what this one leaves running if it dies; the worker reaps them when it starts, before
  it runs anything. Together with the parent-death signal of every task's child this means no
  orphaned task outlives a node killed with SIGKILL (see `executors._reaper` for how, and what is
  left).
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

from .attempts import AttemptJournal
from .clock import Clock
from .commands import CommandType, encode
from .errors import RaftschedError
from .executors import ExecResult, Executor, GroupLedger, RunContext
from .executors.base import failed
from .executors.outputs import PruneResult, output_path, prune_outputs
from .model import Delivery, JobSpec, RunState, TaskSpec, TaskType
from .records import Run
from .state import State

__all__ = ["MAX_BATCH", "Worker", "WorkerSettings"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]
ExecutorFor = Callable[[TaskType], Executor]

MAX_BATCH = 1000  # items per report command: the state's work per command stays bounded
STALL_S = 0.5  # a gap this long between two reconciliations means this process was stopped
SUSPECT_S = 10.0  # after such a gap, starts read through the log for this long


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    node_id: str
    capacity: int = 8
    output_dir: Path | None = None
    output_keep_files: int = 10000
    output_keep_bytes: int = 1 << 30
    output_prune_period_s: float = 60.0
    output_prune_every_runs: int = 100
    output_prune_min_interval_s: float = 1.0
    report_period_s: float = 0.02
    reconcile_period_s: float = 0.05
    shutdown_grace_s: float = 30.0

    fsync: bool = False
    late_check_ms: int = 250  # a run starting later than this past due first re-reads the log
    attempts_compact_every: int = 10_000  # appends between rewrites of the attempt journal

    @property
    def attempts_path(self) -> Path | None:
        """This node's record of the attempts it started (see `attempts`)."""
        return None if self.output_dir is None else self.output_dir.parent / "attempts.jsonl"

    @property
    def groups_path(self) -> Path | None:
        """The process group ledger, beside the outputs directory (in the node's data directory)."""
        return None if self.output_dir is None else self.output_dir.parent / "running-pgids.json"


@dataclass(slots=True)
class _Local:
    run: Run
    task: asyncio.Task[None] | None  # None: nothing runs here (reported failed when adopted)
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
        ready: Callable[[], bool] = lambda: True,
        barrier: Callable[[], Awaitable[object]] | None = None,
        behind: Callable[[], bool] = lambda: False,
    ) -> None:
        self.settings = settings
        self.state = state
        self.propose = propose
        self.clock = clock
        self.executor_for = executor_for
        self.wake = wake
        self.ready = ready  # True once this node has applied what the cluster had committed
        self.barrier = barrier  # commits a no-op and returns once this node has applied it
        self.behind = behind  # True while this node knows of committed entries it has not applied
        self.draining = False
        attempts = settings.attempts_path
        self.attempts = AttemptJournal(attempts, fsync=settings.fsync) if attempts is not None else None
        self._appends = 0
        self._suspect_until = 0.0  # monotonic: until then every start reads through the log first
        self._barrier_flight: asyncio.Future[None] | None = None
        self._barrier_done_since = -1.0  # monotonic start of the newest barrier that completed
        groups = settings.groups_path
        self.groups = GroupLedger(groups, settings.node_id) if groups is not None else None
        self._local: dict[str, _Local] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._claims: dict[str, dict[str, Any]] = {}
        self._claimed_here: set[tuple[str, int]] = set()
        self._starts: list[dict[str, Any]] = []
        self._finishes: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        self._report_failing = False
        self._capacity = asyncio.Semaphore(settings.capacity)
        self._busy_outputs: set[str] = set()  # file names being written: never pruned
        self._runs_since_prune = 0
        self._prune_wake = asyncio.Event()

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        """Reap what this node's last life left running, then work until cancelled."""
        self.reap_orphans()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reconcile_loop())
                group.create_task(self._report_loop())
                if self.settings.output_dir is not None:
                    group.create_task(self._prune_loop())
                if self.groups is not None:
                    group.create_task(self.groups.keep_written())
        finally:
            await self._stop_runs()

    async def _reconcile_loop(self) -> None:
        # A restarted node replays the log: acting on a half-replayed state would start runs
        # that its last life already reported. Wait until it has caught up with the cluster.
        if self.attempts is not None:
            self.attempts.load()
        while not self.ready():
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.reconcile_period_s)
        self._compact_attempts()
        last = self.clock.monotonic()
        while True:
            now = self.clock.monotonic()
            if now - last > STALL_S:
                # This process did not run for a while (paused, starved): its copy of the log may
                # be behind, so starts go through the log until a lookahead has passed.
                self._suspect_until = now + SUSPECT_S
            last = now
            self.reconcile()
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.reconcile_period_s)

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.report_period_s)
            await self.flush_reports()

    async def _prune_loop(self) -> None:
        while True:
            await self.prune_outputs()
            self._prune_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._prune_wake.wait(), self.settings.output_prune_period_s)
            await asyncio.sleep(self.settings.output_prune_min_interval_s)

    async def _stop_runs(self) -> None:
        """Cancel every run task and wait until each has stopped its processes."""
        tasks = [task for task in self._tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        if self.groups is not None:
            self.groups.flush()

    # ------------------------------------------------------------------ reconciliation

    def reconcile(self) -> None:
        """Start timers for new assignments; kill local runs the state no longer gives us."""
        with self.state.lock:
            mine = {r.run_id: r for r in self.state.active_runs_of(self.settings.node_id)}
            specs = {
                r.job_id: self.state.jobs[r.job_id].spec for r in mine.values() if r.job_id in self.state.jobs
            }
        self._drop_stale(mine)
        if self.draining:
            return
        for run in mine.values():
            spec = specs.get(run.job_id)
            if spec is not None and not run.waiting and run.run_id not in self._local:
                self._adopt(run, spec)

    def _drop_stale(self, mine: dict[str, Run]) -> None:
        for rid, local in list(self._local.items()):
            run = mine.get(rid)
            if run is not None and run.attempt == local.run.attempt:
                continue
            if local.task is not None and not local.task.done():
                log.info(
                    "stopping local run %s attempt %d: no longer ours",
                    rid,
                    local.run.attempt,
                    extra={"run": rid, "node": self.settings.node_id},
                )
                local.task.cancel()
            del self._local[rid]
        self._claimed_here = {
            key
            for key in self._claimed_here
            if (run := mine.get(key[0])) is not None and run.attempt == key[1]
        }

    def _compact_attempts(self) -> None:
        if self.attempts is None:
            return
        with self.state.lock:
            active = {(r.run_id, r.attempt) for r in self.state.active_runs_of(self.settings.node_id)}
        self.attempts.keep_only(active)
        self._appends = 0

    def _adopt(self, run: Run, spec: JobSpec) -> None:
        recorded = self.attempts.get(run.run_id, run.attempt) if self.attempts is not None else None
        if recorded is not None:
            # This node started that attempt before (its reports were not committed): never again.
            if recorded.finish is None:
                self._abandon(run, "the node stopped while the run was in flight (outcome unknown)")
                return
            if run.state is RunState.PENDING:
                self._starts.append(
                    {"run_id": run.run_id, "attempt": run.attempt, "started_ms": recorded.started_ms}
                )
            self._finishes.append(recorded.finish)
            self._local[run.run_id] = _Local(run, None)
            return
        if run.state is RunState.RUNNING:
            # Running in the log but not here: this node restarted mid-run. Report it failed.
            self._abandon(run, "the node restarted while the run was in flight")
            return
        if spec.delivery is Delivery.AT_MOST_ONCE:
            key = (run.run_id, run.attempt)
            if run.claimed and key not in self._claimed_here:
                # Claimed by this node's last life, which may have started it: never start it again.
                self._abandon(
                    run, "the node restarted after claiming the run (at_most_once: not started again)"
                )
                return
            if not run.claimed:
                self._claimed_here.add(key)
                self._claims[run.run_id] = {"run_id": run.run_id, "attempt": run.attempt}
                return
        task = asyncio.create_task(self._execute(run, spec), name=f"run {run.run_id}#{run.attempt}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._local[run.run_id] = _Local(run, task)

    def _abandon(self, run: Run, error: str) -> None:
        self._finishes.append(self._finish_item(run, ExecResult(outcome="failed", error=error)))
        self._local[run.run_id] = _Local(run, None)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s ended with an error", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------------ one run

    async def _execute(self, run: Run, spec: JobSpec) -> None:
        await self.clock.sleep_until_ms(run.due_ms)
        async with self._capacity:
            if not await self._may_start(run):
                return
            local = self._local.get(run.run_id)
            if local is None or local.run.attempt != run.attempt or self.draining:
                return
            local.executing = True
            try:
                await self._run_task(run, spec)
            finally:
                local.executing = False

    async def _may_start(self, run: Run) -> bool:
        """Is the run still this node's to start? Checked through the log when this node's copy may
        be stale: the start is late, this process was stopped a moment ago, or its Raft thread has
        not yet applied entries it knows are committed."""
        late = self.clock.now_ms() - run.due_ms > self.settings.late_check_ms
        if late or self.clock.monotonic() < self._suspect_until:
            return await self._still_ours(run)
        for _ in range(400):  # behind: wait (~2 s at most) until what is committed is applied
            if not self.behind():
                return self._ours_in_state(run)
            await asyncio.sleep(0.005)
        return await self._still_ours(run)

    def _ours_in_state(self, run: Run) -> bool:
        with self.state.lock:
            now = self.state.runs.get(run.run_id)
        return (
            now is not None
            and now.node == self.settings.node_id
            and now.attempt == run.attempt
            and now.state is RunState.PENDING
            and not now.waiting
        )

    async def _still_ours(self, run: Run) -> bool:
        """A late start: this node may have been paused or cut off, and its copy of the log stale
        (the run since cancelled or moved). Read through the log first: commit a no-op, wait until
        it is applied here, then check the run again. Retries until it can, or the run is gone."""
        needed_after = self.clock.monotonic()
        while self.barrier is not None:
            try:
                await self._shared_barrier(needed_after)
                break
            except RaftschedError:
                await asyncio.sleep(self.settings.reconcile_period_s)
                local = self._local.get(run.run_id)
                if local is None or local.run.attempt != run.attempt:
                    return False
        return self._ours_in_state(run)

    async def _shared_barrier(self, needed_after: float) -> None:
        """One barrier serves every start that needed one before it was proposed: under load many
        runs are late at once, and a no-op each would add one log entry per run."""
        while True:
            if self._barrier_done_since >= needed_after:
                return
            if self._barrier_flight is None:
                self._barrier_flight = asyncio.ensure_future(self._one_barrier())
            flight = self._barrier_flight
            await asyncio.shield(flight)

    async def _one_barrier(self) -> None:
        started = self.clock.monotonic()
        try:
            assert self.barrier is not None
            await self.barrier()
            self._barrier_done_since = max(self._barrier_done_since, started)
        finally:
            self._barrier_flight = None

    async def _run_task(self, run: Run, spec: JobSpec) -> None:
        started_ms = self.clock.now_ms()
        self._record(lambda journal: journal.started(run.run_id, run.attempt, started_ms))
        self._starts.append({"run_id": run.run_id, "attempt": run.attempt, "started_ms": started_ms})
        result = await self._call_executor(run, spec)
        item = self._finish_item(run, result)
        item["started_ms"] = started_ms
        self._record(lambda journal: journal.finished(item))
        self._finishes.append(item)

    def _record(self, write: Callable[[AttemptJournal], None]) -> None:
        if self.attempts is None:
            return
        write(self.attempts)
        self._appends += 1
        if self._appends >= self.settings.attempts_compact_every:
            self._compact_attempts()

    async def _call_executor(self, run: Run, spec: JobSpec) -> ExecResult:
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
        path = self._output_path(run)
        if path is not None:
            self._busy_outputs.add(path.name)
        try:
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
            return await self.executor_for(task.type).run(
                task, ctx, timeout_s=spec.timeout, output_path=path, on_group=self._on_group(run)
            )
        except OSError as exc:  # the contract's only raise: the output file cannot be opened
            return failed(f"cannot write the output file: {exc}")
        except Exception as exc:  # a bug in an executor must not leave the run unreported
            log.exception("executor error in run %s", run.run_id, extra={"run": run.run_id})
            return failed(f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if path is not None:
                self._busy_outputs.discard(path.name)
                self._output_written()
            if self.groups is not None:
                self.groups.discard(run.run_id, run.attempt)

    def _on_group(self, run: Run) -> Callable[[int], None] | None:
        groups = self.groups
        if groups is None:
            return None
        return lambda pgid: groups.add(pgid, run.run_id, run.attempt)

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
        return None if base is None else output_path(base, run.run_id, run.attempt)

    # ------------------------------------------------------------------ outputs and groups

    def _output_written(self) -> None:
        self._runs_since_prune += 1
        if self._runs_since_prune >= self.settings.output_prune_every_runs:
            self._prune_wake.set()

    async def prune_outputs(self) -> PruneResult | None:
        """Apply output retention now (in a thread); None when there is no output directory."""
        out = self.settings.output_dir
        if out is None:
            return None
        self._runs_since_prune = 0
        s = self.settings
        try:
            return await asyncio.to_thread(
                prune_outputs,
                out,
                keep_files=s.output_keep_files,
                keep_bytes=s.output_keep_bytes,
                busy=self._busy_outputs,  # read from the thread: membership tests only
            )
        except OSError as exc:
            log.warning("cannot prune outputs in %s: %s", out, exc)
            return None

    def reap_orphans(self) -> list[int]:
        """Kill the process groups this node's last life left running; returns their ids."""
        return self.groups.reap() if self.groups is not None else []

    # ------------------------------------------------------------------ reports

    async def flush_reports(self) -> bool:
        """Send claims, starts and finishes, one command per kind (per MAX_BATCH items).

        What fails to commit stays queued, in order, for the next flush; returns whether
        everything queued was sent. One flush at a time.
        """
        async with self._flush_lock:
            batches = (
                (CommandType.CLAIM_RUNS, list(self._claims.values())),
                (CommandType.START_RUNS, self._starts),
                (CommandType.FINISH_RUNS, self._finishes),
            )
            for cmd_type, items in batches:
                while items:
                    sent = items[:MAX_BATCH]
                    if not await self._send(cmd_type, sent):
                        return False
                    del items[: len(sent)]
                    if cmd_type is CommandType.CLAIM_RUNS:
                        for item in sent:
                            self._claims.pop(item["run_id"], None)
            return True

    async def _send(self, cmd_type: CommandType, items: list[dict[str, Any]]) -> bool:
        body = {"node": self.settings.node_id, "now_ms": self.clock.now_ms(), "items": items}
        try:
            await self.propose(encode(cmd_type, body))
        except RaftschedError as exc:
            if not self._report_failing:
                log.warning("reports not committed yet, will retry: %s: %s", cmd_type.value, exc)
            self._report_failing = True
            return False
        if self._report_failing:
            log.warning("reports committed again")
        self._report_failing = False
        return True

    async def drain(self, grace_s: float) -> None:
        """Stop taking runs, give executing ones `grace_s` to finish, then report what we have.

        Runs still executing after the grace are killed and not reported: the state shows them
        running on a node that is going away, so they follow the delivery policy like the runs of
        a dead node (reassigned with a new attempt, or `lost` for at_most_once), or are reported
        failed by this node's next life if it is back first. Runs not yet started stay pending.
        """
        self.draining = True
        executing = [x.task for x in self._local.values() if x.executing and x.task is not None]
        if executing:
            await asyncio.wait(executing, timeout=grace_s)
        await self._stop_runs()
        with contextlib.suppress(RaftschedError, TimeoutError):
            await asyncio.wait_for(self.flush_reports(), 5)


def _with_overrides(task: TaskSpec, run: Run) -> TaskSpec:
    """A manual trigger's `env` / `kwargs` override the task's own."""
    if not run.env and not run.kwargs:
        return task
    return dataclasses.replace(
        task, env={**task.env, **(run.env or {})}, kwargs={**task.kwargs, **(run.kwargs or {})}
    )
