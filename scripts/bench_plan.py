"""The leader's planning cost: µs per planned slot, and the longest hold of `state.lock` per plan call.

    python scripts/bench_plan.py [--jobs 2000] [--repeats 3] [--base DIR] [--after DIR] [--out FILE]

One process per measurement, each importing raftsched from its own tree (`--base`, e.g. a
`git worktree add /tmp/base-plan <rev>`, and `--after`, default this checkout), alternating
base/after `--repeats` times in one session; medians and after/base ratios in a table, then one
JSON line. Nothing but Python runs: an in-memory state, a proposer that applies at once, a fake
clock. The state has 5 nodes registered (two tag zones) and N jobs: every 1 s / 2 s / 0.5 s with
phases spread over the second, crons every second and every 2 s (aligned), routes least_loaded,
round_robin, random, hash, shards, broadcast and tagged, overlap mostly `allow`, some `forbid`.

µs per slot is wall time (this machine is shared) and, next to it, the thread's CPU time.

- steady: after a first plan, 10 simulated seconds of 50 ms ticks (the scheduler's period), each
  planning the slots entering the 3 s lookahead: µs per planned slot, plan-call p50 and max.
- burst: the first plan of a term: every job's 3 s lookahead at once, in commands of up to 2,000
  fires (the case of a saturated loop, or a new leader): µs per slot and the longest plan call.

Lock hold = the longest time one `with state.lock` was held by the scheduler during a plan call
(the time PySyncObj's tick thread could not apply, nor send heartbeats, meanwhile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
T0 = 1_800_000_000_000
NODES = {"n1": "a", "n2": "a", "n3": "a", "n4": "b", "n5": "b"}
ROUTES: list[dict[str, Any]] = [
    {"strategy": "least_loaded"},
    {"strategy": "least_loaded"},
    {"strategy": "round_robin"},
    {"strategy": "random"},
    {"strategy": "hash"},
    {"strategy": "shards", "shards": 2},
    {"strategy": "least_loaded", "tags": {"zone": "a"}},
    {"strategy": "round_robin", "tags": {"zone": "b"}},
]
SCHEDULES: list[dict[str, Any]] = [
    {"every": 1},
    {"every": 1},
    {"every": 2},
    {"every": 0.5},
    {"cron": "* * * * * *"},
    {"cron": "*/2 * * * * *"},
]


# ---------------------------------------------------------------- child: one measurement, one tree


class TimedLock:
    """The state's RLock, recording how long each outermost hold lasted."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.depth = 0
        self.since = 0.0
        self.longest = 0.0

    def __enter__(self) -> TimedLock:
        self.inner.acquire()
        self.depth += 1
        if self.depth == 1:
            self.since = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.longest = max(self.longest, time.perf_counter() - self.since)
        self.inner.release()

    def acquire(self, *args: Any, **kwargs: Any) -> bool:
        return bool(self.inner.acquire(*args, **kwargs))

    def release(self) -> None:
        self.inner.release()


class Leadership:
    def is_leader(self) -> bool:
        return True

    def term(self) -> int:
        return 1

    def connected_partners(self) -> dict[str, bool]:
        return {f"{n}:1": True for n in NODES}

    async def change_membership(self, kind: str, addr: str) -> None:
        return None

    async def transfer_leadership(self) -> bool:
        return False

    async def wait_replicated(self, addr: str) -> bool:
        return True


def build(jobs: int) -> tuple[Any, Any, Any]:
    from raftsched import triggers
    from raftsched.clock import FakeClock
    from raftsched.commands import CommandType, encode
    from raftsched.model import JobSpec
    from raftsched.scheduler import Scheduler, SchedulerSettings
    from raftsched.state import State

    state = State()

    def cmd(kind: Any, **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = state.apply(encode(kind, body))
        assert result["ok"], result
        return result

    for node, zone in NODES.items():
        cmd(
            CommandType.REGISTER_NODE,
            node=node,
            http=f"http://{node}",
            raft=f"{node}:1",
            tags={"zone": zone},
            capacity=256,
            now_ms=T0,
        )
    for i in range(jobs):
        spec = {
            "id": f"job-{i}",
            "schedule": SCHEDULES[i % len(SCHEDULES)],
            "route": ROUTES[i % len(ROUTES)] if i % 97 else {"strategy": "broadcast"},
            "overlap": "forbid" if i % 10 == 9 else "allow",
            "task": {"type": "shell", "command": ["true"]},
        }
        created = T0 - 1000 + i * 1000 // jobs  # spread phases over the second
        first = triggers.next_fire_ms(JobSpec.from_dict(spec).schedule, created, created_ms=created)
        cmd(CommandType.PUT_JOB, spec=spec, now_ms=created, mode="create", next_nominal_ms=first)
    cmd(CommandType.BEGIN_TERM, term=1, leader="n1", now_ms=T0)
    clock = FakeClock(T0)

    async def propose(data: bytes) -> dict[str, Any]:
        result: dict[str, Any] = state.apply(data)
        return result

    settings = SchedulerSettings(node_id="n1", lookahead_s=3.0, node_timeout_s=5.0)
    scheduler = Scheduler(settings, state, Leadership(), propose, clock, asyncio.Event())
    scheduler.active_term = 1
    return state, scheduler, clock


class Meter:
    """Wraps `scheduler.plan`: per call, its duration, the slots it planned and the longest lock hold."""

    def __init__(self, scheduler: Any, lock: TimedLock) -> None:
        self.calls: list[tuple[float, int, float, float]] = []
        self.inner, self.lock = scheduler.plan, lock
        scheduler.plan = self

    def __call__(self, now_ms: int) -> Any:
        self.lock.longest = 0.0
        start, cpu = time.perf_counter(), time.thread_time()
        plan = self.inner(now_ms)
        took, cpu = time.perf_counter() - start, time.thread_time() - cpu
        self.calls.append((took, len(plan.fires) + len(plan.skips), self.lock.longest, cpu))
        return plan

    def summary(self) -> dict[str, float]:
        took = [c[0] for c in self.calls]
        slots = sum(c[1] for c in self.calls)
        return {
            "plan_calls": len(self.calls),
            "slots": slots,
            "us_per_slot": sum(took) / max(1, slots) * 1e6,
            "cpu_us_per_slot": sum(c[3] for c in self.calls) / max(1, slots) * 1e6,
            "plan_p50_ms": statistics.median(took) * 1e3 if took else 0.0,
            "plan_max_ms": max(took, default=0.0) * 1e3,
            "lock_max_ms": max((c[2] for c in self.calls), default=0.0) * 1e3,
        }


async def burst(jobs: int) -> dict[str, float]:
    state, scheduler, _ = build(jobs)
    lock = state.lock = TimedLock(state.lock)
    meter = Meter(scheduler, lock)
    while True:
        before = len(meter.calls)
        await scheduler.fire_due()
        if len(meter.calls) == before or meter.calls[-1][1] == 0:
            break
    return meter.summary()


async def steady(jobs: int) -> dict[str, float]:
    state, scheduler, clock = build(jobs)
    for _ in range(jobs * 6 // 2000 + 2):  # the first lookahead (measured by `burst`), in commands
        await scheduler.fire_due()
    lock = state.lock = TimedLock(state.lock)
    meter = Meter(scheduler, lock)
    for _ in range(200):
        clock.advance(0.05)
        await scheduler.fire_due()
    return meter.summary()


def child(jobs: int) -> None:
    import raftsched

    out = {
        "tree": str(Path(raftsched.__file__).resolve().parent.parent),
        "steady": asyncio.run(steady(jobs)),
        "burst": asyncio.run(burst(jobs)),
    }
    print(json.dumps(out))


# ---------------------------------------------------------------- parent: alternate trees, report


def measure(tree: Path, jobs: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", "--jobs", str(jobs)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if Path(result["tree"]) != tree.resolve():
        raise SystemExit(f"imported raftsched from {result['tree']}, not {tree}")
    return result


METRICS = ("us_per_slot", "cpu_us_per_slot", "plan_p50_ms", "plan_max_ms", "lock_max_ms")


def report(runs: dict[str, list[dict[str, Any]]], jobs: int) -> dict[str, Any]:
    rows, out = [], {"jobs": jobs, "repeats": len(runs["base"])}
    for scenario in ("steady", "burst"):
        slots = runs["after"][0][scenario]["slots"]
        for metric in METRICS:
            med = {k: statistics.median(r[scenario][metric] for r in v) for k, v in runs.items()}
            ratio = med["after"] / med["base"] if med["base"] else float("nan")
            rows.append((scenario, slots, metric, med["base"], med["after"], ratio))
            out[f"{scenario}_{metric}"] = {
                "base": round(med["base"], 2),
                "after": round(med["after"], 2),
                "ratio": round(ratio, 3),
            }
    print(f"planning, {jobs} jobs, 5 nodes; medians of {out['repeats']} runs per tree, alternated")
    print(f"{'scenario':<9} {'slots':>6}  {'metric':<15} {'base':>10} {'after':>10} {'after/base':>10}")
    print(f"{'-' * 9} {'-' * 6}  {'-' * 15} {'-' * 10} {'-' * 10} {'-' * 10}")
    for scenario, slots, metric, base, after, ratio in rows:
        print(f"{scenario:<9} {slots:>6}  {metric:<15} {base:>10.2f} {after:>10.2f} {ratio:>9.3f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", type=Path, default=Path("/tmp/base-plan"))
    parser.add_argument("--after", type=Path, default=HERE)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.jobs)
        return
    runs: dict[str, list[dict[str, Any]]] = {"base": [], "after": []}
    for _ in range(args.repeats):
        for name in ("base", "after"):
            runs[name].append(measure(getattr(args, name), args.jobs))
    summary = report(runs, args.jobs)
    summary["load_average"] = round(os.getloadavg()[0], 2)
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
