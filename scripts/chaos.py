"""The long chaos run: every workload at once under a seeded schedule of faults, then the checkers.

    python scripts/chaos.py --nodes 5 --duration 120 --seed 1 \\
        --faults kill,pause,partition,restart,clock,membership,journal --out chaos-out
    python scripts/chaos.py --nodes 3 --duration 60 --seeds 100..119 --out chaos-reports

`--seeds A..B` runs a campaign, one seed after the other (one pass proves little): each seed's
report is written as it finishes (`seed-N.json`, with `seed-N.history.json` for `--recheck`),
so a campaign that stops resumes where it was (seeds with a report are skipped; `--force` runs
them again); a summary table rebuilt from every report in --out is printed and written to
`summary.md`; `--fail-fast` stops at the first seed with a violation.

Starts N nodes on 127.0.0.1 (each under its own test gid; free ports; a temporary directory), runs
metronome, 6-field cron, one-shot `at`, overlap-policy (forbid/allow/replace/queue) and
at_most_once jobs running the ground-truth task, an HTTP job calling a sink, concurrent admin
clients (create / CAS update / pause / resume / delete on random nodes), and slot races (pauses,
resumes, edits and deletes of jobs of every overlap policy and of an at_most_once job, sent a few
ms to `lookahead_s` before a due slot; some jobs are left paused to the end). Meanwhile it injects the
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
collects every node's records and digest, runs the ten checkers (tests/chaoskit/checkers.py;
invariant 7 checks that admin writes are linearizable), prints a table, writes `report.json` and
`history.json` into --out, and exits 1 on any invariant violation (2 when the run itself could not
be carried out; a campaign: 2 if any seed could not, else 1 if any seed found a violation). Every
process it starts it stops by pid, and every iptables rule it adds it removes, also on Ctrl-C or
SIGTERM. Partitions need root and iptables, clock offsets libfaketime: `scripts/install-chaos-tools`
installs both.
"""

from __future__ import annotations

import argparse
import contextlib
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
    for hang in report.get("stop_hangs") or []:
        print(f"STOP HANG {hang['node']}: {hang['what']} (not an invariant; see its log)")
    bad = any(r.violations for r in results)
    print(f"report: {out}")
    print("VIOLATIONS FOUND" if bad else "OK: every invariant held", flush=True)
    return 1 if bad else 0


def recheck(path: Path, out: Path) -> int:
    """The checkers are pure: run them again over a recorded history (after a checker fix)."""
    history = History.from_dict(json.loads(path.read_text()))
    results = check_all(history)
    seed_report = path.with_name(path.name.replace(".history", ""))  # seed-N.history.json -> seed-N.json
    before = seed_report if seed_report != path else path.parent / "report.json"
    old = json.loads(before.read_text()) if before.exists() else {}
    keep = {k: old.get(k) for k in ("seed", "nodes", "duration_s", "fault_count", "resources", "journal")}
    report = figures(history, results, **keep)
    report["violation_details"] = {r.name: r.violations[:50] for r in results if r.violations}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return _print_verdict(report, results, out / "report.json")


def run_seed(
    args: argparse.Namespace, seed: int, faults: list[str], report_path: Path, history_path: Path
) -> int:
    """One chaos run: writes its report (and history), prints its verdict; returns the exit code
    (0 every invariant held, 1 a violation, 2 the run itself could not be carried out)."""
    steps = fault_schedule(seed, args.duration, faults)
    print(f"chaos: {args.nodes} nodes, {args.duration:g} s, seed {seed}, faults {','.join(faults)}")
    for step in steps:
        print(f"  t={step['at_s']:6.1f}s  {step['kind']:<12} {step['which']:<9} hold {step['hold_s']} s")
    spares = min(3, sum(1 for s in steps if s["kind"] == "add_spare"))
    run = ChaosRun(
        size=args.nodes,
        spares=spares,
        seed=seed,
        reschedule=not args.no_reschedule,
        cluster_keys={"log_compaction_min_entries": args.compact_every},
    )
    code = 2  # until a verdict
    try:
        history, results, report = _drive(run, args.duration, steps)
        report.update(
            duration_s=args.duration,
            size=args.nodes,
            faults=faults,
            schedule=steps,
            events=run.events,
            violation_details={r.name: r.violations[:50] for r in results if r.violations},
            counts={r.name: r.counts for r in results},
        )
        history_path.write_text(json.dumps(history.to_dict(), default=str))
        report_path.write_text(json.dumps(report, indent=2, default=str))
        code = _print_verdict(report, results, report_path)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - report, clean up, and say the run itself failed
        traceback.print_exc()
        print(run.cluster.logs()[-6000:], flush=True)
        failed = {"seed": seed, "nodes": args.nodes, "duration_s": args.duration, "error": repr(exc)[:2000]}
        report_path.write_text(json.dumps({**failed, "events": run.events}, indent=2))
        code = 2
    finally:
        if code != 0 or run.stop_hangs:  # the node logs are the evidence: keep them
            logs = report_path.with_name(report_path.stem + ".logs")
            run.save_logs(logs)
            print(f"node logs: {logs}", flush=True)
        run.close(keep=args.keep)
        if args.keep:
            print(f"run directory kept: {run.root}")
    return code


def _drive(
    run: ChaosRun, duration_s: float, steps: list[dict[str, Any]]
) -> tuple[History, list[Any], dict[str, Any]]:
    """Start the run, inject the schedule's faults at their times, then heal and judge."""
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
    left = duration_s - (time.monotonic() - began)
    if left > 0:
        time.sleep(left)
    run.say("healing, quiescing, collecting")
    return run.finish()


# ---------------------------------------------------------------- campaigns


def parse_seeds(raw: str) -> list[int]:
    """`A..B` (both included) or one seed."""
    low, sep, high = raw.partition("..")
    seeds = list(range(int(low), int(high) + 1)) if sep else [int(low)]
    if not seeds:
        raise ValueError(f"no seed in {raw!r}")
    return seeds


def _done(path: Path) -> bool:
    """A seed is done when its report exists and holds a verdict (not the error of a failed run)."""
    try:
        return "violations" in json.loads(path.read_text())
    except (OSError, ValueError):
        return False


def campaign(args: argparse.Namespace, faults: list[str]) -> int:
    """Run every seed in turn (skipping those already reported), then print the summary."""
    out: Path = args.out
    codes = []
    for seed in parse_seeds(args.seeds):
        report_path = out / f"seed-{seed}.json"
        if _done(report_path) and not args.force:
            print(f"seed {seed}: reported already ({report_path}); --force to run it again", flush=True)
            continue
        code = run_seed(args, seed, faults, report_path, out / f"seed-{seed}.history.json")
        codes.append(code)
        if code == 1 and args.fail_fast:
            print(f"seed {seed} found a violation: stopping (--fail-fast)", flush=True)
            break
    text = summary(out)
    print()
    print(text)
    (out / "summary.md").write_text(text + "\n")
    print(f"summary: {out / 'summary.md'}", flush=True)
    return 2 if 2 in codes else max([0, *codes])


SUMMARY_COLUMNS = (
    "seed",
    "nodes",
    "duration s",
    "slots due",
    "runs",
    "duplicates",
    "lost",
    "missed / skipped",
    "lost ack writes",
    "violations",
)


def summary_row(report: dict[str, Any]) -> list[Any]:
    """One seed's figures in SUMMARY_COLUMNS order; a run that failed says so in `violations`."""
    if "error" in report:
        return [report.get("seed"), report.get("nodes"), report.get("duration_s"), *[""] * 6, "RUN FAILED"]
    broken = {name.split()[0]: n for name, n in (report.get("violations") or {}).items() if n}
    return [
        report.get("seed"),
        _nodes(report),
        report.get("duration_s"),
        report.get("slots_due") or 0,
        report.get("executed") or 0,
        report.get("duplicate_executions") or 0,
        report.get("lost") or 0,
        f"{report.get('missed') or 0} / {report.get('skipped') or 0}",
        report.get("lost_writes") or 0,
        ", ".join([*(f"inv {k} x{n}" for k, n in broken.items()), *_hangs(report)]) or "0",
    ]


def _nodes(report: dict[str, Any]) -> str:
    """The cluster's size, `+k` for spares still members at the end (membership faults)."""
    size, members = report.get("size"), report.get("nodes")
    if size is None or members is None or members <= size:
        return str(members if size is None else size)
    return f"{size}+{members - size}"


def _hangs(report: dict[str, Any]) -> list[str]:
    """Nodes that did not stop on SIGTERM in time: no invariant, but a finding to show."""
    hangs = report.get("stop_hangs") or []
    return [f"stop hang x{len(hangs)}"] if hangs else []


def summary(out: Path) -> str:
    """The campaign's markdown table, rebuilt from every seed report in `out`, with totals."""
    reports = []
    for path in out.glob("seed-*.json"):
        if not path.name.endswith(".history.json"):
            with contextlib.suppress(OSError, ValueError):
                reports.append(json.loads(path.read_text()))
    reports.sort(key=lambda r: int(r.get("seed") or 0))
    rows = [summary_row(r) for r in reports]
    ok = [r for r in reports if "error" not in r]
    totals: list[Any] = [
        f"total ({len(reports)} seeds)",
        "",
        sum(float(r.get("duration_s") or 0) for r in ok),
    ]
    totals += [
        sum(int(r.get(k) or 0) for r in ok) for k in ("slots_due", "executed", "duplicate_executions", "lost")
    ]
    totals.append(
        f"{sum(int(r.get('missed') or 0) for r in ok)} / {sum(int(r.get('skipped') or 0) for r in ok)}"
    )
    totals.append(sum(int(r.get("lost_writes") or 0) for r in ok))
    bad = sum(1 for r in ok if any((r.get("violations") or {}).values()))
    failed = len(reports) - len(ok)
    totals.append(f"{bad} seeds with violations" + (f", {failed} runs failed" if failed else ""))
    lines = ["| " + " | ".join(SUMMARY_COLUMNS) + " |", "|" + "---|" * len(SUMMARY_COLUMNS)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in [*rows, totals]]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=5, choices=(3, 5))
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of load and faults")
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=1)
    seeds.add_argument("--seeds", help="a campaign: seeds A..B (both included), one after the other")
    parser.add_argument("--force", action="store_true", help="campaign: run again seeds that have a report")
    parser.add_argument("--fail-fast", action="store_true", help="campaign: stop at the first violation")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument(
        "--out", type=Path, help="where reports go (default: chaos-out, or chaos-reports for --seeds)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the run directory (logs, data, ground truth)"
    )
    parser.add_argument(
        "--no-reschedule",
        action="store_true",
        help="admin updates and slot races keep each job's schedule (edits change its description only): "
        "avoids the edit bug pinned by test_an_edit_after_a_slot_fell_due_unfired_loses_no_slot",
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
    args.out = args.out or Path("chaos-reports" if args.seeds else "chaos-out")
    if args.recheck:
        return recheck(args.recheck, args.out)
    if args.seeds:
        try:
            parse_seeds(args.seeds)
        except ValueError:
            parser.error(f"--seeds wants A..B (integers), not {args.seeds!r}")
    faults = _faults(parser, args.faults)
    if args.src:
        os.environ["RAFTSCHED_CHAOS_SRC"] = str(args.src.resolve())

    def on_signal(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        if args.seeds:
            return campaign(args, faults)
        return run_seed(args, args.seed, faults, args.out / "report.json", args.out / "history.json")
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); cleaned up", flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
