"""A raftsched node as the bench runs it: pinned to a snapshot of the code, optionally counting calls.

    BENCH_CODE_DIR=/tmp/x BENCH_COUNTS_FILE=/tmp/n1.json python -m benchlib.node node --config ... --node n1

- `BENCH_CODE_DIR`: a directory holding a `raftsched/` package (the bench exports the revision it
  measures there with `git archive`), imported instead of the editable install: the nodes of one
  bench run all run the same code even while someone edits the work tree.
- `BENCH_COUNTS_FILE`: wrap the functions in TARGETS with a counter (calls, and for plain
  functions the time inside, by perf_counter); a daemon thread writes the counters as JSON to that
  file every second, so the bench can take the difference over its window. The wrappers cost ~1 us
  a call: a counting run is for call counts, not for lateness. Targets that do not exist (the code
  moves) are skipped and listed under "_missing".

Then runs `raftsched.cli.main` unchanged.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

TARGETS = (
    "raftsched.scheduler:Scheduler.tick",
    "raftsched.scheduler:Scheduler.plan",
    "raftsched.scheduler:Scheduler.fire_due",
    "raftsched.scheduler:Scheduler.watch_nodes",
    "raftsched.scheduler:Scheduler.reassign_from_down_nodes",
    "raftsched.scheduler:plan_job",
    "raftsched.routing:NodeLoad.pick",
    "raftsched.triggers:next_fire_ms",
    "raftsched.worker:Worker.reconcile",
    "raftsched.worker:Worker._drop_stale",
    "raftsched.worker:Worker._adopt",
    "raftsched.worker:Worker.flush_reports",
    "raftsched.worker:Worker._send",
    "raftsched.worker:Worker._run_task",
    "raftsched.worker:prune_outputs",
    "raftsched.attempts:AttemptJournal._append",
    "raftsched.executors.http:HttpExecutor.run",
    "raftsched.executors.base:OutputSink.__enter__",
    "raftsched.state:State.apply",
    "raftsched.state:State.active_runs_of",
    "raftsched.state:State.candidates",
    "raftsched.replication:Replicator.propose",
    "raftsched.replication:Replicator.status",
    "raftsched.node:Node._on_applied",
    "raftsched.node:Node._wake",
)

COUNTS: dict[str, list[float]] = {}
MISSING: list[str] = []


def _wrap(fn: Callable[..., Any], key: str) -> Callable[..., Any]:
    slot = COUNTS.setdefault(key, [0, 0.0])
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            slot[0] += 1
            return await fn(*args, **kwargs)

        return counted_async

    @functools.wraps(fn)
    def counted(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            slot[0] += 1
            slot[1] += time.perf_counter() - t

    return counted


def install() -> None:
    for target in TARGETS:
        module_name, _, path = target.partition(":")
        try:
            owner: Any = importlib.import_module(module_name)
            *parents, name = path.split(".")
            for part in parents:
                owner = getattr(owner, part)
            fn = inspect.getattr_static(owner, name)
        except (ImportError, AttributeError):
            MISSING.append(target)
            continue
        if isinstance(fn, staticmethod | classmethod):
            MISSING.append(target)
            continue
        setattr(owner, name, _wrap(fn, target))


def dump_forever(path: str) -> None:
    while True:
        data = {
            "t": time.time(),
            "_missing": MISSING,
            **{k: [int(v[0]), round(v[1], 6)] for k, v in COUNTS.items()},
        }
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        time.sleep(1.0)


def pin(code_dir: str) -> None:
    """Import raftsched from `code_dir`: drop the editable install's finder, put the dir first."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path.insert(0, code_dir)
    for name in [n for n in sys.modules if n == "raftsched" or n.startswith("raftsched.")]:
        del sys.modules[name]


def main() -> int:
    code_dir = os.environ.get("BENCH_CODE_DIR")
    if code_dir:
        pin(code_dir)
    path = os.environ.get("BENCH_COUNTS_FILE")
    if path:
        install()
        threading.Thread(target=dump_forever, args=(path,), daemon=True, name="bench-counts").start()
    from raftsched.cli import main as node_main

    sys.argv = ["raftsched", *sys.argv[1:]]
    return int(node_main() or 0)


if __name__ == "__main__":
    sys.exit(main())
