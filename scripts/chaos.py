"""The long chaos run: every workload at once under a seeded schedule of faults, then the checkers.

    python scripts/chaos.py --nodes 5 --duration 120 --seed 1 \\
        --faults kill,pause,partition,restart,clock,membership,journal --out chaos-out

Starts N nodes on 127.0.0.1 (each under its own test gid; free ports; a temporary directory), runs
metronome, 6-field cron, one-shot `at`, overlap-policy (forbid/allow/replace/queue) and
at_most_once jobs running the ground-truth task, an HTTP job calling a sink, and concurrent admin
clients (create / CAS update / pause / resume / delete on random nodes). Meanwhile it injects the
faults of a schedule drawn from the seed (the same seed gives the same schedule, printed first):

    kill        kill -9 the leader or a follower, restart it from its data dir after a hold
    pause       SIGSTOP the leader or a follower past the election timeout, then SIGCONT
    partition   isolate a node, split a minority from the majority, or cut one direction between a
                node and the leader (iptables on lo), then heal
    restart     SIGTERM one node and start it again, or kill -9 the whole cluster and restart it
    clock       restart a node with a constant clock offset (libfaketime), kept to the end
    membership  add a spare node through POST /v1/nodes, later drain and remove it
    journal     stop a follower, truncate or flip bytes in its raft.journal, start it, record
                whether it refused to start, recovered, or diverged

The nodes compact every `--compact-every` entries (300; the default 5,000 would not come within a
run), so snapshots are written, loaded after restarts and installed on lagging nodes under faults.

At the end it heals everything, pauses every job, waits for the runs in flight, probes bad input,
collects every node's records and digest, runs the ten checkers (tests/chaoskit/checkers.py),
prints a table, writes `report.json` and `history.json` into --out, and exits 1 on any invariant
violation (2 when the run itself could not be carried out). Every process it starts it stops by
pid, and every iptables rule it adds it removes, also on Ctrl-C or SIGTERM. Partitions need root
and iptables, clock offsets libfaketime: `scripts/install-chaos-tools` installs both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from chaoskit.checkers import History, check_all  # noqa: E402
from chaoskit.figures import figures, table  # noqa: E402
from chaoskit.harness import clock_unavailable, partition_unavailable  # noqa: E402
from chaoskit.scenario import ChaosRun  # noqa: E402

FAULTS = ("kill", "pause", "partition", "restart", "clock", "membership", "journal")


def fault_schedule(seed: int, duration_s: float, faults: list[str]) -> list[dict[str, Any]]:
    """The faults to inject, drawn from the seed alone: the same seed, the same schedule."""
    rng = random.Random(seed)
    steps: list[dict[str, Any]] = []
    t = 8.0
    spare_in = False
    order = rng.sample(faults, len(faults))  # every fault class once first, in a seeded order
    while t < duration_s - 12:
        kind = order.pop(0) if order else rng.choice(faults)
        step: dict[str, Any] = {"at_s": round(t, 1), "fault": kind, "hold_s": round(rng.uniform(2.0, 6.0), 1)}
        step["which"] = rng.choice(["leader", "leader", "follower"])
        if kind == "partition":
            step["kind"] = rng.choice(["isolate", "split", "oneway"])
            if step["kind"] == "oneway":
                step["direction"] = rng.choice(["mute", "deaf"])
        elif kind == "restart":
            step["kind"] = "restart_all" if rng.random() < 0.3 else "restart"
        elif kind == "membership":
            step["kind"] = "remove_spare" if spare_in else "add_spare"
            spare_in = not spare_in
        elif kind == "journal":
            step["kind"], step["which"], step["mode"] = (
                "journal",
                "follower",
                rng.choice(["truncate", "flip"]),
            )
        elif kind == "clock":
            step["kind"], step["offset_s"] = "clock", rng.choice([-0.8, -0.4, 0.4, 0.8])
        else:
            step["kind"] = kind
        steps.append(step)
        t += (
            step["hold_s"]
            + rng.uniform(4.0, 8.0)
            + (6.0 if step["kind"] in ("restart_all", "journal") else 0.0)
        )
    return steps


def run_step(run: ChaosRun, step: dict[str, Any]) -> None:
    kind = step["kind"]
    if kind == "add_spare":
        run.add_spare()
    elif kind == "remove_spare":
        added = [n for n in run.members if n not in run.cluster.ids[: run.size]]
        if added:
            run.remove_member(added[-1])
    else:
        run.fault(
            kind,
            step["which"],
            step["hold_s"],
            mode=step.get("mode"),
            offset_s=step.get("offset_s"),
            direction=step.get("direction"),
        )


def _faults(parser: argparse.ArgumentParser, raw: str) -> list[str]:
    faults = [f.strip() for f in raw.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}; choose from {','.join(FAULTS)}")
    for needs, why in (("partition", partition_unavailable()), ("clock", clock_unavailable())):
        if needs in faults and why:
            print(f"skipping fault {needs!r}: {why}", flush=True)
            faults.remove(needs)
    if not faults:
        parser.error("no fault left to inject")
    return faults


def _print_verdict(report: dict[str, Any], results: list[Any], out: Path) -> int:
    print()
    print(table(report))
    for result in results:
        for v in result.violations[:10]:
            print(f"VIOLATION {result.name}: {json.dumps(v, default=str)[:400]}")
    for j in report.get("journal") or []:
        print(f"journal {j['mode']} on {j['node']}: {j['result']} (exit {j['exit']})")
    bad = any(r.violations for r in results)
    print(f"report: {out / 'report.json'}")
    print("VIOLATIONS FOUND" if bad else "OK: every invariant held", flush=True)
    return 1 if bad else 0


def recheck(path: Path, out: Path) -> int:
    """The checkers are pure: run them again over a recorded history (after a checker fix)."""
    history = History.from_dict(json.loads(path.read_text()))
    results = check_all(history)
    old = (
        json.loads((path.parent / "report.json").read_text())
        if (path.parent / "report.json").exists()
        else {}
    )
    keep = {k: old.get(k) for k in ("seed", "nodes", "duration_s", "fault_count", "resources", "journal")}
    report = figures(history, results, **keep)
    report["violation_details"] = {r.name: r.violations[:50] for r in results if r.violations}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return _print_verdict(report, results, out)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5, choices=(3, 5))
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load and faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--out", type=Path, default=Path("chaos-out"))
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, data, ground truth)"
    )
    parser.add_argument(
        "--no-reschedule",
        action="store_true",
        help="admin updates keep each job's schedule (avoids the known edit bug, see report)",
    )
    parser.add_argument(
        "--compact-every",
        type=int,
        default=300,
        help="log_compaction_min_entries: small, so that snapshots (and their installs) happen under faults",
    )
    parser.add_argument("--src", type=Path, help="run the nodes from this checkout (e.g. a git worktree)")
    parser.add_argument("--recheck", type=Path, help="only run the checkers again on a recorded history.json")
    args = parser.parse_args()
    if args.recheck:
        return recheck(args.recheck, args.out)
    faults = _faults(parser, args.faults)
    if args.src:
        os.environ["RAFTSCHED_CHAOS_SRC"] = str(args.src.resolve())
    steps = fault_schedule(args.seed, args.duration, faults)
    print(f"chaos: {args.nodes} nodes, {args.duration:g} s, seed {args.seed}, faults {','.join(faults)}")
    for step in steps:
        print(f"  t={step['at_s']:6.1f}s  {step['kind']:<12} {step['which']:<9} hold {step['hold_s']} s")

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    spares = min(3, sum(1 for s in steps if s["kind"] == "add_spare"))
    run = ChaosRun(
        size=args.nodes,
        spares=spares,
        seed=args.seed,
        reschedule=not args.no_reschedule,
        cluster_keys={"log_compaction_min_entries": args.compact_every},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] | None = None
    try:
        run.start()
        began = time.monotonic()
        for step in steps:
            delay = step["at_s"] - (time.monotonic() - began)
            if delay > 0:
                time.sleep(delay)
            try:
                run_step(run, step)
            except (TimeoutError, AssertionError, OSError) as exc:
                run.say(f"  step {step['kind']} could not complete: {exc!s:.300}")
        left = args.duration - (time.monotonic() - began)
        if left > 0:
            time.sleep(left)
        run.say("healing, quiescing, collecting")
        history, results, report = run.finish()
        report.update(
            duration_s=args.duration,
            faults=faults,
            schedule=steps,
            events=run.events,
            violation_details={r.name: r.violations[:50] for r in results if r.violations},
            counts={r.name: r.counts for r in results},
        )
        (args.out / "history.json").write_text(json.dumps(history.to_dict(), default=str))
        (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); cleaning up", flush=True)
        return 2
    except Exception:  # noqa: BLE001 - report, clean up, and say the run itself failed
        traceback.print_exc()
        print(run.cluster.logs()[-6000:], flush=True)
        return 2
    finally:
        run.close(keep=args.keep)
        if args.keep:
            print(f"run directory kept: {run.root}")
    return _print_verdict(report, results, args.out)


if __name__ == "__main__":
    sys.exit(main())
