"""Per-run cost of starting a process task: `--runs` sequential runs of `true` through the executor.

Each source tree is measured in a process of its own (the tree first on PYTHONPATH), the trees
interleaved `--repeats` times; the table shows the median and 90th percentile latency of one
run (from `ShellExecutor.run` called to returned), then one JSON line.

    git archive <rev> | tar -x -C /tmp/base-start
    python scripts/bench_task_start.py --before /tmp/base-start --after . --runs 200
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

_MEASURE = "--measure"


async def _measure(runs: int, kind: str) -> list[float]:
    from raftsched.executors import ExecPolicy, RunContext, executor_for
    from raftsched.model import TaskSpec, TaskType

    ctx = RunContext(job_id="bench", run_id="bench@1", attempt=1, scheduled_ms=0, node_id="n1")
    if kind == "shell":
        task = TaskSpec(type=TaskType.SHELL, command=["true"])
    else:
        task = TaskSpec(type=TaskType.PYTHON, callable="raftsched.ids:stable_hash")
    executor = executor_for(kind, ExecPolicy(python_allow=("raftsched.ids",)))
    latencies = []
    for _ in range(runs):
        started = time.perf_counter()
        result = await executor.run(task, ctx, timeout_s=30, output_path=None)
        latencies.append(time.perf_counter() - started)
        if result.outcome != "succeeded":
            raise SystemExit(f"run failed: {result}")
    return latencies


def _one(tree: Path, runs: int, kind: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
    out = subprocess.run(
        [sys.executable, __file__, _MEASURE, str(runs), kind], env=env, capture_output=True, check=True
    )
    values: list[float] = json.loads(out.stdout)
    return values


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == _MEASURE:
        print(json.dumps(asyncio.run(_measure(int(sys.argv[2]), sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--before", type=Path)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kind", choices=("shell", "python"), default="shell")
    args = parser.parse_args()
    trees = {"before": args.before, "after": args.after} if args.before else {"after": args.after}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.repeats):
        for name, tree in trees.items():
            samples[name] += _one(tree, args.runs, args.kind)
    summary = {name: _summary(values) for name, values in samples.items()}
    for name, row in summary.items():
        print(f"{name:>7}: median {row['median_ms']:.2f} ms, p90 {row['p90_ms']:.2f} ms ({row['n']} runs)")
    print(json.dumps({"kind": args.kind, **summary}))


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(len(ordered) * 0.9)] * 1000,
        "n": len(ordered),
    }


if __name__ == "__main__":
    main()
