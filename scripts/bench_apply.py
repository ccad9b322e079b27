"""Micro benchmark of the replicated state machine: the cost of applying committed commands.

    python scripts/bench_apply.py                 # allow + forbid streams, 100,000-job table
    python scripts/bench_apply.py --jobs 200 --seconds 60 --big-jobs 20000 --repeat 1

Every node applies every command, so this cost is paid once per run on every node (see
docs/performance.md, "What limits throughput", items 3 and 10). The command streams are encoded
before the clock starts: only `State.apply` is timed, in CPU time of the process (the machine is
shared; wall time moves with the others' load).

- `allow` / `forbid`: `--jobs` jobs fire once a second for `--seconds` seconds on three nodes. The
  leader fires in batches (`--fire-batch` slots per command); workers report starts and finishes in
  batches (`--report-batch` items per command). `allow` fires three slots ahead (fire-ahead, as with
  `lookahead_s = 3`); `forbid` fires each slot just before it is due, and one job in ten runs longer
  than a second, so its next slot is recorded skipped. History per job is trimmed at 100 runs.
- `big`: `--big-jobs` jobs restored in commands of 500 (hourly crons and `every` jobs, shell and
  HTTP tasks), nothing due: traced bytes per job, the snapshot's dump and load times and the traced
  bytes per job of the loaded copy (a node that installed a snapshot).

Prints a table and, last, one JSON line. To compare two versions of the code, run each a few times
with `--label` (alternating), collect the last lines in a file, and `--compare FILE`:

    for i in 1 2 3; do for v in old:/tmp/old new:.; do
      PYTHONPATH=${v#*:} python scripts/bench_apply.py --label ${v%%:*} | tail -1 >> runs.jsonl
    done; done; python scripts/bench_apply.py --compare runs.jsonl
 `dump_sha` is the SHA-256 of the state's snapshot after
each stream: two versions of the code that apply the same commands to the same state print the same.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from raftsched.commands import CommandType, encode
from raftsched.state import State

T0 = 1_800_000_000_000
NODES = ("n1", "n2", "n3")
Body = dict[str, Any]


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _spec(i: int, overlap: str) -> Body:
    if i % 2:
        task: Body = {"type": "http", "url": f"http://127.0.0.1:9/job/{i}"}
    else:
        task = {"type": "shell", "command": ["true", str(i)]}
    schedule: Body = {"cron": f"{i % 60} * * * *"} if i % 3 == 0 else {"every": 1}
    return {"id": f"job-{i:06d}", "schedule": schedule, "task": task, "overlap": overlap}


def _setup(jobs: list[Body], now_ms: int, chunk: int = 500) -> list[bytes]:
    out = [
        encode(
            CommandType.REGISTER_NODE,
            {
                "node": n,
                "http": f"http://{n}",
                "raft": f"{n}:1",
                "tags": {},
                "capacity": 256,
                "now_ms": now_ms,
            },
        )
        for n in NODES
    ]
    out.append(encode(CommandType.BEGIN_TERM, {"term": 1, "leader": NODES[0], "now_ms": now_ms}))
    for part in _chunks(jobs, chunk):
        items = [{"spec": s, "created_ms": now_ms, "next_nominal_ms": now_ms + 1000} for s in part]
        out.append(encode(CommandType.RESTORE_JOBS, {"now_ms": now_ms, "actor": "bench", "jobs": items}))
    return out


class Stream:
    """The encoded commands of one workload, and how many runs they fire."""

    def __init__(self, args: argparse.Namespace, overlap: str) -> None:
        self.args = args
        self.ids = [f"job-{i:06d}" for i in range(args.jobs)]
        self.commands = _setup([_spec(i, overlap) for i in range(args.jobs)], T0)
        self.runs = 0

    def fire(self, slot: int, ahead_ms: int) -> None:
        nominal = T0 + 1000 * slot
        items = [
            {
                "job_id": jid,
                "incarnation": i + 1,
                "nominal_ms": nominal,
                "due_ms": nominal,
                "nodes": [NODES[i % 3]],
                "next_nominal_ms": nominal + 1000,
            }
            for i, jid in enumerate(self.ids)
        ]
        for part in _chunks(items, self.args.fire_batch):
            body = {"term": 1, "now_ms": nominal - ahead_ms, "fires": part, "skips": []}
            self.commands.append(encode(CommandType.FIRE_RUNS, body))
        self.runs += len(items)

    def report(self, slot: int, which: Callable[[int], bool], *, finish: bool) -> None:
        nominal = T0 + 1000 * slot
        for n, node in enumerate(NODES):
            items = [
                self._item(jid, nominal, finish) for i, jid in enumerate(self.ids) if i % 3 == n and which(i)
            ]
            kind = CommandType.FINISH_RUNS if finish else CommandType.START_RUNS
            for part in _chunks(items, self.args.report_batch):
                body = {"node": node, "now_ms": nominal + (20 if finish else 2), "items": part}
                self.commands.append(encode(kind, body))

    @staticmethod
    def _item(job_id: str, nominal: int, finish: bool) -> Body:
        item: Body = {"run_id": f"{job_id}@{nominal}", "attempt": 1, "started_ms": nominal + 1}
        if finish:
            item.update(outcome="succeeded", finished_ms=nominal + 15, exit_code=0, http_status=None)
            item.update(error=None, output="ok\n")
        return item


def allow_stream(args: argparse.Namespace) -> Stream:
    """Fire-ahead: slot s+3 is fired while slot s runs (three pending runs per job)."""
    stream = Stream(args, "allow")
    for slot in range(1, 4):
        stream.fire(slot, 500)
    for slot in range(1, args.seconds + 1):
        if slot + 3 <= args.seconds:
            stream.fire(slot + 3, 3000)
        stream.report(slot, lambda i: True, finish=False)
        stream.report(slot, lambda i: True, finish=True)
    return stream


def forbid_stream(args: argparse.Namespace) -> Stream:
    """Fired when due; one job in ten runs past its next slot, which is recorded skipped."""
    stream = Stream(args, "forbid")
    for slot in range(1, args.seconds + 1):
        stream.fire(slot, 200)
        if slot % 2 == 0:  # the long runs of the slot before end after this fire (which skipped)
            stream.report(slot - 1, lambda i: i % 10 == 0, finish=True)
        stream.report(slot, lambda i: True, finish=False)
        stream.report(slot, lambda i: i % 10 != 0, finish=True)
    return stream


def time_stream(stream: Stream) -> tuple[float, str]:
    state = State()
    gc.collect()
    apply = state.apply
    start = time.process_time()  # CPU time: less disturbed than wall time by others on the cores
    for data in stream.commands:
        apply(data)
    elapsed = time.process_time() - start
    return elapsed, hashlib.sha256(state.dump()).hexdigest()


def cpu(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, build in (("allow", allow_stream), ("forbid", forbid_stream)):
        stream = build(args)
        timings, sha = [], ""
        for _ in range(args.repeat):
            elapsed, sha = time_stream(stream)
            timings.append(elapsed)
        seconds = statistics.median(timings)
        out[name] = {
            "entries": len(stream.commands),
            "runs": stream.runs,
            "us_per_run": round(seconds / stream.runs * 1e6, 2),
            "us_per_entry": round(seconds / len(stream.commands) * 1e6, 1),
            "seconds": [round(t, 3) for t in timings],
            "dump_sha": sha[:16],
        }
    return out


def _traced(build: Callable[[], State]) -> tuple[State, int]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    state = build()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return state, after - before


def big(args: argparse.Namespace) -> dict[str, Any]:
    commands = _setup([_spec(i, "forbid") for i in range(args.big_jobs)], T0)

    def build() -> State:
        state = State()
        for data in commands:
            state.apply(data)
        return state

    start = time.process_time()
    build()
    restore_s = time.process_time() - start
    state, built = _traced(build)
    dumps, loads, snapshot = [], [], b""
    for _ in range(args.repeat):
        start = time.process_time()
        snapshot = state.dump()
        dumps.append(time.process_time() - start)
        start = time.process_time()
        State().load(snapshot)
        loads.append(time.process_time() - start)

    def load() -> State:
        loaded = State()
        loaded.load(snapshot)
        return loaded

    loaded, installed = _traced(load)
    assert loaded.dump() == snapshot
    return {
        "jobs": args.big_jobs,
        "bytes_per_job": round(built / args.big_jobs),
        "loaded_bytes_per_job": round(installed / args.big_jobs),
        "restore_s": round(restore_s, 3),
        "dump_s": round(statistics.median(dumps), 3),
        "load_s": round(statistics.median(loads), 3),
        "snapshot_bytes": len(snapshot),
    }


def compare(path: str) -> None:
    """Medians per label of the JSON lines in `path` (one per run), and new/old ratios."""
    runs: dict[str, list[dict[str, Any]]] = {}
    with open(path) as f:
        for line in f:
            if line.startswith("{"):
                run = json.loads(line)
                runs.setdefault(run["label"], []).append(run)
    metrics = {
        "allow us/run": lambda r: r["allow"]["us_per_run"],
        "forbid us/run": lambda r: r["forbid"]["us_per_run"],
        "big B/job": lambda r: r["big"]["bytes_per_job"],
        "big loaded B/job": lambda r: r["big"]["loaded_bytes_per_job"],
        "big restore s": lambda r: r["big"]["restore_s"],
        "big dump s": lambda r: r["big"]["dump_s"],
        "big load s": lambda r: r["big"]["load_s"],
        "bench RSS MB (end)": lambda r: r["rss_mb"],
    }
    labels = list(runs)
    medians = {
        k: {lb: statistics.median(m(r) for r in runs[lb]) for lb in labels} for k, m in metrics.items()
    }
    print(
        f"{'median of runs':<18}" + "".join(f"{lb + f' ({len(runs[lb])})':>14}" for lb in labels) + "   ratio"
    )
    for key, by_label in medians.items():
        ratio = by_label[labels[-1]] / by_label[labels[0]] if by_label[labels[0]] else float("nan")
        print(f"{key:<18}" + "".join(f"{by_label[lb]:>14,.2f}" for lb in labels) + f"   {ratio:.2f}x")
    print(json.dumps({"medians": medians, "runs": {lb: len(runs[lb]) for lb in labels}}))


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=150)
    parser.add_argument("--fire-batch", type=int, default=50)
    parser.add_argument("--report-batch", type=int, default=25)
    parser.add_argument("--big-jobs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--label", default="")
    parser.add_argument("--compare", metavar="JSONL", help="print the medians of earlier runs' JSON lines")
    args = parser.parse_args()
    if args.compare:
        compare(args.compare)
        return
    result: dict[str, Any] = {"label": args.label, "python": sys.version.split()[0], **cpu(args)}
    if args.big_jobs:
        result["big"] = big(args)
    result["rss_mb"] = round(_rss_mb(), 1)
    _print_table(result)
    print(json.dumps(result))


def _print_table(result: dict[str, Any]) -> None:
    print(
        f"{'stream':<8} {'entries':>8} {'runs':>8} {'us/run':>8} {'us/entry':>9}  CPU s (each repeat)    dump"
    )
    for name in ("allow", "forbid"):
        r = result[name]
        times = " ".join(f"{t:.2f}" for t in r["seconds"])
        print(
            f"{name:<8} {r['entries']:>8,} {r['runs']:>8,} {r['us_per_run']:>8.2f} {r['us_per_entry']:>9.1f}"
            f"  {times:<21}  {r['dump_sha']}"
        )
    if "big" in result:
        b = result["big"]
        print(
            f"big table: {b['jobs']:,} jobs, {b['bytes_per_job']:,} B/job built, "
            f"{b['loaded_bytes_per_job']:,} B/job loaded from a snapshot; restore {b['restore_s']} s, "
            f"dump {b['dump_s']} s, load {b['load_s']} s, snapshot {b['snapshot_bytes']:,} B"
        )


if __name__ == "__main__":
    main()
