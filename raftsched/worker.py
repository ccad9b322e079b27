"""Every node's worker: runs what the applied state assigns to this node.

The worker never decides what runs; it follows its own applied copy of the log. It sets a
timer for each pending run's `due_ms` (fires arrive up to `lookahead_s` early), starts the
task on time by its own clock, reports `StartRun` / `FinishRun` in batches, and kills a local
run as soon as the state shows it cancelled, replaced or reassigned (fencing by attempt).
`at_most_once` runs are claimed in the log before they start.

Reconciliation is incremental: `on_applied` (the state's listener, on the tick thread) notes the
runs and jobs each applied command touches, and `reconcile` looks at those only; it goes through
the node's whole active set after a snapshot load, after a command whose effect it cannot tell,
and every `full_reconcile_period_s` as a safety net.

What it leaves on disk, in the node's data directory:

- `outputs/<safe run id>.<attempt>.log`: the full output of an attempt run here, when the tail
  that the state keeps is not all of it (see `executors.base.OutputSink`), or when the attempt did
  not succeed (a retry replaces its tail in the state). Retention keeps at most `output_keep_files`
  files and `output_keep_bytes` bytes, oldest first, never a file still being written: the files
  are listed once at start, then tracked in memory as runs end; the excess is deleted in a thread,
  not more often than every `output_prune_min_interval_s` (see `executors.outputs`).
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
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .attempts import AttemptJournal
from .clock import Clock, wait_event
from .commands import Command, CommandType, encode, usable_version
from .errors import RaftschedError
from .executors import ExecResult, Executor, GroupLedger, OutputSink, RunContext
from .executors.base import OPENED_SINKS, failed
from .executors.outputs import OutputRetention, PruneResult, output_path
from .model import Delivery, JobSpec, RunState, TaskSpec, TaskType, values_from_wire
from .records import Run
from .stale import expiry
from .state import State

__all__ = ["MAX_BATCH", "Worker", "WorkerSettings"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]
ExecutorFor = Callable[[TaskType], Executor]

MAX_BATCH = 1000  # items per report command: the state's work per command stays bounded
STALL_S = 0.5  # this much more time than CPU between two reconciliations: the process was stopped
SUSPECT_S = 10.0  # after such a gap, starts read through the log for this long


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSettings:
    node_id: str
    capacity: int = 8
    output_dir: Path | None = None
    output_keep_files: int = 10000
    output_keep_bytes: int = 1 << 30
    output_prune_min_interval_s: float = 1.0
    report_period_s: float = 0.05
    reconcile_period_s: float = 0.05
    full_reconcile_period_s: float = 5.0  # the safety net under incremental reconciliation
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
    started: bool = False  # this life started the task (never reset): it may not be handed back


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
        log_position: Callable[[], tuple[int, int]] = lambda: (0, 0),
        cpu_time: Callable[[], float] = time.process_time,
    ) -> None:
        self.settings = settings
        self.state = state
        self.propose = propose
        self.clock = clock
        self.executor_for = executor_for
        self.wake = wake
        self.ready = ready  # True once this node has applied what the cluster had committed
        self.barrier = barrier  # commits a no-op and returns once this node has applied it
        self.log_position = log_position  # (applied, known committed) indexes of this node's log
        self.cpu_time = cpu_time  # this process's CPU seconds: tells a stall from a busy spell
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
        self._claimed_here: dict[str, int] = {}  # run id -> the attempt this life claimed
        self._starts: list[dict[str, Any]] = []
        self._finishes: list[dict[str, Any]] = []
        self._flush_lock = asyncio.Lock()
        self._report_failing = False
        self._journal_failing = False
        self._journal_flight: asyncio.Future[None] | None = None  # the queued start lines' write
        self._capacity = asyncio.Semaphore(settings.capacity)
        out = settings.output_dir
        self.retention = (
            OutputRetention(out, keep_files=settings.output_keep_files, keep_bytes=settings.output_keep_bytes)
            if out is not None
            else None
        )
        self._prune_wake = asyncio.Event()
        self._local_jobs: dict[str, set[str]] = {}  # job id -> its run ids in `_local`
        # What applied commands touched since the last reconcile (written on the tick thread).
        self._touched_lock = threading.Lock()
        self._touched_runs: set[str] = set()
        self._touched_jobs: set[str] = set()
        self._full_due = True  # reconcile the whole active set next time
        self._full_at = 0.0  # monotonic: when the safety net reconciles everything again
        self._generation = -1  # the state's generation at the last full reconcile (a load bumps it)

    # ------------------------------------------------------------------ loops

    async def run(self) -> None:
        """Reap what this node's last life left running, then work until cancelled."""
        self.reap_orphans()
        await self._scan_outputs()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._reconcile_loop())
                group.create_task(self._report_loop())
                if self.retention is not None:
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
            await wait_event(self.wake, self.settings.reconcile_period_s)
        self._compact_attempts()
        last, last_cpu = self.clock.monotonic(), self.cpu_time()
        while True:
            now, cpu = self.clock.monotonic(), self.cpu_time()
            if (now - last) - (cpu - last_cpu) > STALL_S:
                # This process did not run for a while (paused, starved): its copy of the log may
                # be behind, so starts go through the log until a lookahead has passed. A gap the
                # process spent computing (a big plan or apply) is no stall: its Raft thread ran.
                self._suspect_until = now + SUSPECT_S
            last, last_cpu = now, cpu
            self.reconcile()
            self.wake.clear()
            await wait_event(self.wake, self.settings.reconcile_period_s)

    async def _report_loop(self) -> None:
        """At most one flush per `report_period_s`, counted from the start of the previous one:
        sleeping the period after each flush made the flush rate follow the commit latency, so
        faster commits meant more, smaller report entries, each paid for on every node."""
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            await self.flush_reports()
            await asyncio.sleep(max(0.0, began + self.settings.report_period_s - loop.time()))

    async def _prune_loop(self) -> None:
        while True:
            await self.prune_outputs()
            self._prune_wake.clear()
            await self._prune_wake.wait()
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

    def on_applied(self, cmd: Command, result: dict[str, Any]) -> None:
        """The state's listener (tick thread, after each apply): note what `cmd` may have changed
        for this node's runs, for the next `reconcile`. Register it before the listener that wakes
        the worker, so that the wake-up finds it noted."""
        runs, jobs, unknown = _touched(cmd, result)
        with self._touched_lock:
            self._touched_runs.update(runs)
            self._touched_jobs.update(jobs)
            self._full_due = self._full_due or unknown

    def reconcile(self) -> None:
        """Start timers for new assignments; kill local runs the state no longer gives us.

        Looks at the runs and jobs touched since the last call (`on_applied`), or at everything
        after a snapshot load (the state's generation moved), when told to, and every
        `full_reconcile_period_s`.
        """
        with self._touched_lock:
            runs, self._touched_runs = self._touched_runs, set()
            jobs, self._touched_jobs = self._touched_jobs, set()
            full, self._full_due = self._full_due, False
        now = self.clock.monotonic()
        if full or now >= self._full_at or self.state.generation != self._generation:
            self._full_at = now + self.settings.full_reconcile_period_s
            self._reconcile_all()
        elif runs or jobs:
            self._reconcile_some(runs, jobs)

    def _reconcile_all(self) -> None:
        with self.state.lock:
            self._generation = self.state.generation
            mine = {r.run_id: r for r in self.state.active_runs_of(self.settings.node_id)}
            specs = self._specs(mine.values())
        for rid in dict.fromkeys([*self._local, *self._claimed_here, *mine]):
            self._settle(rid, mine.get(rid), specs)

    def _reconcile_some(self, runs: set[str], jobs: set[str]) -> None:
        """Every run of a touched job is looked at: a finish or a cancel can release a queued run
        of the same job, and a fire can cancel the job's active runs (overlap `replace`)."""
        with self.state.lock:
            for rid in runs:
                run = self.state.runs.get(rid) or (x.run if (x := self._local.get(rid)) else None)
                if run is not None:
                    jobs.add(run.job_id)
            for job_id in jobs:
                runs.update(self.state.job_active.get(job_id, ()))
                runs.update(self._local_jobs.get(job_id, ()))
            active = self.state.node_active.get(self.settings.node_id, {})
            mine = {rid: self.state.runs[rid] for rid in runs if rid in active}
            specs = self._specs(mine.values())
        for rid in runs:
            self._settle(rid, mine.get(rid), specs)

    def _specs(self, runs: Iterable[Run]) -> dict[str, JobSpec]:
        """The specs of the jobs of `runs` (hold the state lock)."""
        jobs = self.state.jobs
        return {r.job_id: jobs[r.job_id].spec for r in runs if r.job_id in jobs}

    def _settle(self, rid: str, run: Run | None, specs: dict[str, JobSpec]) -> None:
        """Bring run `rid` here in line with the state, where `run` is its record if it is active
        on this node: stop a local attempt it no longer has, adopt one it has."""
        local = self._local.get(rid)
        if local is not None and (run is None or run.attempt != local.run.attempt):
            self._drop(rid, local)
        if rid in self._claimed_here and (run is None or run.attempt != self._claimed_here[rid]):
            del self._claimed_here[rid]
        if run is None or self.draining or run.waiting or rid in self._local:
            return
        spec = specs.get(run.job_id)
        if spec is not None:
            self._adopt(run, spec)

    def _drop(self, rid: str, local: _Local) -> None:
        if local.task is not None and not local.task.done():
            log.info(
                "stopping local run %s attempt %d: no longer ours",
                rid,
                local.run.attempt,
                extra={"run": rid, "node": self.settings.node_id},
            )
            local.task.cancel()
        del self._local[rid]
        same_job = self._local_jobs.get(local.run.job_id)
        if same_job is not None:
            same_job.discard(rid)
            if not same_job:
                del self._local_jobs[local.run.job_id]

    def _keep_local(self, run: Run, task: asyncio.Task[None] | None) -> None:
        self._local[run.run_id] = _Local(run, task)
        self._local_jobs.setdefault(run.job_id, set()).add(run.run_id)

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
            self._keep_local(run, None)
            return
        if run.state is RunState.RUNNING:
            # Running in the log but not here: this node restarted mid-run. Report it failed.
            self._abandon(run, "the node restarted while the run was in flight")
            return
        if spec.delivery is Delivery.AT_MOST_ONCE:
            if run.claimed and self._claimed_here.get(run.run_id) != run.attempt:
                # Claimed by this node's last life, which may have started it: never start it again.
                self._abandon(
                    run, "the node restarted after claiming the run (at_most_once: not started again)"
                )
                return
            if not run.claimed:
                self._claimed_here[run.run_id] = run.attempt
                self._claims[run.run_id] = {"run_id": run.run_id, "attempt": run.attempt}
                return
        task = asyncio.create_task(self._execute(run, spec), name=f"run {run.run_id}#{run.attempt}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        self._keep_local(run, task)

    def _abandon(self, run: Run, error: str) -> None:
        self._finishes.append(self._finish_item(run, ExecResult(outcome="failed", error=error)))
        self._keep_local(run, None)

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
            # `draining` is read here, with nothing awaited before `started` is set: a run that
            # `hand_back` sees not started is never started after it.
            if local is None or local.run.attempt != run.attempt or self.draining:
                return
            local.executing = local.started = True
            try:
                await self._run_task(run, spec)
            finally:
                local.executing = False

    async def _may_start(self, run: Run) -> bool:
        """Is the run still this node's to start? Checked through the log when this node's copy may
        be stale: the start is late, this process was stopped a moment ago, or its Raft thread has
        not yet applied entries it knows are committed."""
        now_ms = self.clock.now_ms()
        with self.state.lock:
            job = self.state.jobs.get(run.job_id)
        if job is not None and (reason := expiry(job, run, now_ms)) is not None:
            # The leader records it missed (the same rule): starting it now would race that.
            log.info("not starting run %s: %s", run.run_id, reason, extra={"run": run.run_id})
            return False
        late = now_ms - run.due_ms > self.settings.late_check_ms
        if late or self.clock.monotonic() < self._suspect_until:
            return await self._still_ours(run)
        # Behind: wait (~2 s at most) until what was committed *now* is applied. Not until nothing
        # committed is unapplied: under a stream of writes there always is some, and a start
        # could wait the whole 2 s and then go through the log.
        applied, committed = self.log_position()
        for _ in range(400):
            if applied >= committed:
                return self._ours_in_state(run)
            await asyncio.sleep(0.005)
            applied = self.log_position()[0]
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
                # Its waiters may all be gone (their runs cancelled) when it fails: retrieved here,
                # the failure is theirs to see, not asyncio's "exception was never retrieved".
                self._barrier_flight.add_done_callback(_retrieved)
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
        if self.attempts is not None:
            self.attempts.started(run.run_id, run.attempt, started_ms)
            await self._journal_written()  # the start line is on disk before the task starts
        self._starts.append({"run_id": run.run_id, "attempt": run.attempt, "started_ms": started_ms})
        result = await self._call_executor(run, spec)
        item = self._finish_item(run, result)
        item["started_ms"] = started_ms
        if self.attempts is not None:
            self.attempts.finished(item)  # written by the next report flush, before it proposes
        self._finishes.append(item)

    async def _journal_written(self) -> None:
        """Wait until the journal's queued lines are written: the runs that start in the same
        wake-up of the loop share one write (the first schedules it after the others' turns)."""
        if self._journal_flight is None:
            loop = asyncio.get_running_loop()
            self._journal_flight = loop.create_future()
            loop.call_soon(self._write_journal_for_starts)
        await asyncio.shield(self._journal_flight)

    def _write_journal_for_starts(self) -> None:
        flight, self._journal_flight = self._journal_flight, None
        assert flight is not None
        try:
            self._write_journal()
        except OSError as exc:
            flight.set_exception(exc)  # no run starts without its line
            return
        flight.set_result(None)

    def _write_journal(self) -> None:
        """Append the journal's queued lines now (raises OSError); compact it every so often."""
        if self.attempts is None:
            return
        self._appends += self.attempts.flush()
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
        sinks: list[OutputSink] = []
        token = OPENED_SINKS.set(sinks)
        keep = True  # an attempt that did not succeed (or was cancelled) keeps even a small output
        try:
            result = await self._executor_result(run, task, ctx, spec.timeout)
            keep = result.outcome != "succeeded"
        finally:
            OPENED_SINKS.reset(token)
            self._outputs_closed(sinks, keep=keep)
            if self.groups is not None:
                self.groups.discard(run.run_id, run.attempt)
        # After `_outputs_closed`: a file kept at close is part of what the sinks kept.
        if any(sink.truncated for sink in sinks):
            result = dataclasses.replace(result, output_truncated=True)
        return result

    async def _executor_result(
        self, run: Run, task: TaskSpec, ctx: RunContext, timeout_s: float | None
    ) -> ExecResult:
        """The executor's result; its one allowed raise and its bugs become failed results."""
        try:
            return await self.executor_for(task.type).run(
                task,
                ctx,
                timeout_s=timeout_s,
                output_path=self._output_path(run),
                on_group=self._on_group(run),
            )
        except OSError as exc:  # the contract's only raise: the output file cannot be opened
            return failed(f"cannot write the output file: {exc}")
        except Exception as exc:  # a bug in an executor must not leave the run unreported
            log.exception("executor error in run %s", run.run_id, extra={"run": run.run_id})
            return failed(f"internal error: {type(exc).__name__}: {exc}")

    def _on_group(self, run: Run) -> Callable[[int], None] | None:
        groups = self.groups
        if groups is None:
            return None
        return lambda pgid: groups.add(pgid, run.run_id, run.attempt)

    def _finish_item(self, run: Run, result: ExecResult) -> dict[str, Any]:
        item: dict[str, Any] = {
            "run_id": run.run_id,
            "attempt": run.attempt,
            "outcome": result.outcome,
            "finished_ms": self.clock.now_ms(),
            "exit_code": result.exit_code,
            "http_status": result.http_status,
            "error": result.error,
            "output": result.output_tail,
        }
        if result.output_truncated:  # only when true: reports of whole outputs keep their bytes
            item["output_truncated"] = True
        return item

    def _output_path(self, run: Run) -> Path | None:
        base = self.settings.output_dir
        return None if base is None else output_path(base, run.run_id, run.attempt)

    # ------------------------------------------------------------------ outputs and groups

    async def _scan_outputs(self) -> None:
        """Create the outputs directory and list what it holds, once, before any run writes."""
        if self.retention is None:
            return
        try:
            await asyncio.to_thread(self.retention.scan)
        except OSError as exc:
            log.warning("cannot list outputs in %s: %s", self.retention.directory, exc)

    def _outputs_closed(self, sinks: list[OutputSink], *, keep: bool) -> None:
        """Track the files a run wrote. An attempt that did not succeed keeps its output in a file
        even when small: a retry replaces its tail in the state."""
        for sink in sinks:
            if keep:
                sink.keep()
            if self.retention is not None and sink.path is not None and sink.file_bytes is not None:
                self.retention.add(sink.path.name, sink.file_bytes)
        if self.retention is not None and self.retention.over():
            self._prune_wake.set()

    async def prune_outputs(self) -> PruneResult | None:
        """Apply output retention now (deleting in a thread); None when there is no output directory."""
        if self.retention is None:
            return None
        return await asyncio.to_thread(self.retention.delete, self.retention.take_excess())

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
            self._write_finish_lines()
            self._fold_starts()
            claims = list(self._claims.values())
            claimed = await self._send_all(CommandType.CLAIM_RUNS, claims)
            unsent = {item["run_id"] for item in claims}
            self._claims = {rid: item for rid, item in self._claims.items() if rid in unsent}
            if not claimed:
                return False
            # Starts and finishes of one flush concern different runs (`_fold_starts`): their
            # order in the log does not matter, so they commit side by side, not one after the other.
            sent = await asyncio.gather(
                self._send_all(CommandType.START_RUNS, self._starts),
                self._send_all(CommandType.FINISH_RUNS, self._finishes),
            )
            return all(sent)

    def _fold_starts(self) -> None:
        """A run that started and finished since the last flush is reported by its finish alone
        (it carries `started_ms`): one item and one apply instead of two, on every node."""
        if not (self._starts and self._finishes):
            return
        done = {(f["run_id"], f["attempt"]) for f in self._finishes if f.get("started_ms") is not None}
        if done:
            self._starts[:] = [s for s in self._starts if (s["run_id"], s["attempt"]) not in done]

    async def _send_all(self, cmd_type: CommandType, items: list[dict[str, Any]]) -> bool:
        """Propose what `items` (a queue the runs append to) holds now, MAX_BATCH per command,
        removing what commits from its front. What is queued meanwhile waits for the next flush:
        chasing it kept one flush going for seconds under load, holding back the other kind."""
        left = len(items)
        while left:
            sent = items[: min(left, MAX_BATCH)]
            if not await self._send(cmd_type, sent):
                return False
            del items[: len(sent)]
            left -= len(sent)
        return True

    def _write_finish_lines(self) -> None:
        """The finish lines go to the journal before their reports are proposed. If the disk
        fails, the reports go anyway (they are what counts) and the lines stay queued."""
        try:
            self._write_journal()
        except OSError as exc:
            if not self._journal_failing:
                log.warning("cannot write the attempt journal, will retry: %s", exc)
            self._journal_failing = True
            return
        self._journal_failing = False

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
            log.info("reports committed again")
        self._report_failing = False
        return True

    async def hand_back(self, timeout_s: float) -> bool | None:
        """Stop taking and starting runs, and hand back (UNCLAIM_RUNS) the runs assigned here that
        this node has not started, so the leader moves them at once (a stopping node's pending
        runs otherwise wait for it to be found down). Best effort within `timeout_s`; returns True
        once committed (it also drains the node in the state), False when the cluster refused
        it, None when it did not commit in time.

        Safe because `draining` is set first and `_execute` reads it, with nothing awaited in
        between, right before it marks a run started: a run listed here never starts. The flush
        lock is taken so that no claim is in flight: a claim committed after the hand-back would
        claim the run again, and an `at_most_once` run would be `lost` instead of moved."""
        self.draining = True
        with self.state.lock:
            if usable_version(CommandType.UNCLAIM_RUNS, self.state.cluster_version) is None:
                return False  # a member does not apply it yet: the caller drains instead
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                await self._flush_lock.acquire()
        except TimeoutError:
            return None
        try:
            self._claims.clear()  # never sent: those runs are not claimed
            items = self._unstarted()
            for start in range(0, max(1, len(items)), MAX_BATCH):
                body = {
                    "node": self.settings.node_id,
                    "now_ms": self.clock.now_ms(),
                    "actor": "shutdown",
                    "items": items[start : start + MAX_BATCH],
                }
                left = deadline - loop.time()
                if left <= 0:
                    return None
                try:
                    async with asyncio.timeout(left):
                        result = await self.propose(encode(CommandType.UNCLAIM_RUNS, body))
                except (RaftschedError, TimeoutError) as exc:
                    log.warning("runs not handed back: %s", exc)
                    return None
                if not result.get("ok"):
                    log.warning("runs not handed back: %s", result.get("message"))
                    return False
                log.warning("handed back runs %s", result.get("released"))
            return True
        finally:
            self._flush_lock.release()

    def _unstarted(self) -> list[dict[str, Any]]:
        """The pending runs assigned here that no life of this node started (call with
        `draining` set: then none of them starts any more)."""
        with self.state.lock:
            pending = [
                r for r in self.state.active_runs_of(self.settings.node_id) if r.state is RunState.PENDING
            ]
        items = []
        for run in pending:
            local = self._local.get(run.run_id)
            if (
                local is not None
                and local.run.attempt == run.attempt
                and (local.started or local.task is None)
            ):
                continue  # started by this life, or by its last one (found in the journal)
            if self.attempts is not None and self.attempts.get(run.run_id, run.attempt) is not None:
                continue
            items.append({"run_id": run.run_id, "attempt": run.attempt})
        return items

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
            async with asyncio.timeout(5):
                await self.flush_reports()


_NO_RUNS = frozenset(
    {
        CommandType.BEGIN_TERM,
        CommandType.REGISTER_NODE,
        CommandType.SET_NODE,
        CommandType.ADD_NODE,
        CommandType.DRAIN_NODE,
        CommandType.REMOVE_NODE,
        CommandType.RESTORE_JOBS,  # creates jobs, not runs
        CommandType.NOOP,
        CommandType.SET_CLUSTER_VERSION,
        CommandType.ACCOUNT_PAUSED,  # records of slots that never ran: nothing for a worker
        # Alerts touch no run (the courier reads them on its own).
        CommandType.PUT_CHANNEL,
        CommandType.DELETE_CHANNEL,
        CommandType.SET_ALERT_RULES,
        CommandType.RAISE_ALERTS,
        CommandType.REPORT_ALERTS,
    }
)
_RUN_ITEMS = {
    CommandType.CLAIM_RUNS: "items",
    CommandType.START_RUNS: "items",
    CommandType.FINISH_RUNS: "items",
    CommandType.REASSIGN_RUNS: "moves",
    CommandType.UNCLAIM_RUNS: "items",
    CommandType.EXPIRE_RUNS: "items",
}
_JOB_COMMANDS = frozenset(
    {CommandType.DELETE_JOB, CommandType.PAUSE_JOB, CommandType.RESUME_JOB, CommandType.TRIGGER_JOB}
)


def _retrieved(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _touched(cmd: Command, result: dict[str, Any]) -> tuple[Iterable[str], Iterable[str], bool]:
    """(run ids, job ids, unknown) that `cmd` may have changed runs of: a command changes runs only
    of the jobs it names or whose runs it names. Unknown: a command that failed inside the state
    (it may have changed anything) or that this table does not know, so look at everything."""
    t, body = cmd.type, cmd.body
    if result.get("code") == "internal":
        return (), (), True
    if t in _NO_RUNS:
        return (), (), False
    if t is CommandType.FIRE_RUNS:
        return (), [str(f.get("job_id")) for f in body.get("fires", ())], False
    if t in _RUN_ITEMS:
        return [str(i.get("run_id")) for i in body.get(_RUN_ITEMS[t], ())], (), False
    if t is CommandType.CANCEL_RUN:
        return [str(body.get("run_id"))], (), False
    if t is CommandType.PUT_JOB:
        return (), [str((body.get("spec") or {}).get("id"))], False
    if t in _JOB_COMMANDS:
        return (), [str(body.get("job_id"))], False
    return (), (), True


def _with_overrides(task: TaskSpec, run: Run) -> TaskSpec:
    """A manual trigger's `env` / `kwargs` override the task's own (env values may be references)."""
    if not run.env and not run.kwargs:
        return task
    return dataclasses.replace(
        task,
        env={**task.env, **values_from_wire(run.env or {})},
        kwargs={**task.kwargs, **(run.kwargs or {})},
    )
