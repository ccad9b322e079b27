"""The state's semantics are pinned: a long mixed command stream must give the same results and
the same snapshots as the code of 7b47c9f did (the golden digests only cover the log's bytes).

The stream is drawn from a seeded generator against the state itself; every policy, delivery,
retry, move, pause, edit, delete, restore, trigger and history trim appears in it. The pins are
SHA-256 prefixes of every result and of the snapshot at each checkpoint. A pin that changes is a
change of semantics, not of speed: find out why instead of updating it.
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any

import orjson
import pytest

from raftsched import records
from raftsched.commands import CommandType
from raftsched.model import RunState
from raftsched.state import State

from statekit import T0, Driver, job_spec

ACTIVE = (RunState.PENDING, RunState.RUNNING)
JOBS: dict[str, dict[str, Any]] = {
    "allow": {"overlap": "allow"},
    "forbid": {},
    "queue": {"overlap": "queue"},
    "replace": {"overlap": "replace"},
    "once": {"delivery": "at_most_once", "overlap": "allow"},
    "retry": {"overlap": "allow", "retries": {"max": 2, "initial_delay": 1, "jitter": 0.5}},
    "shards": {"overlap": "allow", "route": {"strategy": "shards", "shards": 2}},
    "py": {
        "task": {"type": "python", "callable": "m:f", "kwargs": {"a": 1}},
        "labels": {"team": "x"},
        "schedule": {"every": 2, "start_at": "2027-01-15T08:00:00Z"},
    },
    "web": {
        "task": {"type": "http", "url": "http://127.0.0.1:9/x", "expect_status": [200, "300-302"]},
        "schedule": {"cron": "*/5 * * * * *", "timezone": "Europe/Berlin"},
        "timeout": 3,
    },
}
NODES = ("n1", "n2", "n3")


class Stream:
    def __init__(self, seed: int) -> None:
        self.d = Driver()
        self.rng = random.Random(seed)
        self.now = T0
        self.term = 1
        self.slot = dict.fromkeys(JOBS, T0)
        self.results: list[bytes] = []

    def cmd(self, t: CommandType, rid: str | None = None, **body: Any) -> None:
        self.results.append(orjson.dumps(self.d.cmd(t, rid, now_ms=self.now, **body)))

    def active(self, job: str | None = None) -> list[Any]:
        return [r for r in self.d.state.runs.values() if r.state in ACTIVE and job in (None, r.job_id)]

    def boot(self) -> None:
        self.d.boot(NODES)
        self.cmd(CommandType.BEGIN_TERM, term=1, leader="n1", history_per_job=6)
        for job, over in JOBS.items():
            self.cmd(CommandType.PUT_JOB, spec=job_spec(job, **over), mode="create", next_nominal_ms=T0)

    def fire(self) -> None:
        fires, skips = [], []
        for job in self.rng.sample(sorted(JOBS), 3):
            if job not in self.d.state.jobs:
                continue
            self.slot[job] += 1000
            nominal = self.slot[job]
            base = {"job_id": job, "incarnation": self.d.state.jobs[job].incarnation, "nominal_ms": nominal}
            if self.rng.random() < 0.15:
                state = self.rng.choice(["missed", "skipped"])
                self.slot[job] += 2000
                skips.append({**base, "until_ms": self.slot[job], "count": 3, "state": state, "reason": "x"})
                continue
            nodes = self.rng.sample(NODES, 2 if job == "shards" else 1)
            fires.append({**base, "due_ms": nominal + 5, "nodes": nodes, "next_nominal_ms": nominal + 1000})
        self.cmd(CommandType.FIRE_RUNS, term=self.term, fires=fires, skips=skips)

    def report(self, kind: CommandType) -> None:
        runs = self.active()
        if not runs:
            return
        by_node: dict[str, list[dict[str, Any]]] = {}
        for run in self.rng.sample(runs, min(len(runs), 4)):
            item: dict[str, Any] = {"run_id": run.run_id, "attempt": run.attempt}
            if kind is CommandType.START_RUNS:
                item["started_ms"] = self.now
            elif kind is CommandType.FINISH_RUNS:
                outcome = self.rng.choice(["succeeded", "succeeded", "failed", "timed_out", "bogus"])
                item.update(outcome=outcome, finished_ms=self.now, exit_code=1, error="e", output="é" * 3000)
                if self.rng.random() < 0.5:
                    item["started_ms"] = self.now - 7
            by_node.setdefault(run.node or "n1", []).append(item)
        for node, items in by_node.items():
            self.cmd(kind, node=node, items=items)

    def reassign(self) -> None:
        moves = [
            {"run_id": r.run_id, "attempt": r.attempt, "node": self.rng.choice(NODES)}
            for r in self.rng.sample(self.active(), min(len(self.active()), 3))
        ]
        self.cmd(CommandType.REASSIGN_RUNS, term=self.term, moves=moves)

    def edit(self) -> None:
        job = self.rng.choice(sorted(JOBS))
        pending = [r.nominal_ms for r in self.active(job)]
        over = {**JOBS[job], "schedule": {"every": self.rng.choice([1, 3])}}
        keep = self.rng.sample(pending, len(pending) // 2)
        self.cmd(CommandType.PUT_JOB, spec=job_spec(job, **over), keep_slots=keep, actor="ed")

    def job_op(self) -> None:
        job = self.rng.choice(sorted(JOBS))
        op = self.rng.choice(["pause", "resume", "trigger", "cancel", "delete", "restore"])
        if op == "pause":
            self.cmd(CommandType.PAUSE_JOB, job_id=job, actor="op")
        elif op == "resume":
            skipped = {"from_ms": self.now - 3000, "until_ms": self.now, "count": 3}
            self.cmd(CommandType.RESUME_JOB, job_id=job, next_nominal_ms=self.now + 1000, skipped=skipped)
        elif op == "trigger":
            self.cmd(CommandType.TRIGGER_JOB, job_id=job, node="n2", env={"K": "v"}, actor="t")
        elif op == "cancel" and self.active(job):
            self.cmd(CommandType.CANCEL_RUN, run_id=self.rng.choice(self.active(job)).run_id, actor="c")
        elif op == "delete":
            self.cmd(CommandType.DELETE_JOB, job_id=job, actor="d")
        elif op == "restore":
            item = {"spec": job_spec(job, **JOBS[job]), "created_ms": T0, "last_slot_ms": self.slot[job]}
            bad = {"spec": {"id": "bad", "schedule": {}}}
            self.cmd(CommandType.RESTORE_JOBS, jobs=[item, bad], actor="r")

    def cluster_op(self) -> None:
        op = self.rng.choice(["down", "up", "term", "dup"])
        if op in ("down", "up"):
            self.cmd(CommandType.SET_NODE, term=self.term, node=self.rng.choice(NODES), up=op == "up")
        elif op == "term":
            self.term += 1
            self.cmd(
                CommandType.BEGIN_TERM, term=self.term, leader="n1", history_per_job=self.rng.randint(3, 9)
            )
        else:
            fp = self.rng.choice(["a", "b"])
            self.cmd(CommandType.NOOP, rid=f"r{self.rng.randint(1, 5)}", fp=fp)

    def step(self) -> None:
        self.now += self.rng.randint(1, 700)
        pick = self.rng.random()
        if pick < 0.35:
            self.fire()
        elif pick < 0.45:
            self.report(CommandType.START_RUNS)
        elif pick < 0.5:
            self.report(CommandType.CLAIM_RUNS)
        elif pick < 0.72:
            self.report(CommandType.FINISH_RUNS)
        elif pick < 0.8:
            self.reassign()
        elif pick < 0.84:
            self.edit()
        elif pick < 0.93:
            self.job_op()
        else:
            self.cluster_op()


def checkpoints(seed: int, steps: int = 1500, every: int = 250) -> list[str]:
    """SHA-256 prefixes of (results so far, snapshot content) every `every` steps."""
    stream = Stream(seed)
    stream.boot()
    out = []
    for i in range(1, steps + 1):
        stream.step()
        if i % every == 0:
            results = hashlib.sha256(b"\n".join(stream.results)).hexdigest()[:12]
            snapshot = orjson.dumps(stream.d.state.document())  # the content, as version 1 wrote it
            out.append(f"{results}:{hashlib.sha256(snapshot).hexdigest()[:12]}")
    return out


PINNED = {
    1: [
        "9057ef406fb7:662bfb7ae628",
        "cfea887af3a0:4533451107b0",
        "f8eebf4eb1b3:e055748c54cf",
        "28a6aabb5a13:e4eba96dd220",
        "fda993593977:9882f358952e",
        "4ce5a8401cc8:788289585854",
    ],
    2: [
        "fe21e23772e4:a6b4f862ae19",
        "9493febdf0dd:4719ac61fb1d",
        "8b428c192ac6:2a228c902293",
        "14a95dc69d83:c73025ad6095",
        "3cb65d3354d0:64372aa0f9ea",
        "b3274a109e27:3370192e41bb",
    ],
}


def test_a_mixed_stream_gives_the_results_and_snapshots_it_always_gave() -> None:
    for seed, pins in PINNED.items():
        assert checkpoints(seed) == pins, seed


def test_a_loaded_snapshot_applies_the_rest_of_the_log_identically() -> None:
    stream = Stream(3)
    stream.boot()
    for _ in range(700):
        stream.step()
    split = len(stream.d.log) // 2
    first = State()
    for data in stream.d.log[:split]:
        first.apply(data)
    loaded = State()
    loaded.load(first.dump())
    assert loaded.dump() == first.dump()
    for data in stream.d.log[split:]:
        assert loaded.apply(data) == first.apply(data)
    assert loaded.dump() == first.dump() == stream.d.state.dump()


def test_loading_a_snapshot_keeps_the_lock_free_while_it_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers on the loop take the state lock, and must see the old data or the new, never half
    of a snapshot (the lock used to be replaced, unheld, as the load began). Built aside,
    swapped in under the lock; listeners stay, the generation moves."""
    stream = Stream(5)
    stream.boot()
    for _ in range(300):
        stream.step()
    source = stream.d.state
    target = State()
    heard: list[str] = []
    target.listeners.append(lambda cmd, result: heard.append(cmd.type.value))
    building, release = threading.Event(), threading.Event()
    real = records.JobRecord.from_dict

    calls: list[int] = []

    def slow_from_dict(d: dict[str, Any]) -> records.JobRecord:
        calls.append(1)
        if len(calls) == 2:  # one job built already
            building.set()
            release.wait(5)
        return real(d)

    monkeypatch.setattr(records.JobRecord, "from_dict", staticmethod(slow_from_dict))
    loader = threading.Thread(target=target.load, args=(source.dump(),))
    loader.start()
    assert building.wait(5)
    got = target.lock.acquire(timeout=1)  # a reader while the snapshot is being built
    assert got and target.jobs == {} and target.applied == 0
    target.lock.release()
    release.set()
    loader.join(5)
    assert target.dump() == source.dump() and target.generation == 1
    target.apply(stream.d.log[-1])
    assert heard  # the node's listeners survived the load


def test_the_executing_count_per_node_follows_every_transition() -> None:
    """Routing's load index (`node_executing`) is derived: after any mix of starts, finishes,
    retries, moves, cancels, deletes and a snapshot load it equals the RUNNING runs per node."""

    def counted(state: State) -> dict[str, int]:
        out: dict[str, int] = {}
        for run in state.runs.values():
            if run.state is RunState.RUNNING and run.node is not None:
                out[run.node] = out.get(run.node, 0) + 1
        return out

    stream = Stream(4)
    stream.boot()
    seen_running = 0
    for _ in range(1500):
        stream.step()
        state = stream.d.state
        index = {node: n for node, n in state.node_executing.items() if n}
        assert index == counted(state)
        seen_running = max(seen_running, sum(index.values()))
    assert seen_running >= 3  # the stream did keep runs executing
    loaded = State()
    loaded.load(stream.d.state.dump())
    assert {n: c for n, c in loaded.node_executing.items() if c} == counted(stream.d.state)
