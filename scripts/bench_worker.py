"""Micro benchmark of the worker's own cost per run: reconcile, outputs, attempt journal.

One process per measurement drives a real `Worker` (its loops, real time, an in-memory state)
through `--rate` runs/s of a trivial task that answers 2 bytes, as an HTTP check does. A
stand-in leader fires the slots `--lookahead` s ahead, in batches every 10 ms; reports are
applied to the state at once. The worker's cost is the process's CPU time over the window minus
what the stand-in leader and the state's apply used (timed around each call); it still holds
the event loop's own overhead, the same for every revision. Each revision is measured
`--repeats` times, interleaved; the table shows medians and after/before ratios, then one JSON
line.

    python scripts/bench_worker.py --before /tmp/base-worker --after . --rate 1000 --seconds 8

`--before` / `--after` are source trees (each put first on PYTHONPATH), e.g. a worktree of the
old revision: `git worktree add /tmp/base-worker <rev>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LEADER_PERIOD_S = 0.01
WARMUP_S = 1.0  # after the lookahead has filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, required=False)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--rate", type=int, default=1000, help="runs per second on this node")
    parser.add_argument("--seconds", type=float, default=8.0, help="measured window")
    parser.add_argument("--lookahead", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.rate, args.seconds, args.lookahead))))
        return
    trees = {"after": args.after.resolve()}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            results[name].append(_child(tree, args))
    report(results, args)


def _child(tree: Path, args: argparse.Namespace) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    argv = [sys.executable, __file__, "--one", "--rate", str(args.rate), "--seconds", str(args.seconds)]
    argv += ["--lookahead", str(args.lookahead)]
    limit = args.lookahead + WARMUP_S + args.seconds + 120  # job setup; an overloaded loop drains slowly
    try:
        out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True, timeout=limit).stdout
    except subprocess.TimeoutExpired:  # the worker fell so far behind that the window never ended
        return {key: float("nan") for key in ("runs", *(key for key, _, _ in COLUMNS))}
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ---------------------------------------------------------------- one measurement (child process)


class Counted:
    """Seconds spent in the calls it wraps, and how many."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, fn: Any) -> Any:
        def counted(*a: Any, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds += time.perf_counter() - t
                self.calls += 1

        return counted


async def measure(rate: int, seconds: float, lookahead: float) -> dict[str, float]:
    from raftsched.clock import SystemClock
    from raftsched.commands import CommandType, encode
    from raftsched.executors import ExecResult, OutputSink
    from raftsched.state import State
    from raftsched.worker import Worker, WorkerSettings

    class Trivial:
        async def run(
            self, task: Any, ctx: Any, *, timeout_s: Any, output_path: Any, on_group: Any = None
        ) -> Any:
            with OutputSink(4096, output_path) as sink:
                sink.write(b"ok")
            return ExecResult(outcome="succeeded", http_status=200, output_tail=sink.tail_text())

        async def close(self) -> None:
            pass

    state, clock = State(), SystemClock()
    applied, leader, reconciles = Counted(), Counted(), Counted()
    state.apply = applied.wrap(state.apply)  # type: ignore[method-assign]
    wake = asyncio.Event()
    for n in ("n1", "n2", "n3"):
        state.apply(
            encode(
                CommandType.REGISTER_NODE,
                {
                    "node": n,
                    "http": f"http://{n}",
                    "raft": f"{n}:1",
                    "tags": {},
                    "capacity": 1 << 20,
                    "now_ms": 0,
                },
            )
        )
    state.apply(encode(CommandType.BEGIN_TERM, {"term": 1, "leader": "n1", "now_ms": 0}))
    jobs = [f"job{i:05d}" for i in range(rate)]
    for job in jobs:
        spec = {
            "id": job,
            "schedule": {"every": 1},
            "task": {"type": "http", "url": "http://x/"},
            "overlap": "allow",
        }
        state.apply(encode(CommandType.PUT_JOB, {"spec": spec, "now_ms": 0, "mode": "create"}))

    writes, files = Counted(), Counted()
    os.write = writes.wrap(os.write)
    path_open = pathlib.Path.open

    def counting_open(self: Path, mode: str = "r", *a: Any, **kw: Any) -> Any:
        if self.suffix == ".log" and "a" in mode:
            files.calls += 1
        return path_open(self, mode, *a, **kw)

    pathlib.Path.open = counting_open  # type: ignore[method-assign]

    async def propose(data: bytes) -> dict[str, Any]:
        return state.apply(data)

    with tempfile.TemporaryDirectory() as tmp:
        settings = WorkerSettings(
            node_id="n2", capacity=1 << 20, output_dir=Path(tmp) / "outputs", output_keep_files=2000
        )
        worker = Worker(settings, state, propose, clock, lambda _: Trivial(), wake)
        if hasattr(worker, "on_applied"):
            state.listeners.append(worker.on_applied)
        state.listeners.append(lambda cmd, result: wake.set())
        worker.reconcile = reconciles.wrap(worker.reconcile)  # type: ignore[method-assign]
        finished = [0]
        send = worker._send

        async def counting_send(cmd_type: Any, items: list[dict[str, Any]]) -> bool:
            if cmd_type is CommandType.FINISH_RUNS:
                finished[0] += len(items)
            return await send(cmd_type, items)

        worker._send = counting_send  # type: ignore[method-assign]
        task = asyncio.create_task(worker.run())
        fire = asyncio.create_task(_leader(state, jobs, rate, lookahead, leader, clock))
        await asyncio.sleep(lookahead + WARMUP_S)
        before = (time.process_time(), applied.seconds, leader.seconds, finished[0], reconciles.seconds)
        counts = (reconciles.calls, writes.calls, files.calls)
        await asyncio.sleep(seconds)
        cpu = time.process_time() - before[0]
        runs = finished[0] - before[3]
        state_s, leader_s = applied.seconds - before[1], leader.seconds - before[2]
        result = {
            "runs": runs,
            "runs_per_s": runs / seconds,
            "cpu_us_per_run": 1e6 * cpu / runs,
            "worker_us_per_run": 1e6 * (cpu - state_s - leader_s) / runs,
            "state_us_per_run": 1e6 * state_s / runs,
            "reconcile_us_per_run": 1e6 * (reconciles.seconds - before[4]) / runs,
            "reconcile_calls_per_s": (reconciles.calls - counts[0]) / seconds,
            "writes_per_run": (writes.calls - counts[1]) / runs,
            "files_per_run": (files.calls - counts[2]) / runs,
        }
        fire.cancel()
        task.cancel()
        await asyncio.gather(task, fire, return_exceptions=True)
    return result


async def _leader(
    state: Any, jobs: list[str], rate: int, lookahead: float, timer: Counted, clock: Any
) -> None:
    """Fire each job once a second, its phase spread over the second, `lookahead` s ahead."""
    from raftsched.commands import CommandType, encode

    def fire_until(until_ms: int, nxt: dict[str, int]) -> bytes:
        fires = []
        for job, due in nxt.items():
            if due < until_ms:
                inc = state.jobs[job].incarnation
                fires.append(
                    {
                        "job_id": job,
                        "incarnation": inc,
                        "nominal_ms": due,
                        "due_ms": due,
                        "nodes": ["n2"],
                        "next_nominal_ms": due + 1000,
                    }
                )
        for f in fires:
            nxt[f["job_id"]] = f["nominal_ms"] + 1000
        return encode(
            CommandType.FIRE_RUNS, {"term": 1, "now_ms": clock.now_ms(), "fires": fires, "skips": []}
        )

    start = clock.now_ms() + 200
    nxt = {job: start + i * 1000 // rate for i, job in enumerate(jobs)}
    build = timer.wrap(fire_until)
    while True:
        data = build(clock.now_ms() + int(lookahead * 1000), nxt)
        state.apply(data)
        await asyncio.sleep(LEADER_PERIOD_S)


# ---------------------------------------------------------------- the table


COLUMNS = (
    ("runs_per_s", "runs/s", "{:,.0f}"),
    ("worker_us_per_run", "worker µs/run", "{:,.1f}"),
    ("reconcile_us_per_run", "reconcile µs/run", "{:,.1f}"),
    ("reconcile_calls_per_s", "reconciles/s", "{:,.1f}"),
    ("writes_per_run", "os.write/run", "{:.3f}"),
    ("files_per_run", "files/run", "{:.3f}"),
    ("state_us_per_run", "state µs/run", "{:,.1f}"),
    ("cpu_us_per_run", "process µs/run", "{:,.1f}"),
)


def report(results: dict[str, list[dict[str, float]]], args: argparse.Namespace) -> None:
    done = {name: [r for r in runs if r["runs"] == r["runs"]] for name, runs in results.items()}  # not NaN
    medians = {
        name: {
            key: statistics.median(r[key] for r in runs) if runs else float("nan") for key, _, _ in COLUMNS
        }
        for name, runs in done.items()
    }
    for name, runs in results.items():
        if len(done[name]) < len(runs):
            print(f"{name}: {len(runs) - len(done[name])} of {len(runs)} measurements never ended (left out)")
    print(
        f"worker cost per run: {args.rate} runs/s on the node, lookahead {args.lookahead} s, window "
        f"{args.seconds} s, medians of {args.repeats} (interleaved); "
        "worker = process CPU - state apply - stand-in leader"
    )
    header = ["revision", *(label for _, label, _ in COLUMNS)]
    rows = [[name, *(fmt.format(medians[name][key]) for key, _, fmt in COLUMNS)] for name in medians]
    ratios: dict[str, float] = {}
    if "before" in medians:
        for key, _, _ in COLUMNS:
            b = medians["before"][key]
            ratios[key] = medians["after"][key] / b if b else float("nan")
        rows.append(["after/before", *(f"{ratios[key]:.2f}x" for key, _, _ in COLUMNS)])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print(
            "  ".join(
                str(c).ljust(w) if i == 0 else str(c).rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    summary = {
        "rate": args.rate,
        "seconds": args.seconds,
        "repeats": args.repeats,
        "medians": medians,
        "ratios": ratios,
        "runs": {name: [round(r["worker_us_per_run"], 1) for r in runs] for name, runs in results.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
