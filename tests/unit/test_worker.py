"""The worker on a real State, a fake clock, an in-memory proposer and fake executors.

Plus its disk: output retention and names, the process group ledger and the reaping of what a
dead node left running, and the parent-death signal of real task processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from raftsched.api.views import run_view
from raftsched.clock import FakeClock
from raftsched.commands import VERSION as COMMAND_VERSION
from raftsched.commands import Command, CommandType, decode
from raftsched.errors import NoLeader, RaftschedError
from raftsched.executors import (
    ExecPolicy,
    ExecResult,
    Executor,
    GroupLedger,
    OutputSink,
    RunContext,
    executor_for,
)
from raftsched.executors._reaper import boot_id, start_ticks
from raftsched.executors.base import output_so_far, truncation_marker
from raftsched.executors.outputs import OutputRetention, output_file_name
from raftsched.model import RunState, TaskSpec, TaskType
from raftsched.worker import Worker, WorkerSettings

from statekit import T0, Driver

NODE = "n2"
DUE = T0 + 1000


def rid(job: str, nominal_ms: int = DUE) -> str:
    return f"{job}@{nominal_ms}"


# ---------------------------------------------------------------- fakes


class Proposer:
    """Commits by applying to the driver's State at once; `fail` makes proposals raise instead."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.commands: list[Command] = []
        self.fail: RaftschedError | None = None
        self.gate: asyncio.Event | None = None  # when set: each proposal waits for it

    async def __call__(self, data: bytes) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.commands.append(decode(data))
        return self.driver.state.apply(data)

    def of(self, cmd_type: CommandType) -> list[list[dict[str, Any]]]:
        """The items of each committed command of `cmd_type`."""
        return [c.body["items"] for c in self.commands if c.type is cmd_type]


class FakeExecutor:
    """Every run waits until the test releases it (or finishes at once with `auto`)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.started: list[tuple[str, int, int]] = []  # (run id, attempt, wall ms at start)
        self.cancelled: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.auto = False
        self.running = 0
        self.peak = 0
        self.tail_bytes = 4096  # the sink's tail: a smaller one makes every run write a file
        self.max_bytes = 1 << 20  # the sink's output_max_bytes
        self.more_output = b""  # written after the first line
        self.outcome: str = "succeeded"

    def gate(self, run_id: str) -> asyncio.Event:
        return self.gates.setdefault(run_id, asyncio.Event())

    def release(self, *run_ids: str) -> None:
        for run_id in run_ids:
            self.gate(run_id).set()

    def started_ids(self) -> list[str]:
        return [run_id for run_id, _, _ in self.started]

    async def run(
        self,
        task: TaskSpec,
        ctx: RunContext,
        *,
        timeout_s: float | None,
        output_path: Path | None,
        on_group: Callable[[int], None] | None = None,
    ) -> ExecResult:
        self.started.append((ctx.run_id, ctx.attempt, self.clock.now_ms()))
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            with OutputSink(self.tail_bytes, output_path, max_bytes=self.max_bytes) as sink:
                sink.write(f"output of {ctx.run_id}\n".encode())
                sink.write(self.more_output)
                if not self.auto:
                    await self.gate(ctx.run_id).wait()
        except asyncio.CancelledError:
            self.cancelled.append(ctx.run_id)
            raise
        finally:
            self.running -= 1
        return ExecResult(outcome=self.outcome, exit_code=0, output_tail=f"ok {ctx.run_id}")  # type: ignore[arg-type]

    async def close(self) -> None:
        pass


@dataclass
class Rig:
    driver: Driver
    clock: FakeClock
    proposer: Proposer
    executor: FakeExecutor
    worker: Worker
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def settle(self, rounds: int = 20) -> None:
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def tick(self) -> None:
        """One reconciliation, then let every woken task run."""
        self.worker.reconcile()
        await self.settle()

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.tick()

    def run_state(self, run_id: str) -> RunState:
        return self.driver.state.runs[run_id].state


def make_rig(node: str = NODE, executor: Executor | None = None, **settings: Any) -> Rig:
    driver = Driver()
    driver.boot(version=COMMAND_VERSION)  # current nodes: hand-backs are a version 2 command
    clock = FakeClock(T0)
    proposer = Proposer(driver)
    fake = FakeExecutor(clock)
    chosen: Executor = executor if executor is not None else fake
    worker = Worker(
        WorkerSettings(node_id=node, **settings),
        driver.state,
        proposer,
        clock,
        lambda _: chosen,
        asyncio.Event(),
    )
    driver.state.listeners.insert(0, worker.on_applied)  # as the node wires it
    return Rig(driver, clock, proposer, fake, worker)


@pytest.fixture
async def rigs() -> AsyncIterator[Callable[..., Rig]]:
    """A factory of rigs whose run tasks are all stopped at teardown."""
    made: list[Rig] = []

    def factory(**kwargs: Any) -> Rig:
        made.append(make_rig(**kwargs))
        return made[-1]

    yield factory
    for one in made:
        await one.worker._stop_runs()


@pytest.fixture
def rig(rigs: Callable[..., Rig]) -> Rig:
    return rigs()


def fire(rig: Rig, job: str, due_ms: int = DUE, node: str = NODE, **job_fields: Any) -> str:
    if job not in rig.driver.state.jobs:
        assert rig.driver.add(job, **job_fields)["ok"]
    result = rig.driver.fire(job, due_ms, node=node)
    assert result["ok"] and result["fired"] == [rid(job, due_ms)], result
    return rid(job, due_ms)


# ---------------------------------------------------------------- timing and batching


async def test_run_starts_at_its_due_time_by_the_clock_not_before(rig: Rig) -> None:
    run_id = fire(rig, "j")
    fire(rig, "other", node="n3")  # not ours: never started here
    await rig.tick()
    assert rig.executor.started == []
    await rig.advance(0.999)
    assert rig.executor.started == []
    await rig.advance(0.001)
    assert rig.executor.started == [(run_id, 1, DUE)]


async def test_starts_and_finishes_of_one_tick_are_one_command_each(rig: Rig) -> None:
    run_ids = [fire(rig, job) for job in ("a", "b", "c")]
    busy = fire(rig, "d")
    await rig.advance(1)
    assert sorted(rig.executor.started_ids()) == sorted([*run_ids, busy])
    rig.executor.release(*run_ids)
    await rig.settle()
    assert await rig.worker.flush_reports()
    starts, finishes = rig.proposer.of(CommandType.START_RUNS), rig.proposer.of(CommandType.FINISH_RUNS)
    # a run that started and ended since the last flush is reported by its finish alone
    assert len(starts) == 1 and [i["run_id"] for i in starts[0]] == [busy]
    assert len(finishes) == 1 and sorted(i["run_id"] for i in finishes[0]) == sorted(run_ids)
    assert all(i["started_ms"] == DUE and i["output"] == f"ok {i['run_id']}" for i in finishes[0])
    assert [rig.run_state(r) for r in run_ids] == [RunState.SUCCEEDED] * 3
    assert rig.run_state(busy) is RunState.RUNNING
    assert all(rig.driver.state.runs[r].started_ms == DUE for r in [*run_ids, busy])
    assert await rig.worker.flush_reports()  # nothing left: no empty commands
    assert len(rig.proposer.commands) == 2
    rig.executor.release(busy)


async def test_capacity_limits_concurrent_executions(rigs: Callable[..., Rig]) -> None:
    rig = rigs(capacity=2)
    run_ids = [fire(rig, job) for job in ("a", "b", "c", "d")]
    await rig.advance(1)
    assert rig.executor.running == 2
    first = rig.executor.started_ids()
    rig.executor.release(first[0])
    await rig.settle()
    assert len(rig.executor.started) == 3 and rig.executor.running == 2
    rig.executor.release(*run_ids)
    await rig.settle()
    assert sorted(rig.executor.started_ids()) == sorted(run_ids)
    assert rig.executor.peak == 2


# ---------------------------------------------------------------- fencing: cancel and reassign


async def test_cancelled_run_is_killed_locally_and_not_reported(rig: Rig) -> None:
    running, pending = fire(rig, "a"), fire(rig, "b", due_ms=DUE + 5000)
    await rig.advance(1)
    assert rig.executor.started_ids() == [running]
    for run_id in (running, pending):
        assert rig.driver.cmd(CommandType.CANCEL_RUN, run_id=run_id, now_ms=DUE, actor="t")["ok"]
    await rig.tick()
    assert rig.executor.cancelled == [running]
    await rig.advance(10)
    assert rig.executor.started_ids() == [running]  # the cancelled pending run never started
    assert await rig.worker.flush_reports()
    assert rig.proposer.of(CommandType.FINISH_RUNS) == []
    assert rig.run_state(running) is RunState.CANCELLED


async def test_reassigned_run_is_killed_locally(rig: Rig) -> None:
    run_id = fire(rig, "a")
    await rig.advance(1)
    assert await rig.worker.flush_reports()
    moved = rig.driver.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=DUE + 100,
        moves=[{"run_id": run_id, "attempt": 1, "node": "n3"}],
    )
    assert moved["moved"] == [run_id]
    await rig.tick()
    assert rig.executor.cancelled == [run_id]
    assert rig.driver.state.runs[run_id].attempt == 2
    rig.executor.release(run_id)
    assert await rig.worker.flush_reports()
    assert rig.proposer.of(CommandType.FINISH_RUNS) == []


# ---------------------------------------------------------------- incremental reconciliation


def count_full(rig: Rig) -> list[int]:
    """How many times the worker went through its whole active set (one item per time)."""
    calls: list[int] = []
    full = rig.worker._reconcile_all

    def counted() -> None:
        calls.append(1)
        full()

    rig.worker._reconcile_all = counted  # type: ignore[method-assign]
    return calls


async def test_a_wake_up_looks_only_at_what_the_applied_commands_touched(rig: Rig) -> None:
    assert rig.driver.add("b")["ok"]  # a change to the job table: the next reconcile is a full one
    fire(rig, "a")
    await rig.tick()
    full = count_full(rig)
    b = fire(rig, "b")
    await rig.tick()
    assert full == [] and set(rig.worker._local) == {rid("a"), b}
    await rig.advance(1)
    assert sorted(rig.executor.started_ids()) == [rid("a"), b]
    await rig.advance(rig.worker.settings.full_reconcile_period_s)  # the safety net
    assert full == [1]


@pytest.mark.parametrize(
    "how",
    ["delete the job", "pause the job", "edit the job", "replace by the next slot", "snapshot load"],
)
async def test_a_run_the_log_took_away_is_killed_whatever_command_did_it(rig: Rig, how: str) -> None:
    run_id = fire(rig, "a", overlap="replace")
    pending = fire(rig, "p", due_ms=DUE + 5000)
    await rig.advance(1)
    assert rig.executor.started_ids() == [run_id]
    d = rig.driver
    if how == "delete the job":
        assert d.cmd(CommandType.DELETE_JOB, job_id="a", now_ms=DUE, actor="t")["ok"]
        assert d.cmd(CommandType.DELETE_JOB, job_id="p", now_ms=DUE, actor="t")["ok"]
    elif how == "pause the job":
        assert d.start(run_id, at=DUE)["ok"]
        assert d.cmd(CommandType.CANCEL_RUN, run_id=run_id, now_ms=DUE, actor="t")["ok"]
        assert d.cmd(CommandType.PAUSE_JOB, job_id="p", now_ms=DUE, actor="t")["ok"]
    elif how == "edit the job":
        assert d.cmd(CommandType.CANCEL_RUN, run_id=run_id, now_ms=DUE, actor="t")["ok"]
        spec = {**d.state.jobs["p"].spec.to_dict(), "schedule": {"every": 7}}
        assert d.cmd(CommandType.PUT_JOB, spec=spec, now_ms=DUE, mode="replace")["ok"]
    elif how == "replace by the next slot":
        fire(rig, "a", due_ms=DUE + 60_000, node="n3")
        assert d.cmd(CommandType.CANCEL_RUN, run_id=pending, now_ms=DUE, actor="t")["ok"]
    else:
        other = Driver()
        other.state.load(d.state.dump())
        for cancel in (run_id, pending):
            other.cmd(CommandType.CANCEL_RUN, run_id=cancel, now_ms=DUE, actor="t")
        rig.worker.on_applied, listener = (lambda *_: None), rig.worker.on_applied  # type: ignore[method-assign]
        d.state.load(other.state.dump())  # no listener hears a snapshot load
        rig.worker.on_applied = listener  # type: ignore[method-assign]
    if how != "snapshot load":
        rig.worker._generation = d.state.generation  # what the commands touched is enough
    await rig.tick()
    assert rig.executor.cancelled == [run_id]
    assert rig.worker._local == {} and rig.worker._local_jobs == {}  # at once, not by the safety net
    await rig.advance(10)
    assert rig.executor.started_ids() == [run_id]  # the pending one never started


async def test_a_queued_run_released_by_a_finish_elsewhere_gets_its_timer(rig: Rig) -> None:
    first = fire(rig, "q", overlap="queue", node="n3")
    queued = fire(rig, "q", due_ms=DUE + 1000)
    assert rig.driver.state.runs[queued].waiting
    await rig.tick()
    assert rig.worker._local == {}
    assert rig.driver.start(first, node="n3", at=DUE)["ok"]
    assert rig.driver.finish(first, node="n3", at=DUE + 1500)["ok"]  # n3's report releases ours
    await rig.tick()
    assert set(rig.worker._local) == {queued}
    await rig.advance(2.499)
    assert rig.executor.started_ids() == []
    await rig.advance(0.001)  # released at the finish: due then
    assert rig.executor.started_ids() == [queued]


async def test_a_retry_on_this_node_is_a_new_attempt_with_its_own_timer(rig: Rig) -> None:
    for other in ("n1", "n3"):  # down: the retry stays here
        assert rig.driver.cmd(CommandType.SET_NODE, term=1, node=other, up=False, now_ms=T0)["ok"]
    run_id = fire(rig, "r", retries={"max": 1, "initial_delay": 1, "jitter": 0})
    rig.executor.auto, rig.executor.outcome = True, "failed"
    await rig.advance(1)
    assert await rig.worker.flush_reports()
    run = rig.driver.state.runs[run_id]
    assert (run.attempt, run.state, run.node) == (2, RunState.PENDING, NODE)
    await rig.tick()
    await rig.advance(1)
    assert [a for r, a, _ in rig.executor.started if r == run_id] == [1, 2]


async def test_a_command_the_worker_cannot_read_makes_it_look_at_everything(rig: Rig) -> None:
    fire(rig, "a")
    await rig.tick()
    full = count_full(rig)
    rig.worker.on_applied(Command(type=CommandType.NOOP, body={}), {"ok": False, "code": "internal"})
    await rig.tick()
    assert full == [1]


# ---------------------------------------------------------------- at_most_once


async def test_at_most_once_is_claimed_ahead_and_never_started_unclaimed(rig: Rig) -> None:
    run_id = fire(rig, "once", delivery="at_most_once")
    rig.proposer.fail = NoLeader("no leader")
    await rig.tick()
    assert not await rig.worker.flush_reports()
    await rig.advance(5)  # long past due: unclaimed, so not started
    assert rig.executor.started == []
    rig.proposer.fail = None
    assert await rig.worker.flush_reports()
    claims = rig.proposer.of(CommandType.CLAIM_RUNS)
    assert claims == [[{"run_id": run_id, "attempt": 1}]]
    assert rig.driver.state.runs[run_id].claimed
    await rig.tick()
    assert rig.executor.started_ids() == [run_id]
    assert await rig.worker.flush_reports()
    assert rig.run_state(run_id) is RunState.RUNNING


async def test_at_most_once_claim_is_sent_before_the_due_time(rig: Rig) -> None:
    run_id = fire(rig, "once", delivery="at_most_once")
    await rig.tick()
    assert await rig.worker.flush_reports()
    assert rig.driver.state.runs[run_id].claimed
    await rig.tick()
    assert rig.executor.started == []
    await rig.advance(1)
    assert rig.executor.started == [(run_id, 1, DUE)]


async def test_restarted_node_reports_runs_its_last_life_had_started_or_claimed(rig: Rig) -> None:
    running = fire(rig, "a")
    claimed = fire(rig, "once", delivery="at_most_once")
    assert rig.driver.start(running, node=NODE, at=DUE)["ok"]
    claim = [{"run_id": claimed, "attempt": 1}]
    assert rig.driver.cmd(CommandType.CLAIM_RUNS, node=NODE, now_ms=T0, items=claim)["ok"]
    await rig.advance(1)  # this worker is the node's new life
    assert rig.executor.started == []
    assert await rig.worker.flush_reports()
    (finishes,) = rig.proposer.of(CommandType.FINISH_RUNS)
    errors = {i["run_id"]: i["error"] for i in finishes}
    assert "restarted while the run was in flight" in errors[running]
    assert "not started again" in errors[claimed]
    assert rig.run_state(running) is RunState.FAILED and rig.run_state(claimed) is RunState.FAILED


# ---------------------------------------------------------------- reports


async def test_failed_report_is_retried_without_losing_items(rig: Rig) -> None:
    first, second = fire(rig, "a"), fire(rig, "b", due_ms=DUE + 1000)
    await rig.advance(1)
    rig.executor.release(first)
    await rig.settle()
    rig.proposer.fail = NoLeader("no leader")
    assert not await rig.worker.flush_reports()
    await rig.advance(1)  # another run starts and ends while the cluster has no leader
    rig.executor.release(second)
    await rig.settle()
    assert not await rig.worker.flush_reports()
    assert rig.proposer.commands == []
    rig.proposer.fail = None
    assert await rig.worker.flush_reports()
    assert rig.proposer.of(CommandType.START_RUNS) == []  # folded into the finishes
    (finishes,) = rig.proposer.of(CommandType.FINISH_RUNS)
    assert [i["run_id"] for i in finishes] == [first, second]
    assert [i["started_ms"] for i in finishes] == [DUE, DUE + 1000]
    assert rig.run_state(first) is RunState.SUCCEEDED and rig.run_state(second) is RunState.SUCCEEDED


async def test_a_flush_sends_what_was_queued_when_it_began(rig: Rig) -> None:
    """Runs that report while a flush is in flight wait for the next one: a flush that chased the
    queue ran for seconds under load, and the other kind of report waited behind it."""
    first, second = fire(rig, "a"), fire(rig, "b")
    await rig.advance(1)  # both start; nothing finishes yet
    rig.proposer.gate = asyncio.Event()
    flush = asyncio.create_task(rig.worker.flush_reports())
    await rig.settle()
    rig.worker._starts.append({"run_id": second, "attempt": 1, "started_ms": DUE})  # arrives meanwhile
    rig.proposer.gate.set()
    assert await flush
    assert [[i["run_id"] for i in items] for items in rig.proposer.of(CommandType.START_RUNS)] == [
        sorted([first, second])
    ]
    assert [i["run_id"] for i in rig.worker._starts] == [second]  # for the next flush
    rig.executor.release(first, second)


async def test_concurrent_flushes_send_each_item_once(rig: Rig) -> None:
    first, second = fire(rig, "a"), fire(rig, "b")
    rig.executor.auto = True
    await rig.advance(1)
    rig.proposer.gate = asyncio.Event()
    flushes = [asyncio.create_task(rig.worker.flush_reports()) for _ in range(2)]
    await rig.settle()
    rig.proposer.gate.set()
    assert await asyncio.gather(*flushes) == [True, True]
    sent = [i["run_id"] for items in rig.proposer.of(CommandType.FINISH_RUNS) for i in items]
    assert sorted(sent) == sorted([first, second])


# ---------------------------------------------------------------- drain


async def test_drain_stops_taking_runs_waits_for_running_ones_then_reports(rig: Rig) -> None:
    quick, slow = fire(rig, "quick"), fire(rig, "slow")
    later = fire(rig, "later", due_ms=DUE + 2000)
    await rig.advance(1)
    assert sorted(rig.executor.started_ids()) == sorted([quick, slow])
    began = time.monotonic()
    drain = asyncio.create_task(rig.worker.drain(0.3))
    await asyncio.sleep(0.05)
    rig.executor.release(quick)
    await rig.advance(5)  # `later` falls due while draining: not started
    assert not drain.done()
    await drain
    assert time.monotonic() - began >= 0.29
    assert rig.executor.cancelled == [slow]
    assert later not in rig.executor.started_ids()
    assert rig.run_state(quick) is RunState.SUCCEEDED  # reported before drain returned
    assert rig.run_state(slow) is RunState.RUNNING  # killed, left to the delivery policy
    assert rig.run_state(later) is RunState.PENDING
    fire(rig, "new", due_ms=DUE + 9000)
    await rig.advance(10)
    assert len(rig.executor.started) == 2


async def test_hand_back_unclaims_what_this_node_has_not_started_and_then_starts_nothing(rig: Rig) -> None:
    busy = fire(rig, "busy")
    later = fire(rig, "later", due_ms=DUE + 2000)
    once = fire(rig, "once", due_ms=DUE + 2000, delivery="at_most_once")
    unseen = fire(rig, "unseen", due_ms=DUE + 3000)  # committed, not reconciled here yet
    await rig.advance(1)
    assert rig.executor.started_ids() == [busy]
    await rig.tick()  # `once` is being claimed: the claim is queued
    assert await rig.worker.flush_reports()
    assert rig.driver.state.runs[once].claimed
    fire(rig, "claiming", due_ms=DUE + 2000, delivery="at_most_once")
    await rig.tick()  # a claim queued, never sent: dropped by the hand-back
    assert await rig.worker.hand_back(1.0) is True
    [items] = rig.proposer.of(CommandType.UNCLAIM_RUNS)
    assert sorted(i["run_id"] for i in items) == sorted([later, once, unseen, rid("claiming", DUE + 2000)])
    assert rig.driver.state.nodes[NODE].draining
    assert not rig.driver.state.runs[once].claimed
    await rig.advance(5)
    assert rig.executor.started_ids() == [busy]  # nothing handed back starts here
    assert await rig.worker.flush_reports()
    assert not any(
        i["run_id"] == rid("claiming", DUE + 2000) for c in rig.proposer.of(CommandType.CLAIM_RUNS) for i in c
    )
    rig.executor.release(busy)


async def test_hand_back_without_quorum_gives_up_in_time(rig: Rig) -> None:
    fire(rig, "j", due_ms=DUE + 2000)
    rig.proposer.gate = asyncio.Event()  # no commit comes back
    began = time.monotonic()
    assert await rig.worker.hand_back(0.2) is None
    assert 0.15 <= time.monotonic() - began < 1.0
    assert rig.worker.draining


async def test_a_run_past_its_misfire_grace_is_not_started(rig: Rig) -> None:
    stale = fire(rig, "j", misfire={"policy": "skip", "grace": 1})
    rig.clock.advance(3)  # the node comes back 3 s after the run's due time
    await rig.tick()
    await rig.settle()
    assert rig.executor.started == []  # the leader records it missed
    assert rig.run_state(stale) is RunState.PENDING


# ---------------------------------------------------------------- outputs: names and retention


@pytest.mark.parametrize(
    "run_id",
    [
        "j@1800000000000",
        "nightly-report.v2_x@manual-1800000000123",
        "fan@1800000000000~3",
        "../../etc/passwd",
        ".hidden@1",
        "..",
        "a/b",
        "a%2Fb",
        "%41",
        "A",
        "é@1",
        "nul\0byte",
        "x" * 400,
        "x" * 399 + "y",
    ],
)
def test_output_file_names_are_safe(run_id: str) -> None:
    name = output_file_name(run_id, 3)
    assert name.endswith(".3.log")
    assert "/" not in name and "\0" not in name and not name.startswith(".")
    assert len(name.encode()) <= 255
    assert name.isascii()


def test_output_file_names_keep_plain_ids_and_never_collide() -> None:
    assert output_file_name("j@1800000000000~2", 1) == "j@1800000000000~2.1.log"
    assert output_file_name("j@manual-5", 12) == "j@manual-5.12.log"
    ids = ["a/b", "a%2Fb", "a_b", "A", "a", ".a", "%2Ea", "x" * 400, "x" * 399 + "y", "a.1", "a"]
    names = {output_file_name(i, a) for i in set(ids) for a in (1, 11)}
    assert len(names) == 2 * len(set(ids))
    assert output_file_name("a.1", 1) != output_file_name("a", 11)


def _outputs(directory: Path, sizes: list[int]) -> list[str]:
    """Files 0..n-1, oldest first, with the given sizes."""
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    for i, size in enumerate(sizes):
        path = directory / output_file_name(f"job@{i}", 1)
        path.write_bytes(b"x" * size)
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
        names.append(path.name)
    return names


def _retention(directory: Path, keep_files: int, keep_bytes: int) -> OutputRetention:
    retention = OutputRetention(directory, keep_files=keep_files, keep_bytes=keep_bytes)
    retention.scan()
    return retention


def test_prune_keeps_the_newest_files_within_count_and_bytes(tmp_path: Path) -> None:
    names = _outputs(tmp_path, [10] * 6)
    (tmp_path / "notes.txt").write_text("not an output")
    retention = _retention(tmp_path, keep_files=4, keep_bytes=1000)
    result = retention.delete(retention.take_excess())
    assert (result.removed_files, result.kept_files) == (2, 4)
    assert sorted(p.name for p in tmp_path.glob("*.log")) == sorted(names[2:])
    retention = _retention(tmp_path, keep_files=100, keep_bytes=25)
    result = retention.delete(retention.take_excess())
    assert sorted(p.name for p in tmp_path.glob("*.log")) == sorted(names[4:])
    assert (result.kept_bytes, result.removed_bytes) == (20, 20)
    assert (tmp_path / "notes.txt").exists()
    missing = _retention(tmp_path / "missing", keep_files=0, keep_bytes=0)
    assert missing.files == 0 and (tmp_path / "missing").is_dir()  # created once, at start


def test_prune_tracks_files_as_they_close_without_listing_the_directory(tmp_path: Path) -> None:
    names = _outputs(tmp_path, [10] * 2)
    retention = _retention(tmp_path, keep_files=3, keep_bytes=1000)
    (tmp_path / output_file_name("never@told", 1)).write_bytes(b"x")  # not added: never pruned
    retention.add(output_file_name("new@1", 1), 10)
    assert not retention.over()
    retention.add(output_file_name("new@2", 1), 10)
    assert retention.over()
    assert retention.take_excess() == [(names[0], 10)]
    assert (retention.files, retention.total_bytes) == (3, 30)
    result = retention.delete([(names[0], 10), ("gone.1.log", 5)])  # a file gone already is fine
    assert (result.removed_files, result.removed_bytes) == (1, 10)
    assert (tmp_path / output_file_name("never@told", 1)).exists()


async def test_worker_prunes_at_start_and_as_runs_end_but_not_a_running_one(
    tmp_path: Path, rigs: Callable[..., Rig]
) -> None:
    out = tmp_path / "n2" / "outputs"
    old = _outputs(out, [10] * 5)
    rig = rigs(output_dir=out, output_keep_files=2, output_prune_min_interval_s=0)
    rig.executor.tail_bytes = 4  # every run writes a file
    worker_task = asyncio.create_task(rig.worker.run())
    try:
        await _until(lambda: len(list(out.glob("*.log"))) == 2)
        assert sorted(p.name for p in out.glob("*.log")) == sorted(old[3:])
        run_ids = [fire(rig, job) for job in ("a", "b", "c")]
        await rig.advance(1)
        await _until(lambda: len(rig.executor.started) == 3)
        assert len(list(out.glob("*.log"))) == 5  # the running ones are not counted yet
        rig.executor.release(run_ids[0], run_ids[1])  # two runs end: a prune, while `c` still runs
        await _until(lambda: not any((out / name).exists() for name in old))
        await _until(lambda: len(list(out.glob("*.log"))) == 3)
        assert (out / output_file_name(run_ids[2], 1)).exists()  # busy: kept whatever its age
        rig.executor.release(run_ids[2])
        await _until(lambda: len(list(out.glob("*.log"))) == 2)
        assert not (out / output_file_name(run_ids[0], 1)).exists()
    finally:
        worker_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker_task


async def test_small_outputs_write_no_file_unless_the_attempt_did_not_succeed(
    tmp_path: Path, rigs: Callable[..., Rig]
) -> None:
    out = tmp_path / "outputs"
    rig = rigs(output_dir=out)
    out.mkdir()
    small = fire(rig, "small")
    rig.executor.auto = True
    await rig.advance(1)
    assert rig.executor.started_ids() == [small]
    assert list(out.iterdir()) == []  # the tail in the state is the whole output
    rig.executor.outcome = "failed"  # a retry would replace its tail in the state: kept on disk
    failing = fire(rig, "failing", due_ms=DUE + 1000)
    await rig.advance(1)
    assert (out / output_file_name(failing, 1)).read_text() == f"output of {failing}\n"
    assert rig.worker.retention is not None and rig.worker.retention.files == 1


async def test_an_output_past_output_max_bytes_is_cut_and_the_run_says_so(
    tmp_path: Path, rigs: Callable[..., Rig]
) -> None:
    out = tmp_path / "outputs"
    rig = rigs(output_dir=out)
    rig.executor.auto, rig.executor.tail_bytes, rig.executor.max_bytes = True, 8, 100
    rig.executor.more_output = b"x" * 1000 + b"the end"
    cut = fire(rig, "cut")
    await rig.advance(1)
    assert await rig.worker.flush_reports()
    assert rig.run_state(cut) is RunState.SUCCEEDED
    first = f"output of {cut}\n".encode()
    assert (out / output_file_name(cut, 1)).read_bytes() == (first + b"x" * 1000)[:100] + truncation_marker(
        100
    )
    (item,) = rig.proposer.of(CommandType.FINISH_RUNS)[0]
    assert item["output_truncated"] is True
    run = rig.driver.state.runs[cut]
    assert run.output_truncated and run_view(run)["output_truncated"] is True
    assert run.to_dict()["output_truncated"] is True


async def test_a_whole_output_reports_no_truncation_and_keeps_the_report_bytes(
    tmp_path: Path, rigs: Callable[..., Rig]
) -> None:
    rig = rigs(output_dir=tmp_path / "outputs")
    rig.executor.auto, rig.executor.tail_bytes, rig.executor.max_bytes = True, 8, 100
    whole = fire(rig, "whole")
    await rig.advance(1)
    assert await rig.worker.flush_reports()
    assert rig.run_state(whole) is RunState.SUCCEEDED
    (item,) = rig.proposer.of(CommandType.FINISH_RUNS)[0]
    assert "output_truncated" not in item  # the FINISH body of a whole output is as it always was
    run = rig.driver.state.runs[whole]
    assert not run.output_truncated and run_view(run)["output_truncated"] is False
    assert "output_truncated" not in run.to_dict()  # snapshots keep their bytes


async def _until(check: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- no orphans: ledger and reaper


def _pid_dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (some containers' PID 1)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(b")") + 2 :].split()[0] in (b"Z", b"X")


async def _wait_dead(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not _pid_dead(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def _wait_dead_sync(pid: int, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while not _pid_dead(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _task_env(run_id: str, attempt: int = 1, node: str = NODE) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "RAFTSCHED_RUN_ID": run_id,
        "RAFTSCHED_ATTEMPT": str(attempt),
        "RAFTSCHED_NODE": node,
    }


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts; killed and reaped at teardown whatever happens."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)


def _sleeper(procs: list[subprocess.Popen[bytes]], env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(["sleep", "60"], env=env, start_new_session=True)
    procs.append(proc)
    return proc


needs_proc = pytest.mark.skipif(boot_id() is None, reason="needs Linux /proc")


@needs_proc
def test_new_life_kills_groups_the_last_one_recorded(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    out = tmp_path / "n2" / "outputs"
    ours = _sleeper(spawned, _task_env("j@1"))
    stranger = _sleeper(spawned, {"PATH": os.environ.get("PATH", os.defpath)})
    last_life = make_rig(output_dir=out).worker
    assert last_life.groups is not None
    last_life.groups.add(ours.pid, "j@1", 1)
    last_life.groups.flush()
    ledger = orjson.loads((tmp_path / "n2" / "running-pgids.json").read_bytes())
    assert [g["pgid"] for g in ledger["groups"]] == [ours.pid]
    # A recorded group whose id now belongs to someone else (other start time, no identity): spared.
    ledger["groups"].append({"pgid": stranger.pid, "start": 1, "run_id": "j@2", "attempt": 1})
    (tmp_path / "n2" / "running-pgids.json").write_bytes(orjson.dumps(ledger))

    new_life = make_rig(output_dir=out).worker
    assert new_life.reap_orphans() == [ours.pid]
    assert ours.wait(5) == -signal.SIGKILL
    assert stranger.poll() is None
    ledger = orjson.loads((tmp_path / "n2" / "running-pgids.json").read_bytes())
    assert ledger["groups"] == []


@needs_proc
def test_reaper_finds_a_group_whose_leader_is_gone_by_identity(tmp_path: Path) -> None:
    """The leader died (its death signal); a grandchild it started lives on in the group."""
    pidfile = tmp_path / "grandchild"
    leader = subprocess.Popen(
        ["sh", "-c", f"sleep 60 & echo $! > {pidfile}"],
        env=_task_env("j@1", attempt=2),
        start_new_session=True,
    )
    started = start_ticks(leader.pid)
    leader.wait(5)
    grandchild = int(pidfile.read_text())
    try:
        assert not _pid_dead(grandchild)
        ledger = GroupLedger(tmp_path / "running-pgids.json", NODE)
        recorded = {"pgid": leader.pid, "start": started, "run_id": "j@1", "attempt": 2}
        raw = {"v": 1, "node": NODE, "boot_id": boot_id(), "groups": [recorded]}
        (tmp_path / "running-pgids.json").write_bytes(orjson.dumps(raw))
        assert GroupLedger(tmp_path / "running-pgids.json", "n3").reap() == []  # another node's identity
        (tmp_path / "running-pgids.json").write_bytes(orjson.dumps(raw))
        assert ledger.reap() == [leader.pid]
        assert _wait_dead_sync(grandchild)
    finally:
        if not _pid_dead(grandchild):
            os.kill(grandchild, signal.SIGKILL)


@needs_proc
def test_a_ledger_from_another_boot_kills_nothing(
    tmp_path: Path, spawned: list[subprocess.Popen[bytes]]
) -> None:
    proc = _sleeper(spawned, _task_env("j@1"))
    raw = {
        "v": 1,
        "node": NODE,
        "boot_id": "another-boot",
        "groups": [{"pgid": proc.pid, "start": start_ticks(proc.pid), "run_id": "j@1", "attempt": 1}],
    }
    (tmp_path / "running-pgids.json").write_bytes(orjson.dumps(raw))
    assert GroupLedger(tmp_path / "running-pgids.json", NODE).reap() == []
    assert proc.poll() is None


@needs_proc
async def test_worker_records_the_groups_of_running_tasks(tmp_path: Path) -> None:
    out = tmp_path / "n2" / "outputs"
    real = executor_for(TaskType.SHELL, ExecPolicy(kill_grace_s=0.5))
    rig = make_rig(output_dir=out, executor=real)
    ledger_file = tmp_path / "n2" / "running-pgids.json"
    run_id = fire(rig, "sleepy", task={"type": "shell", "command": ["sh", "-c", "echo started; sleep 30"]})
    worker_task = asyncio.create_task(rig.worker.run())
    try:
        rig.clock.advance(1)

        def recorded() -> list[dict[str, Any]]:
            if not ledger_file.exists():
                return []
            groups: list[dict[str, Any]] = orjson.loads(ledger_file.read_bytes())["groups"]
            return groups

        await _until(lambda: len(recorded()) == 1)
        (group,) = recorded()
        assert (group["run_id"], group["attempt"]) == (run_id, 1)
        assert start_ticks(group["pgid"]) == group["start"]
        output = out / output_file_name(run_id, 1)
        await _until(lambda: output_so_far(output) == b"started\n")  # small: in memory, no file yet
        assert rig.driver.cmd(CommandType.CANCEL_RUN, run_id=run_id, now_ms=DUE, actor="t")["ok"]
        rig.worker.wake.set()
        assert await _wait_dead(group["pgid"])
        await _until(lambda: recorded() == [])
        await _until(lambda: output.read_text() == "started\n")  # a cancelled attempt's output is kept
    finally:
        worker_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker_task


# A stand-in node: runs one task through a real executor, prints the task's pid, then waits to die.
_NODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from raftsched.executors import ExecPolicy, RunContext, executor_for
    from raftsched.model import TaskSpec, TaskType

    kind, pidfile = sys.argv[1], sys.argv[2]
    ctx = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=0, node_id="n2")
    if kind == "shell":
        task = TaskSpec(type=TaskType.SHELL, command=["sh", "-c", f"echo $$ > {pidfile}; exec sleep 60"])
    else:
        task = TaskSpec(type=TaskType.PYTHON, callable="pytasks_sample:sleep",
                        kwargs={"seconds": 60, "pidfile": pidfile})
    policy = ExecPolicy(python_allow=("pytasks_sample",))
    asyncio.run(executor_for(kind, policy).run(task, ctx, timeout_s=120, output_path=None))
    """
)


@needs_proc
@pytest.mark.parametrize("kind", ["shell", "python"])
def test_task_dies_with_its_node_killed_by_sigkill(kind: str, tmp_path: Path) -> None:
    pidfile = tmp_path / "task.pid"
    node = subprocess.Popen(
        [sys.executable, "-c", _NODE_SCRIPT, kind, str(pidfile)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])},
    )
    task_pid = None
    try:
        deadline = time.monotonic() + 15
        while task_pid is None:
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            task_pid = int(text) if text.isdigit() else None
            assert time.monotonic() < deadline and node.poll() is None, "the task never started"
            time.sleep(0.02)
        assert not _pid_dead(task_pid)
        node.kill()
        node.wait(5)
        assert _wait_dead_sync(task_pid), "the task outlived its node"
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)
        if task_pid is not None and not _pid_dead(task_pid):
            os.kill(task_pid, signal.SIGKILL)


_PRINT_PDEATHSIG = (
    "import ctypes; v = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(v), 0, 0, 0); print(v.value)"
)


@needs_proc
async def test_shell_tasks_get_the_parent_death_signal(tmp_path: Path) -> None:
    shell = executor_for(TaskType.SHELL, ExecPolicy())
    ctx = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=0, node_id=NODE)
    task = TaskSpec(type=TaskType.SHELL, command=[sys.executable, "-c", _PRINT_PDEATHSIG])
    result = await shell.run(task, ctx, timeout_s=10, output_path=None)
    assert (result.outcome, result.output_tail) == ("succeeded", f"{int(signal.SIGKILL)}\n"), result
    missing = TaskSpec(type=TaskType.SHELL, command=[str(tmp_path / "nope")])
    result = await shell.run(missing, ctx, timeout_s=10, output_path=None)
    assert result.outcome == "failed" and result.error is not None
    assert result.error.startswith("cannot start"), result.error
    not_executable = tmp_path / "data.txt"
    not_executable.write_text("")
    result = await shell.run(
        TaskSpec(type=TaskType.SHELL, command=["./data.txt"], cwd=str(tmp_path)),
        ctx,
        timeout_s=10,
        output_path=None,
    )
    assert result.error is not None and result.error.startswith("cannot start"), result.error


# ---------------------------------------------------------------- the attempt journal across restarts


def restarted(rig: Rig, tmp_path: Path) -> Rig:
    """The same node's next life: the same state and disk, a new worker and executor."""
    fake = FakeExecutor(rig.clock)
    worker = Worker(
        WorkerSettings(node_id=NODE, output_dir=tmp_path / "outputs"),
        rig.driver.state,
        rig.proposer,
        rig.clock,
        lambda _: fake,
        asyncio.Event(),
    )
    rig.driver.state.listeners[0] = worker.on_applied  # the last life's worker is gone
    assert worker.attempts is not None
    worker.attempts.load()
    return Rig(rig.driver, rig.clock, rig.proposer, fake, worker)


async def test_runs_starting_together_share_one_journal_write_and_finishes_go_with_the_report(
    rigs: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rigs(output_dir=tmp_path / "outputs")
    journal = rig.worker.attempts
    assert journal is not None
    writes: list[tuple[int, int]] = []  # (lines written, tasks started before the write)
    flush = journal.flush

    def counted() -> int:
        lines = flush()
        if lines:
            writes.append((lines, len(rig.executor.started)))
        return lines

    journal.flush = counted  # type: ignore[method-assign]
    run_ids = [fire(rig, job) for job in ("a", "b", "c", "d")]
    await rig.advance(1)
    assert sorted(rig.executor.started_ids()) == sorted(run_ids)
    assert writes == [(4, 0)]  # one write, before any task started
    rig.executor.release(*run_ids)
    await rig.settle()
    assert writes == [(4, 0)]  # finish lines wait for the report flush
    seen: list[bytes] = []
    propose = rig.worker.propose

    async def proposing(data: bytes) -> dict[str, Any]:
        seen.append(journal.path.read_bytes())
        return await propose(data)

    rig.worker.propose = proposing
    assert await rig.worker.flush_reports()
    assert writes == [(4, 0), (4, 4)]
    assert seen[0].count(b'"e":"finish"') == 4  # on disk before the first report is proposed


async def test_an_attempt_run_before_a_restart_is_reported_not_run_again(
    rigs: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rigs(output_dir=tmp_path / "outputs")
    run_id = fire(rig, "a")
    rig.executor.auto = True
    rig.proposer.fail = NoLeader("the leader is away")
    await rig.advance(1)
    assert rig.executor.started_ids() == [run_id]
    assert not await rig.worker.flush_reports()  # ran, but nothing reached the log
    await rig.worker._stop_runs()
    assert rig.run_state(run_id) is RunState.PENDING

    rig.proposer.fail = None
    again = restarted(rig, tmp_path)
    await again.tick()
    await again.advance(5)
    assert again.executor.started == []  # never the same (run, attempt) twice
    assert await again.worker.flush_reports()
    assert rig.run_state(run_id) is RunState.SUCCEEDED
    assert rig.driver.state.runs[run_id].started_ms == DUE  # the first life's start, reported


async def test_an_attempt_cut_short_by_a_restart_is_failed_and_retried(
    rigs: Callable[..., Rig], tmp_path: Path
) -> None:
    rig = rigs(output_dir=tmp_path / "outputs")
    run_id = fire(rig, "a", retries={"max": 1, "initial_delay": 1, "jitter": 0})
    rig.proposer.fail = NoLeader("the leader is away")
    await rig.advance(1)
    assert rig.executor.started_ids() == [run_id]
    await rig.worker._stop_runs()  # the node dies mid-run: a start recorded, no finish

    rig.proposer.fail = None
    again = restarted(rig, tmp_path)
    await again.tick()
    assert await again.worker.flush_reports()
    run = rig.driver.state.runs[run_id]
    assert run.attempt == 2 and run.state is RunState.PENDING  # the outcome is unknown: a new attempt
    assert again.executor.started == []


async def test_no_run_starts_before_the_node_has_caught_up(tmp_path: Path) -> None:
    rig = make_rig()
    caught_up = False
    rig.worker.ready = lambda: caught_up
    fire(rig, "a")
    rig.clock.advance(2)
    loop = asyncio.create_task(rig.worker._reconcile_loop())
    await asyncio.sleep(0.2)
    assert rig.executor.started == []
    caught_up = True
    await asyncio.sleep(0.2)
    assert rig.executor.started_ids() == [rid("a")]
    loop.cancel()
    await rig.worker._stop_runs()


async def test_a_late_start_reads_through_the_log_first(rig: Rig) -> None:
    cancelled, kept = fire(rig, "a"), fire(rig, "b")

    async def barrier() -> object:
        # What a paused node learns when it catches up: one of its runs was cancelled meanwhile.
        return rig.driver.cmd(CommandType.CANCEL_RUN, run_id=cancelled, now_ms=DUE, actor="t")

    rig.worker.barrier = barrier
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(2)  # the node wakes up 1 s after the due time
    await rig.settle()
    assert rig.executor.started_ids() == [kept]


async def test_an_on_time_start_needs_no_barrier(rig: Rig) -> None:
    calls = 0

    async def barrier() -> object:
        nonlocal calls
        calls += 1
        return None

    rig.worker.barrier = barrier
    run_id = fire(rig, "a")
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(1)
    assert rig.executor.started_ids() == [run_id] and calls == 0


async def test_late_starts_share_one_barrier(rig: Rig) -> None:
    calls = 0

    async def barrier() -> object:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)  # a commit takes a while: the other late starts join it
        return None

    rig.worker.barrier = barrier
    run_ids = [fire(rig, job) for job in ("a", "b", "c", "d", "e")]
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(3)  # every run is late at once
    await asyncio.sleep(0.1)
    assert sorted(rig.executor.started_ids()) == sorted(run_ids)
    assert calls == 1


async def test_after_a_stall_on_time_starts_read_through_the_log(rig: Rig) -> None:
    calls = 0

    async def barrier() -> object:
        nonlocal calls
        calls += 1
        return None

    rig.worker.barrier = barrier
    rig.worker._suspect_until = rig.clock.monotonic() + 10  # as after a gap in the loop
    run_id = fire(rig, "a")
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(1)  # on time, but suspect
    await rig.settle()
    assert rig.executor.started_ids() == [run_id] and calls == 1


async def test_a_gap_without_cpu_is_a_stall_a_busy_gap_is_not(rig: Rig) -> None:
    """SIGSTOP or starvation: time passed and this process got no CPU, so its copy of the log may
    be stale. A spell of computing (a big plan, a long apply) is no reason to distrust it."""
    cpu = 0.0
    rig.worker.cpu_time = lambda: cpu
    loop = asyncio.create_task(rig.worker._reconcile_loop())
    try:
        await asyncio.sleep(0.12)
        rig.clock.advance(1.0)
        cpu += 0.9  # busy, not stopped
        await asyncio.sleep(0.12)
        assert rig.worker._suspect_until == 0.0
        rig.clock.advance(1.0)  # stopped: no CPU meanwhile
        await asyncio.sleep(0.12)
        assert rig.worker._suspect_until > rig.clock.monotonic()
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_a_node_behind_its_log_applies_it_before_starting(rig: Rig) -> None:
    cancelled = fire(rig, "a")
    position = [10, 12]  # applied, known committed
    rig.worker.log_position = lambda: (position[0], position[1])
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(1)
    await asyncio.sleep(0.02)
    assert rig.executor.started == []  # waits for the committed entries it has not applied
    rig.driver.cmd(CommandType.CANCEL_RUN, run_id=cancelled, now_ms=DUE, actor="t")  # one of them
    position[0] = 12
    await asyncio.sleep(0.05)
    assert rig.executor.started == []


async def test_a_start_waits_for_what_was_committed_then_not_for_what_commits_after(rig: Rig) -> None:
    """Under a stream of writes the node always knows of a committed entry it has not applied yet:
    waiting for none left could make a start wait its whole 2 s and then go through the log."""
    fire(rig, "a")
    position = [10, 12]
    rig.worker.log_position = lambda: (position[0], position[1])
    rig.executor.auto = True
    await rig.tick()
    await rig.advance(1)
    await asyncio.sleep(0.02)
    assert rig.executor.started == []
    position[:] = [12, 15]  # what was committed at the check is applied; more committed since
    await asyncio.sleep(0.05)
    assert len(rig.executor.started) == 1
