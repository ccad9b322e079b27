"""Scenario tests of the leader's scheduler: a FakeClock, an in-memory proposer, a fake Leadership.

The proposer applies the proposed bytes to a `State` at once (a Raft log that always commits) and
records each command with its result, so a test can count proposals and read the committed facts.
The scheduler is driven by `await scheduler.tick()` after `clock.advance(...)`; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from raftsched import scheduler, triggers
from raftsched.clock import FakeClock
from raftsched.commands import VERSION as COMMAND_VERSION
from raftsched.commands import Command, CommandType, decode, encode
from raftsched.model import JobSpec, RunState, iso_ms
from raftsched.records import NodeRecord, Run
from raftsched.scheduler import Scheduler, SchedulerSettings
from raftsched.state import State

from statekit import T0, job_spec

S = 1000  # milliseconds per second
BEGIN, FIRE, SET_NODE, REASSIGN = (
    CommandType.BEGIN_TERM,
    CommandType.FIRE_RUNS,
    CommandType.SET_NODE,
    CommandType.REASSIGN_RUNS,
)


class FakeLeadership:
    """What Raft tells the scheduler, set by hand."""

    def __init__(
        self, *, leader: bool = True, term: int = 1, connected: dict[str, bool] | None = None
    ) -> None:
        self.leader = leader
        self.current_term = term
        self.connected: dict[str, bool] = dict(connected or {})
        self.membership: list[tuple[str, str]] = []
        self.transfers = 0

    def is_leader(self) -> bool:
        return self.leader

    def term(self) -> int:
        return self.current_term

    def connected_partners(self) -> dict[str, bool]:
        return dict(self.connected)

    async def change_membership(self, kind: str, addr: str) -> None:
        self.membership.append((kind, addr))

    async def transfer_leadership(self) -> bool:
        self.transfers += 1
        return True

    async def wait_replicated(self, addr: str) -> bool:
        return True


class Proposer:
    """A log that commits at once: applies the bytes to the shared state, records command and result.

    `hold` names command types whose commit waits until `release()` (to observe what the scheduler
    does while a proposal is in flight).
    """

    def __init__(self, state: State, hold: frozenset[CommandType] = frozenset()) -> None:
        self.state = state
        self.hold = hold
        self.gate = asyncio.Event()
        self.proposed: list[Command] = []
        self.results: list[dict[str, Any]] = []

    async def __call__(self, data: bytes) -> dict[str, Any]:
        cmd = decode(data)
        self.proposed.append(cmd)
        if cmd.type in self.hold:
            await self.gate.wait()
        result = self.state.apply(data)
        self.results.append(result)
        return result

    def release(self) -> None:
        self.gate.set()

    def types(self) -> list[CommandType]:
        return [c.type for c in self.proposed]

    def of(self, cmd_type: CommandType) -> list[Command]:
        return [c for c in self.proposed if c.type is cmd_type]

    def clear(self) -> None:
        self.proposed.clear()
        self.results.clear()


def raft(node: str) -> str:
    return f"{node}:1"


class Rig:
    """One replicated state, a fake clock, and the schedulers that act on them."""

    def __init__(
        self,
        nodes: tuple[str, ...] = ("n1", "n2", "n3"),
        *,
        tags: dict[str, dict[str, str]] | None = None,
        lookahead_s: float = 3.0,
        node_timeout_s: float = 5.0,
        commands: int = 1,
    ) -> None:
        """`commands`: the command version the nodes publish (above 1, the leader raises the
        cluster's version to it in its first ticks)."""
        self.state = State()
        self.clock = FakeClock(T0)
        self.lookahead_s, self.node_timeout_s = lookahead_s, node_timeout_s
        self.refusing: set[str] = set()  # nodes whose Raft and HTTP ports refuse connections
        for n in nodes:
            self.cmd(
                CommandType.REGISTER_NODE,
                node=n,
                http=f"http://{n}",
                raft=raft(n),
                tags=(tags or {}).get(n, {}),
                capacity=8,
                now_ms=T0,
                **({"commands": commands} if commands > 1 else {}),
            )
        self.leadership = FakeLeadership(term=1, connected={raft(n): True for n in nodes[1:]})
        self.scheduler, self.proposer = self.scheduler_for(nodes[0], self.leadership)

    def scheduler_for(
        self, node_id: str, leadership: FakeLeadership, hold: frozenset[CommandType] = frozenset()
    ) -> tuple[Scheduler, Proposer]:
        proposer = Proposer(self.state, hold)
        settings = SchedulerSettings(
            node_id=node_id, lookahead_s=self.lookahead_s, node_timeout_s=self.node_timeout_s
        )
        scheduler = Scheduler(
            settings, self.state, leadership, proposer, self.clock, asyncio.Event(), probe=self.probe
        )
        return scheduler, proposer

    async def probe(self, node: NodeRecord) -> bool:
        return node.id in self.refusing

    def cmd(self, cmd_type: CommandType, **body: Any) -> dict[str, Any]:
        return self.state.apply(encode(cmd_type, body))

    def add(self, job_id: str = "j", **over: Any) -> None:
        """Create a job as the API does: now, and its first slot computed outside the state."""
        spec = job_spec(job_id, **over)
        now = self.clock.now_ms()
        first = triggers.next_fire_ms(JobSpec.from_dict(spec).schedule, now, created_ms=now)
        result = self.cmd(CommandType.PUT_JOB, spec=spec, now_ms=now, mode="create", next_nominal_ms=first)
        assert result["ok"], result

    async def tick(self, seconds: float = 0.0) -> None:
        self.clock.advance(seconds)
        await self.scheduler.tick()

    def runs(self, job_id: str = "j") -> dict[int, Run]:
        """The job's run records (fired runs and skipped/missed records) by slot."""
        return {self.state.runs[r].nominal_ms: self.state.runs[r] for r in self.state.job_runs[job_id]}

    def fired_slots(self, job_id: str = "j") -> list[int]:
        return sorted(n for n, r in self.runs(job_id).items() if r.attempt >= 1)

    def records(self, job_id: str, state: RunState) -> list[Run]:
        return sorted((r for r in self.runs(job_id).values() if r.state is state), key=lambda r: r.nominal_ms)

    def start(self, run_id: str) -> None:
        run = self.state.runs[run_id]
        now = self.clock.now_ms()
        result = self.cmd(
            CommandType.START_RUNS,
            node=run.node,
            now_ms=now,
            items=[{"run_id": run_id, "attempt": run.attempt, "started_ms": now}],
        )
        assert result["accepted"] == [run_id]

    def finish(self, run_id: str) -> None:
        run = self.state.runs[run_id]
        now = self.clock.now_ms()
        result = self.cmd(
            CommandType.FINISH_RUNS,
            node=run.node,
            now_ms=now,
            items=[{"run_id": run_id, "attempt": run.attempt, "outcome": "succeeded", "finished_ms": now}],
        )
        assert result["accepted"] == [run_id]


def slots(first_s: int, last_s: int) -> list[int]:
    """The every-1s slots T0+first_s .. T0+last_s (seconds, inclusive) in epoch ms."""
    return [T0 + k * S for k in range(first_s, last_s + 1)]


def rid(nominal_ms: int, job_id: str = "j") -> str:
    return f"{job_id}@{nominal_ms}"


def decided(*proposers: Proposer) -> list[tuple[str, int]]:
    """Every (job, slot) that the proposers asked the state to fire or record, in order."""
    return [
        (item["job_id"], item["nominal_ms"])
        for p in proposers
        for c in p.of(FIRE)
        for item in (*c.body["skips"], *c.body["fires"])
    ]


# ---------------------------------------------------------------- leadership and terms


async def test_begin_term_is_proposed_first_and_no_fire_before_it_commits() -> None:
    rig = Rig()
    rig.add("j", overlap="allow")
    sched, proposer = rig.scheduler_for("n1", rig.leadership, hold=frozenset({BEGIN}))
    tick = asyncio.create_task(sched.tick())
    for _ in range(5):
        await asyncio.sleep(0)
    assert proposer.types() == [BEGIN]  # in flight, not committed
    assert rig.state.term == 0 and not rig.state.runs
    begin = proposer.proposed[0].body
    assert (begin["term"], begin["leader"], begin["now_ms"]) == (1, "n1", T0)
    proposer.release()
    await tick
    assert proposer.types() == [BEGIN, FIRE]
    assert (rig.state.term, rig.state.leader) == (1, "n1")
    assert proposer.of(FIRE)[0].body["term"] == 1
    assert rig.fired_slots() == slots(1, 3)


async def test_refused_begin_term_fires_nothing() -> None:
    rig = Rig()
    rig.add("j")
    assert rig.cmd(BEGIN, term=5, leader="n2", now_ms=T0)["ok"]  # someone else leads a newer term
    await rig.tick()  # this node thinks term 1
    await rig.tick(1)
    assert rig.proposer.types() == [BEGIN, BEGIN]
    assert not any(r["ok"] for r in rig.proposer.results)
    assert not rig.state.runs and rig.state.term == 5


async def test_not_leader_proposes_nothing() -> None:
    rig = Rig()
    rig.add("j", overlap="allow")
    rig.leadership.leader = False
    for _ in range(5):
        await rig.tick(1)
    assert rig.proposer.proposed == []
    assert rig.state.term == 0 and not rig.state.runs
    rig.leadership.leader = True  # elected later: begins, then fires
    await rig.tick()
    assert rig.proposer.types() == [BEGIN, FIRE]


# ---------------------------------------------------------------- lookahead and run ids


async def test_fires_are_committed_up_to_lookahead_ahead_and_no_further() -> None:
    rig = Rig(lookahead_s=3)
    rig.add("j", overlap="allow")
    await rig.tick()
    assert rig.proposer.types() == [BEGIN, FIRE]
    runs = rig.runs()
    assert sorted(runs) == slots(1, 3)  # T+1, T+2, T+3 (= now + lookahead)
    for nominal, run in runs.items():
        assert run.run_id == f"j@{nominal}"
        assert run.state is RunState.PENDING and run.attempt == 1
        assert run.due_ms == nominal  # jitter 0
        assert run.node in {"n1", "n2", "n3"}
    fire = rig.proposer.of(FIRE)[0].body
    assert fire["now_ms"] == T0 and fire["skips"] == []
    assert [f["next_nominal_ms"] for f in fire["fires"]] == slots(2, 4)
    job = rig.state.jobs["j"]
    assert (job.last_slot_ms, job.next_nominal_ms, job.fired) == (T0 + 3 * S, T0 + 4 * S, 3)

    rig.proposer.clear()
    await rig.tick()  # same instant: nothing new
    await rig.tick(0.5)  # T+3.5: T+4 is beyond the horizon
    assert rig.proposer.proposed == []
    await rig.tick(0.5)  # T+1: T+4 enters the horizon
    assert rig.proposer.types() == [FIRE]
    assert rig.proposer.results[0]["fired"] == [rid(T0 + 4 * S)]
    await rig.tick(2)  # T+3: T+5, T+6
    assert rig.proposer.results[1]["fired"] == [rid(T0 + 5 * S), rid(T0 + 6 * S)]
    assert rig.fired_slots() == slots(1, 6)
    assert all(r["rejected"] == 0 for r in rig.proposer.results)


async def test_fires_go_out_in_chunks_and_an_urgent_slot_at_once() -> None:
    """Each commit wakes the leader; planning on every wake-up committed a sliver of the lookahead
    per command. Now at most one fire per chunk (100 ms at lookahead 3 s), each slot still
    committed at least lookahead - chunk ahead; a slot due sooner than that goes out at once."""
    rig = Rig(lookahead_s=3)
    for i in range(50):
        rig.add(f"j{i}", overlap="allow", schedule={"every": 1, "start_at": iso_ms(T0 + 20 * i)})
    await rig.tick()
    rig.proposer.clear()
    for _ in range(200):  # 2 s of wake-ups every 10 ms
        await rig.tick(0.01)
        for command in rig.proposer.of(FIRE):
            for fire in command.body["fires"]:
                assert fire["nominal_ms"] - command.body["now_ms"] >= 3000 - scheduler.fire_chunk_ms(3000)
    fires = rig.proposer.of(FIRE)
    assert 19 <= len(fires) <= 21  # one per 100 ms, not one per wake-up
    assert sum(len(c.body["fires"]) for c in fires) == 100  # every slot, once: 50 jobs x 2 s
    rig.proposer.clear()
    await rig.tick(0.01)
    assert rig.proposer.of(FIRE) == []  # within the chunk: nothing is due close enough
    rig.add("now", overlap="allow", schedule={"at": iso_ms(rig.clock.now_ms() + 500)})
    await rig.tick(0.01)
    assert "now" in [f["job_id"] for c in rig.proposer.of(FIRE) for f in c.body["fires"]]


async def test_jitter_delays_due_time_deterministically() -> None:
    rig = Rig()
    rig.add("j", overlap="allow", jitter=0.5)
    await rig.tick()
    for nominal, run in rig.runs().items():
        assert run.run_id == rid(nominal)
        assert run.due_ms == nominal + triggers.jitter_ms("j", nominal, 0.5)
        assert nominal <= run.due_ms <= nominal + 500


async def test_jobs_due_together_go_in_one_fire_command() -> None:
    rig = Rig()
    for k in range(5):
        rig.add(f"j{k}")  # forbid: one slot ahead each
    await rig.tick()
    assert rig.proposer.types() == [BEGIN, FIRE]
    fires = rig.proposer.of(FIRE)[0].body["fires"]
    assert sorted(f["job_id"] for f in fires) == [f"j{k}" for k in range(5)]
    assert sorted(rig.proposer.results[1]["fired"]) == [rid(T0 + S, f"j{k}") for k in range(5)]
    rig.proposer.clear()
    await rig.tick(1)  # T+1: T+2 waits for its due time
    assert rig.proposer.proposed == []
    await rig.tick(1)  # T+2: all five decided in one command
    assert rig.proposer.types() == [FIRE]
    assert len(rig.proposer.of(FIRE)[0].body["fires"]) == 5


# ---------------------------------------------------------------- misfire


async def _gap(rig: Rig, seconds: float) -> dict[str, Any]:
    """Fire the first lookahead, then jump the clock; return the body of the one catch-up command."""
    await rig.tick()
    rig.proposer.clear()
    await rig.tick(seconds)
    # The first lookahead's runs never started: past their grace they are recorded missed first.
    assert [t for t in rig.proposer.types() if t is not CommandType.EXPIRE_RUNS] == [FIRE]
    return rig.proposer.of(FIRE)[0].body


def _missed_ranges(rig: Rig, job_id: str = "j") -> list[Run]:
    """The job's missed slot records (the planner's), not its fired runs recorded missed later
    because they never started within their grace (`stale.expiry`)."""
    return [r for r in rig.records(job_id, RunState.MISSED) if r.attempt == 0]


async def test_misfire_fire_once_records_one_missed_range_and_one_catch_up_run() -> None:
    rig = Rig(commands=COMMAND_VERSION)  # expiring stale runs is a version 2 command
    rig.add("j", overlap="allow", misfire={"policy": "fire_once", "grace": 5})
    body = await _gap(rig, 25)  # now T+25: slots < T+20 are missed
    assert len(body["skips"]) == 1
    [missed] = _missed_ranges(rig)
    assert missed.run_id == rid(T0 + 4 * S)
    assert (missed.until_ms, missed.count) == (T0 + 18 * S, 15)  # T+4..T+19 missed, minus the catch-up
    assert "fire_once" in (missed.reason or "")
    assert rig.fired_slots() == slots(1, 3) + slots(19, 28)  # catch-up T+19, then T+20..T+28
    catch_up = rig.runs()[T0 + 19 * S]
    assert catch_up.state is RunState.PENDING and catch_up.due_ms == T0 + 19 * S
    assert rig.state.stats["j"]["missed"] == 15 + 3  # and T+1..T+3, fired but never started
    assert rig.state.jobs["j"].last_slot_ms == T0 + 28 * S


async def test_misfire_fire_all_fires_max_catchup_and_records_the_rest() -> None:
    rig = Rig()
    rig.add("j", overlap="allow", misfire={"policy": "fire_all", "grace": 5, "max_catchup": 5})
    await _gap(rig, 25)
    [missed] = _missed_ranges(rig)
    assert (missed.nominal_ms, missed.until_ms, missed.count) == (T0 + 4 * S, T0 + 14 * S, 11)
    assert "max_catchup=5" in (missed.reason or "")
    assert rig.fired_slots() == slots(1, 3) + slots(15, 28)  # 5 late (T+15..T+19) + in-grace + ahead


async def test_misfire_skip_only_records_missed() -> None:
    rig = Rig()
    rig.add("j", overlap="allow", misfire={"policy": "skip", "grace": 5})
    await _gap(rig, 25)
    [missed] = _missed_ranges(rig)
    assert (missed.nominal_ms, missed.until_ms, missed.count) == (T0 + 4 * S, T0 + 19 * S, 16)
    assert rig.fired_slots() == slots(1, 3) + slots(20, 28)


async def test_slots_within_grace_are_fired_late_not_missed() -> None:
    rig = Rig()
    rig.add("j", overlap="allow", misfire={"policy": "skip", "grace": 30})
    body = await _gap(rig, 25)
    assert body["skips"] == []
    assert not rig.records("j", RunState.MISSED)
    assert rig.fired_slots() == slots(1, 28)
    late = rig.runs()[T0 + 4 * S]
    assert late.due_ms == T0 + 4 * S and late.created_ms == T0 + 25 * S


@pytest.mark.parametrize(("policy", "catch_ups"), [("fire_once", 1), ("fire_all", 5)])
async def test_misfire_policy_holds_over_a_gap_longer_than_the_slot_limit(
    policy: str, catch_ups: int
) -> None:
    rig = Rig()
    rig.add("j", overlap="allow", misfire={"policy": policy, "grace": 5, "max_catchup": 5})
    await rig.tick()
    rig.clock.advance(300)  # now T+300: T+4..T+294 missed (291 slots)
    for _ in range(8):  # the real loop ticks every 50 ms
        await rig.scheduler.tick()
    late = [s for s in rig.fired_slots() if T0 + 3 * S < s < T0 + 295 * S]
    assert len(late) == catch_ups  # once, however long the gap
    assert sum(r.count for r in _missed_ranges(rig)) == 291 - catch_ups


async def test_a_stale_pending_run_no_longer_blocks_a_forbid_job() -> None:
    """A restart found a run pending past its grace on a node that never started it: recorded
    missed (the policy fires a newer slot in its place), and the job's slots run again instead of
    every one being `skipped` as overlapping an 'active' run."""
    rig = Rig(commands=COMMAND_VERSION)
    rig.add("j", misfire={"policy": "fire_once", "grace": 2})  # forbid, every 1 s
    await rig.tick()
    stale = rig.state.runs[rid(T0 + S)]
    assert stale.state is RunState.PENDING
    for _ in range(20):  # its node never starts it; the leader ticks every 50 ms for 4 s
        await rig.tick(0.2)
    run = rig.state.runs[rid(T0 + S)]
    assert run.state is RunState.MISSED and "fire_once" in (run.reason or "")
    assert rig.proposer.of(CommandType.EXPIRE_RUNS)[0].body["items"][0]["attempt"] == 1
    skipped = rig.records("j", RunState.SKIPPED)
    # Only the slots due before it was past its grace (T+2, T+3) overlapped it.
    assert [r.nominal_ms for r in skipped] == slots(2, 3)
    assert rig.state.runs[rid(T0 + 4 * S)].state is RunState.PENDING  # fired in its place


@pytest.mark.parametrize(("policy", "expired"), [("skip", True), ("fire_once", False), ("fire_all", False)])
async def test_a_stale_run_stays_as_the_one_late_run_until_a_newer_slot_is_due(
    policy: str, expired: bool
) -> None:
    rig = Rig(commands=COMMAND_VERSION)
    rig.add("j", schedule={"every": 60}, misfire={"policy": policy, "grace": 5})
    await rig.tick(57)  # T+60 fired ahead
    await rig.tick(13)  # T+70: past due + grace, next slot T+120 not due yet
    assert (rig.state.runs[rid(T0 + 60 * S)].state is RunState.MISSED) is expired
    if not expired:
        await rig.tick(50.5)  # T+120.5: a newer slot is due, it takes the stale run's place
        assert rig.state.runs[rid(T0 + 60 * S)].state is RunState.MISSED
        assert rig.state.runs[rid(T0 + 120 * S)].state is RunState.PENDING


async def test_stale_runs_that_are_claimed_started_manual_or_in_grace_are_left_alone() -> None:
    rig = Rig()
    rig.add("a", misfire={"grace": 2}, delivery="at_most_once")
    rig.add("r", misfire={"grace": 2})
    rig.add("g", misfire={"grace": 30})
    await rig.tick()
    claim = rig.state.runs[rid(T0 + S, "a")]
    rig.cmd(
        CommandType.CLAIM_RUNS,
        node=claim.node,
        now_ms=T0,
        items=[{"run_id": claim.run_id, "attempt": 1}],
    )
    rig.clock.advance(1)
    rig.start(rid(T0 + S, "r"))
    await rig.tick(5)
    assert CommandType.EXPIRE_RUNS not in rig.proposer.types()
    assert {r.state for r in (rig.state.runs[rid(T0 + S, j)] for j in "arg")} == {
        RunState.PENDING,
        RunState.RUNNING,
    }


async def test_missed_record_keeps_the_jobs_next_slot() -> None:
    rig = Rig()
    rig.add("j", schedule={"every": 60}, misfire={"policy": "skip", "grace": 5})
    await rig.tick()
    assert rig.state.jobs["j"].next_nominal_ms == T0 + 60 * S
    await rig.tick(200)  # T+60, T+120, T+180 missed; T+240 ahead
    [missed] = rig.records("j", RunState.MISSED)
    assert missed.count == 3 and not rig.fired_slots()
    assert rig.state.jobs["j"].next_nominal_ms == T0 + 240 * S  # actual: None (API next_fire_at: null)


# ---------------------------------------------------------------- overlap


async def test_forbid_fires_ahead_only_when_idle_and_the_state_skips_at_due_time() -> None:
    rig = Rig()
    rig.add("j")  # overlap forbid is the default
    await rig.tick()
    assert rig.fired_slots() == [T0 + S]  # one slot ahead, not three
    rig.proposer.clear()
    await rig.tick(0.5)
    assert rig.proposer.proposed == []
    await rig.tick(0.5)  # T+1: the run starts
    rig.start(rid(T0 + S))
    await rig.tick(0.5)
    assert rig.proposer.proposed == []  # T+2 not fired ahead while running
    await rig.tick(0.5)  # T+2: decided now, by the state
    assert rig.proposer.types() == [FIRE]
    assert [f["nominal_ms"] for f in rig.proposer.of(FIRE)[0].body["fires"]] == [T0 + 2 * S]
    skipped = rig.runs()[T0 + 2 * S]
    assert skipped.state is RunState.SKIPPED and "overlap" in (skipped.reason or "")
    assert rig.state.jobs["j"].last_slot_ms == T0 + 2 * S
    rig.clock.advance(0.2)
    rig.finish(rid(T0 + S))
    rig.proposer.clear()
    await rig.tick()  # idle again: T+3 fired ahead
    assert rig.proposer.results[0]["fired"] == [rid(T0 + 3 * S)]


async def test_allow_fires_ahead_while_a_run_is_active() -> None:
    rig = Rig()
    rig.add("j", overlap="allow")
    await rig.tick()
    await rig.tick(1)
    rig.start(rid(T0 + S))
    await rig.tick(1)
    assert rig.fired_slots() == slots(1, 5)
    assert all(r.state in {RunState.PENDING, RunState.RUNNING} for r in rig.runs().values())


async def test_replace_cancels_the_active_run_at_the_due_time() -> None:
    rig = Rig()
    rig.add("j", overlap="replace")
    await rig.tick()
    await rig.tick(1)
    rig.start(rid(T0 + S))
    await rig.tick(0.9)
    assert rig.fired_slots() == [T0 + S]  # not ahead
    await rig.tick(0.1)  # T+2
    runs = rig.runs()
    assert runs[T0 + S].state is RunState.CANCELLED and "replaced" in (runs[T0 + S].reason or "")
    assert runs[T0 + 2 * S].state is RunState.PENDING


async def test_queue_queues_one_and_skips_the_next() -> None:
    rig = Rig()
    rig.add("j", overlap="queue")
    await rig.tick()
    await rig.tick(1)
    rig.start(rid(T0 + S))
    await rig.tick(1)  # T+2: queued behind T+1
    await rig.tick(1)  # T+3: one waits already: skipped
    runs = rig.runs()
    assert runs[T0 + S].state is RunState.RUNNING
    assert runs[T0 + 2 * S].state is RunState.PENDING and runs[T0 + 2 * S].waiting
    assert runs[T0 + 3 * S].state is RunState.SKIPPED
    assert rig.fired_slots() == slots(1, 2)


async def test_paused_jobs_fire_nothing() -> None:
    rig = Rig()
    rig.add("p", paused=True)
    rig.add("j", overlap="allow")
    await rig.tick()
    assert rig.fired_slots("j") == slots(1, 3) and not rig.state.job_runs["p"]
    assert rig.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 500)["ok"]
    assert all(r.state is RunState.CANCELLED for r in rig.runs("j").values())
    rig.proposer.clear()
    for _ in range(10):
        await rig.tick(1)
    assert FIRE not in rig.proposer.types()
    assert not rig.state.job_runs["p"] and rig.fired_slots("j") == slots(1, 3)


# ---------------------------------------------------------------- failover


async def test_new_leader_rebuilds_from_replicated_state_and_fires_no_slot_twice() -> None:
    rig = Rig()
    rig.add("j", overlap="allow")
    rig.add("f")  # forbid: one slot ahead
    await rig.tick()
    await rig.tick(1)  # old leader fired j up to T+4, f T+1
    rig.leadership.leader = False  # it dies / steps down
    b_leads = FakeLeadership(term=2, connected={raft("n1"): False, raft("n3"): True})
    b, b_proposer = rig.scheduler_for("n2", b_leads)
    await b.tick()  # the new leader at T+1
    rig.clock.advance(0.5)
    await b.tick()
    assert b_proposer.types() == [BEGIN]  # nothing new in its horizon yet
    assert (rig.state.term, rig.state.leader) == (2, "n2")
    rig.clock.advance(0.5)
    await b.tick()  # T+2: j's T+5; f's T+2 at its due time
    await rig.scheduler.tick()  # the old leader stays silent
    assert b_proposer.types() == [BEGIN, FIRE]
    assert sorted(decided(b_proposer)) == sorted([("j", T0 + 5 * S), ("f", T0 + 2 * S)])
    assert rig.fired_slots("j") == slots(1, 5)
    assert rig.runs("f")[T0 + 2 * S].state is RunState.SKIPPED  # T+1 still pending: forbid
    for _ in range(5):
        rig.clock.advance(1)
        await b.tick()
    assert rig.fired_slots("j") == slots(1, 10)
    assert rig.state.stats["j"]["fired"] == 10
    both = decided(rig.proposer, b_proposer)
    assert len(both) == len(set(both))  # no slot proposed twice across terms
    assert rig.proposer.types() == [BEGIN, FIRE, FIRE]  # the old leader, all before it stepped down
    # the old leader's node (a worker too) is silent: committed down, its runs fired ahead move
    assert not rig.state.nodes["n1"].up and not rig.state.node_active["n1"]


async def test_stale_scheduler_gets_its_fire_rejected_and_stops_acting() -> None:
    rig = Rig()
    rig.add("j", overlap="allow")
    await rig.tick()  # term 1 fires T+1..T+3
    b, b_proposer = rig.scheduler_for(
        "n2", FakeLeadership(term=2, connected={raft("n1"): True, raft("n3"): True})
    )
    await b.tick()  # term 2 begins (the old leader is cut off)
    rig.proposer.clear()
    await rig.tick(1)  # the deposed leader still believes
    assert rig.proposer.types() == [FIRE]
    assert rig.proposer.results[0]["code"] == "stale_term"
    assert rig.fired_slots() == slots(1, 3)  # T+4 was not fired by it
    assert rig.scheduler.active_term == 0
    rig.proposer.clear()
    for _ in range(3):
        await rig.tick(1)
    assert rig.proposer.types() == [BEGIN] * 3  # only tries to begin its term again
    assert not any(r["ok"] for r in rig.proposer.results)
    await b.tick()
    assert rig.fired_slots() == slots(1, 7)  # the real leader fires exactly once
    assert decided(b_proposer) == [("j", s) for s in slots(4, 7)]


# ---------------------------------------------------------------- dead nodes


async def test_silent_node_is_committed_down_its_runs_move_and_it_comes_back_up() -> None:
    tags = {"n1": {"role": "leader"}, "n2": {"role": "worker"}, "n3": {"role": "worker"}}
    rig = Rig(tags=tags, node_timeout_s=5)
    rig.add("j", overlap="allow", route={"tags": {"role": "worker"}})
    await rig.tick()
    victim = rig.runs()[T0 + S].node
    other = "n3" if victim == "n2" else "n2"
    assert victim in {"n2", "n3"}
    rig.leadership.connected[raft(victim)] = False
    await rig.tick(4.9)
    assert rig.state.nodes[victim].up and SET_NODE not in rig.proposer.types()
    assert rig.state.node_active[victim]  # runs still on it
    rig.start(rid(T0 + S))  # one of them is running
    rig.proposer.clear()
    await rig.tick(0.2)  # silent 5.1 s > node_timeout_s
    assert rig.proposer.types() == [SET_NODE, REASSIGN, FIRE]  # liveness first, then fires
    down = rig.proposer.of(SET_NODE)[0].body
    assert (down["node"], down["up"], down["term"]) == (victim, False, 1)
    assert not rig.state.nodes[victim].up
    assert not rig.state.node_active[victim]
    moved = rig.proposer.results[1]["moved"]
    assert moved
    for run_id in moved:
        run = rig.state.runs[run_id]
        assert (run.node, run.attempt, run.state) == (other, 2, RunState.PENDING)
        assert run.reason == f"reassigned from {victim}"
    assert all(r.node == other for r in rig.runs().values())
    running = rig.runs()[T0 + S]  # at_least_once: tried again, from now
    assert (running.attempt, running.state, running.due_ms) == (2, RunState.PENDING, T0 + 5100)

    rig.proposer.clear()
    await rig.tick(1)  # new fires avoid the down node
    assert rig.proposer.types() == [FIRE]
    assert all(r.node == other for r in rig.runs().values())
    rig.leadership.connected[raft(victim)] = True
    rig.proposer.clear()
    await rig.tick(0.1)
    assert rig.proposer.types() == [SET_NODE]
    up = rig.proposer.of(SET_NODE)[0].body
    assert (up["node"], up["up"]) == (victim, True) and rig.state.nodes[victim].up


async def test_a_node_down_is_a_warning_and_back_up_is_routine(caplog: pytest.LogCaptureFixture) -> None:
    """At the default level (warning) a quiet cluster logs nothing routine: a node coming back is
    INFO, one going down is what an operator must see."""
    rig = Rig(node_timeout_s=5)
    await rig.tick()
    rig.leadership.connected[raft("n2")] = False
    with caplog.at_level(logging.INFO, logger="raftsched.scheduler"):
        await rig.tick(5.1)
        rig.leadership.connected[raft("n2")] = True
        await rig.tick(0.1)
    levels = {r.getMessage(): r.levelno for r in caplog.records if r.getMessage().startswith("node n2 is")}
    assert levels == {
        "node n2 is down (not heard from for 5.1 s)": logging.WARNING,
        "node n2 is up": logging.INFO,
    }


async def _ticks(rig: Rig, seconds: float, step: float = 0.05) -> float:
    """Tick every `step` (the real loop's period) for `seconds`, letting probes complete; returns
    the seconds it took until the first SET_NODE (or `seconds`)."""
    for k in range(round(seconds / step)):
        await rig.tick(step)
        for _ in range(5):
            await asyncio.sleep(0)
        if SET_NODE in rig.proposer.types():
            return (k + 1) * step
    return seconds


async def test_a_node_whose_ports_refuse_connections_is_down_at_once_and_its_runs_move() -> None:
    """kill -9: the connection drops and both its ports refuse. Down well within a second."""
    tags = {"n1": {"role": "leader"}, "n2": {"role": "worker"}, "n3": {"role": "worker"}}
    rig = Rig(tags=tags, node_timeout_s=5)
    rig.add("j", route={"tags": {"role": "worker"}})  # forbid, every 1 s
    await rig.tick()
    victim = rig.runs()[T0 + S].node
    assert victim in {"n2", "n3"}
    rig.proposer.clear()
    rig.leadership.connected[raft(victim)] = False
    rig.refusing.add(victim)
    took = await _ticks(rig, 1.0)
    assert took <= 0.5
    down = rig.proposer.of(SET_NODE)[0].body
    assert (down["node"], down["up"], down["reason"]) == (victim, False, "refused connections")
    assert rig.state.nodes[victim].down_reason == "refused connections"
    assert REASSIGN in rig.proposer.types()
    moved = rig.state.runs[rid(T0 + S)]
    assert moved.node != victim and moved.attempt == 2 and moved.due_ms == T0 + S  # due unchanged
    # When it is back (connected), it is up again and the reason is gone.
    rig.refusing.clear()
    rig.leadership.connected[raft(victim)] = True
    await rig.tick(0.05)
    assert rig.state.nodes[victim].up and rig.state.nodes[victim].down_reason is None


@pytest.mark.parametrize("delivery", ["at_least_once", "at_most_once"])
async def test_a_paused_jobs_running_run_on_a_dead_node_is_cancelled_not_started_again(delivery: str) -> None:
    """Found by the chaos campaign (seed 3111): a run running when its job was paused (a pause
    cancels pending runs only) whose node then died was moved, and started again after the pause.
    An at_least_once one is cancelled instead; an at_most_once one is `lost`, as any claimed run."""
    tags = {"n1": {"role": "leader"}, "n2": {"role": "worker"}, "n3": {"role": "worker"}}
    rig = Rig(tags=tags, node_timeout_s=5)
    rig.add("j", route={"tags": {"role": "worker"}}, overlap="allow", delivery=delivery)
    await rig.tick()
    run = rig.runs()[T0 + S]
    rig.clock.advance(1.0)
    if delivery == "at_most_once":
        assert rig.cmd(
            CommandType.CLAIM_RUNS,
            node=run.node,
            now_ms=rig.clock.now_ms(),
            items=[{"run_id": run.run_id, "attempt": 1}],
        )["ok"]
    rig.start(run.run_id)
    assert rig.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=rig.clock.now_ms())["ok"]
    rig.proposer.clear()
    rig.leadership.connected[raft(run.node)] = False
    rig.refusing.add(run.node)
    await _ticks(rig, 1.0)
    after = rig.state.runs[run.run_id]
    if delivery == "at_least_once":
        assert (after.state, after.attempt, after.node) == (RunState.CANCELLED, 1, run.node)
        assert "paused" in (after.reason or "")
    else:
        assert (after.state, after.attempt) == (RunState.LOST, 1)


async def test_a_new_leader_commits_the_dead_old_leader_down_in_its_first_tick() -> None:
    """Followers gather the evidence while the election runs: the old leader's runs move at once."""
    rig = Rig(node_timeout_s=5)
    rig.add("j")
    await rig.tick()  # n1 leads, fires T+1
    held = rig.runs()[T0 + S].node
    rig.leadership.leader = False  # n1 is killed: it leads no more
    follower, proposer = rig.scheduler_for(
        "n2", FakeLeadership(leader=False, term=1, connected={raft("n1"): False, raft("n3"): True})
    )
    rig.refusing.add("n1")
    for _ in range(8):  # the election: 0.4 s of follower ticks
        rig.clock.advance(0.05)
        await follower.tick()
        for _ in range(5):
            await asyncio.sleep(0)
    assert proposer.proposed == []  # a follower proposes nothing
    follower.leadership.leader, follower.leadership.current_term = True, 2  # type: ignore[attr-defined]
    await follower.tick()
    assert proposer.types()[:2] == [BEGIN, SET_NODE]
    assert proposer.of(SET_NODE)[0].body == {
        "term": 2,
        "node": "n1",
        "up": False,
        "now_ms": rig.clock.now_ms(),
        "reason": "refused connections",
    }
    if held == "n1":
        assert rig.state.runs[rid(T0 + S)].attempt == 2


async def test_a_silent_node_whose_ports_accept_keeps_the_timeout() -> None:
    """SIGSTOP, or a partition that drops packets: the probe proves nothing, node_timeout_s decides."""
    rig = Rig(node_timeout_s=5)
    rig.add("j", overlap="allow")
    await rig.tick()
    rig.leadership.connected[raft("n2")] = False  # not refusing: its kernel still accepts
    took = await _ticks(rig, 6.0, step=0.1)
    assert 4.9 <= took <= 5.3
    down = rig.proposer.of(SET_NODE)[0].body
    assert down["node"] == "n2" and down["reason"].startswith("not heard from for 5.")


async def test_refused_connections_while_the_raft_connection_is_up_prove_nothing() -> None:
    rig = Rig(node_timeout_s=5)
    await rig.tick()
    rig.refusing.add("n2")  # (a probe is made only once the connection is down)
    await _ticks(rig, 2.0)
    assert SET_NODE not in rig.proposer.types() and rig.state.nodes["n2"].up


async def test_the_leader_itself_is_never_committed_down() -> None:
    rig = Rig(("n1", "n2"))
    await rig.tick()
    for _ in range(4):
        await rig.tick(5)
    assert SET_NODE not in rig.proposer.types()
    assert rig.state.nodes["n1"].up and rig.state.nodes["n2"].up


async def test_new_leader_does_not_commit_a_dead_node_up() -> None:
    rig = Rig(tags={"n3": {"zone": "c"}})
    rig.leadership.connected[raft("n3")] = False
    await rig.tick()
    await rig.tick(6)
    assert not rig.state.nodes["n3"].up  # committed down by term 1
    rig.leadership.leader = False
    b, b_proposer = rig.scheduler_for("n2", FakeLeadership(term=2, connected={raft("n1"): True}))
    rig.add("z", overlap="allow", route={"tags": {"zone": "c"}})  # only the dead node matches
    await b.tick()  # actual: SET_NODE n3 up=True
    await b.tick()
    assert SET_NODE not in b_proposer.types()
    assert not rig.state.nodes["n3"].up
    assert not rig.state.job_runs["z"]  # actual: z fired to the dead n3


async def test_leading_again_waits_node_timeout_before_committing_down() -> None:
    rig = Rig()
    await rig.tick()  # term 1: n2, n3 seen at T
    rig.leadership.leader = False
    await rig.tick(60)  # a follower for a minute
    rig.leadership.leader, rig.leadership.current_term = True, 3
    rig.leadership.connected[raft("n3")] = False  # not yet reconnected to the new leader
    assert rig.cmd(BEGIN, term=2, leader="n2", now_ms=rig.clock.now_ms())["ok"]
    rig.proposer.clear()
    await rig.tick()
    assert rig.proposer.types() == [BEGIN]  # actual: BEGIN, SET_NODE n3 down
    assert rig.state.nodes["n3"].up


# ---------------------------------------------------------------- routing


async def test_route_tags_pick_only_matching_nodes() -> None:
    rig = Rig(tags={"n1": {"zone": "a"}, "n2": {"zone": "b"}, "n3": {"zone": "a"}})
    rig.add("j", overlap="allow", route={"tags": {"zone": "b"}})
    rig.add("k", overlap="allow")
    await rig.tick()
    await rig.tick(2)
    assert len(rig.runs("j")) == 5 and {r.node for r in rig.runs("j").values()} == {"n2"}
    assert {r.node for r in rig.runs("k").values()} != {"n2"}  # untagged jobs spread


async def test_least_loaded_counts_executing_runs_not_the_pending_ones_fired_ahead() -> None:
    """Pending runs fired ahead are commitments, not load: counting them sent every fire of a
    stretch to whichever node had just reported its finishes (seen at 1,000 runs/s: 100-400 ms
    of fires on one node, all late). Executing runs are load: they steer the next fires away."""
    rig = Rig()
    for i in range(30):
        rig.add(f"j{i}", overlap="allow")
    await rig.tick()
    for _ in range(4):
        done = rig.state.active_runs_of("n1")[:10]  # n1 reports ten runs done, the others nothing yet
        for run in done:
            rig.start(run.run_id)
            rig.finish(run.run_id)
        rig.proposer.clear()
        await rig.tick(1.0)
        fired = [item["nodes"][0] for c in rig.proposer.of(FIRE) for item in c.body["fires"]]
        counts = [fired.count(n) for n in ("n1", "n2", "n3")]
        assert len(fired) == 30 and max(counts) - min(counts) <= 1, counts  # spread, not all on n1
    busy = rig.state.active_runs_of("n1")[:3]
    for run in busy:
        rig.start(run.run_id)
    rig.proposer.clear()
    await rig.tick(1.0)
    fired = [item["nodes"][0] for c in rig.proposer.of(FIRE) for item in c.body["fires"]]
    assert len(fired) == 30 and fired.count("n1") < min(fired.count("n2"), fired.count("n3"))


@pytest.mark.parametrize("policy", ["skip", "fire_once"])
async def test_no_eligible_node_fires_nothing_then_records_missed_past_grace(policy: str) -> None:
    rig = Rig(tags={"n1": {"zone": "a"}, "n2": {"zone": "b"}})
    rig.add("j", overlap="allow", route={"tags": {"zone": "c"}}, misfire={"policy": policy, "grace": 5})
    await rig.tick()
    for _ in range(5):
        await rig.tick(1)  # up to T+5: within grace, waiting
    assert rig.proposer.types() == [BEGIN] and not rig.state.job_runs["j"]
    for _ in range(5):
        await rig.tick(1)  # T+10: T+1..T+4 are past grace
    assert not rig.fired_slots()
    missed = rig.records("j", RunState.MISSED)
    covered = [s for r in missed for s in range(r.nominal_ms, (r.until_ms or r.nominal_ms) + 1, S)]
    past_grace = slots(1, 4)
    # skip: every slot past grace is recorded; fire_once holds back the newest one as its catch-up run
    assert covered == (past_grace if policy == "skip" else past_grace[:-1])
    assert sum(r.count for r in missed) == len(covered)

    rig.cmd(
        CommandType.REGISTER_NODE,
        node="n3",
        http="http://n3",
        raft=raft("n3"),
        tags={"zone": "c"},
        capacity=8,
        now_ms=rig.clock.now_ms(),
    )
    rig.leadership.connected[raft("n3")] = True
    await rig.tick()  # a node appears: in-grace slots run late
    catch_up = [T0 + 4 * S] if policy == "fire_once" else []
    assert rig.fired_slots() == catch_up + slots(5, 13)
    assert {r.node for r in rig.runs().values() if r.attempt} == {"n3"}


async def _rig_with_a_run_started_on_n2() -> tuple[Rig, Run]:
    """A job fired over the nodes, one of n2's runs started (its other runs still pending)."""
    rig = Rig()
    rig.add("j", overlap="allow")
    await rig.tick()
    on_n2 = rig.state.active_runs_of("n2")
    assert on_n2, "least_loaded spreads the first fires over the nodes"
    running = on_n2[0]
    rig.start(running.run_id)
    return rig, running


async def test_drain_moves_pending_runs_waits_for_running_then_removes_the_node() -> None:
    rig, running = await _rig_with_a_run_started_on_n2()
    rig.cmd(CommandType.DRAIN_NODE, node="n2", draining=True, leaving=True, now_ms=rig.clock.now_ms())
    await rig.tick(0.1)
    active = rig.state.active_runs_of("n2")
    assert [r.run_id for r in active] == [running.run_id]  # pending moved, running stays
    assert "n2" in rig.state.nodes and not rig.leadership.membership
    assert all(r.node != "n2" for r in rig.state.runs.values() if r.state is RunState.PENDING)
    rig.cmd(
        CommandType.FINISH_RUNS,
        node="n2",
        now_ms=rig.clock.now_ms(),
        items=[
            {
                "run_id": running.run_id,
                "attempt": running.attempt,
                "outcome": "succeeded",
                "finished_ms": rig.clock.now_ms(),
            }
        ],
    )
    await rig.tick(0.1)
    assert "n2" not in rig.state.nodes and "n2" in rig.state.removed
    assert rig.leadership.membership == [("remove", raft("n2"))]


async def test_a_draining_leader_hands_over_first() -> None:
    rig = Rig()
    await rig.tick()
    rig.cmd(CommandType.DRAIN_NODE, node="n1", draining=True, leaving=True, now_ms=rig.clock.now_ms())
    await rig.tick(0.1)
    assert rig.leadership.transfers == 1 and "n1" in rig.state.nodes
    assert not rig.leadership.membership


async def test_a_node_with_a_bad_clock_gets_no_new_runs_and_its_pending_ones_move() -> None:
    rig, running = await _rig_with_a_run_started_on_n2()
    clocks = [{"node": "n2", "offset_ms": 2400, "ok": False}]
    assert rig.cmd(CommandType.NODE_CLOCKS, term=1, now_ms=rig.clock.now_ms(), clocks=clocks)["ok"]
    await rig.tick(0.1)
    assert [r.run_id for r in rig.state.active_runs_of("n2")] == [running.run_id]  # it finishes what runs
    await rig.tick(2.0)
    assert [r.run_id for r in rig.state.active_runs_of("n2")] == [running.run_id]  # and gets nothing new
    clocks = [{"node": "n2", "offset_ms": 30, "ok": True}]
    assert rig.cmd(CommandType.NODE_CLOCKS, term=1, now_ms=rig.clock.now_ms(), clocks=clocks)["ok"]
    rig.finish(running.run_id)  # idle again: as loaded as the others
    await rig.tick(2.0)
    assert rig.state.active_runs_of("n2")  # back in the rotation
    stale = [{"node": "n2", "offset_ms": 0, "ok": False}]
    assert not rig.cmd(CommandType.NODE_CLOCKS, term=0, now_ms=rig.clock.now_ms(), clocks=stale)["ok"]
