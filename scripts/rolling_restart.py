"""Rolling restart of a live cluster under load, then a check that no slot was missed or doubled.

    python scripts/rolling_restart.py [--nodes 3] [--rounds 1] [--every 0.5] [--out DIR]

Starts N nodes on 127.0.0.1 (free ports, a temporary data dir), runs a metronome job that
calls an HTTP sink every `--every` seconds, then restarts every node one at a time: SIGTERM
(the node drains and exits), start again from the same data dir, wait until it is healthy and
has caught up. Afterwards every slot due must have run exactly once per attempt. Prints a table
and writes `rolling_restart.json`; exits 1 on a violation. Every process it starts it stops.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster import Cluster, Sink  # noqa: E402


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def restart_all(cluster: Cluster, rounds: int) -> list[dict[str, Any]]:
    steps = []
    for round_no in range(rounds):
        for node in cluster.ids:
            started = time.monotonic()
            code = cluster.stop(node)
            cluster.start(node)
            cluster.wait_healthy(timeout=60)
            cluster.wait_same_digest(timeout=60)
            steps.append(
                {
                    "round": round_no + 1,
                    "node": node,
                    "exit": code,
                    "seconds": round(time.monotonic() - started, 2),
                }
            )
            print(f"  restarted {node} (exit {code}) in {steps[-1]['seconds']} s", flush=True)
    return steps


def check(sink: Sink, created_ms: int, paused_ms: int, every_ms: int) -> dict[str, Any]:
    events = sink.for_job("metronome")
    executions = [(e["x-raftsched-run-id"], e["x-raftsched-attempt"]) for e in events]
    slots = {_ms(e["x-raftsched-scheduled-at"]) for e in events}
    due = [
        created_ms + k * every_ms
        for k in range(1, 1_000_000)
        if created_ms + k * every_ms <= paused_ms - 1000
    ]
    lateness = sorted(e["t"] * 1000 - _ms(e["x-raftsched-scheduled-at"]) for e in events)
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for e in events:
        key = (e["x-raftsched-run-id"], e["x-raftsched-attempt"])
        if key in seen:
            print(
                f"  executed twice: {key} on {seen[key]['x-raftsched-node']} at {seen[key]['t']:.3f} "
                f"and on {e['x-raftsched-node']} at {e['t']:.3f}",
                flush=True,
            )
        seen[key] = e
    return {
        "slots_due": len(due),
        "executed": len(events),
        "missed": len([s for s in due if s not in slots]),
        "duplicate_executions": len(executions) - len(set(executions)),
        "reexecuted_with_higher_attempt": len(executions) - len({r for r, _ in executions}),
        "lateness_ms_p50": round(lateness[len(lateness) // 2], 1) if lateness else None,
        "lateness_ms_p99": round(lateness[int(len(lateness) * 0.99)], 1) if lateness else None,
        "lateness_ms_max": round(lateness[-1], 1) if lateness else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    sink = Sink()
    cluster = Cluster(
        Path(tempfile.mkdtemp(prefix="raftsched-rolling-")),
        size=args.nodes,
        node_keys={"shutdown_grace_s": 5},
    )
    try:
        cluster.start()
        cluster.leader()
        cluster.wait_registered()
        job = {
            "id": "metronome",
            "schedule": {"every": args.every},
            "overlap": "allow",
            "task": {"type": "http", "method": "POST", "url": f"{sink.url}/m"},
            "misfire": {"policy": "fire_all", "grace": 300, "max_catchup": 10000},
        }
        code, created = cluster.api(cluster.ids[0], "POST", "/v1/jobs", job)
        if code != 201:
            raise SystemExit(f"could not create the job: {created}")
        print(f"rolling restart of {args.nodes} nodes, {args.rounds} round(s), a slot every {args.every} s")
        time.sleep(3)
        steps = restart_all(cluster, args.rounds)
        time.sleep(3)
        leader = cluster.leader()
        code, paused = cluster.api(leader, "POST", "/v1/jobs/metronome/pause")
        time.sleep(max(3.0, args.every * 4))
        report = {
            **check(sink, _ms(created["created_at"]), _ms(paused["updated_at"]), int(args.every * 1000)),
            "restarts": steps,
        }
    finally:
        cluster.close()
        sink.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rolling_restart.json").write_text(json.dumps(report, indent=2))
    width = max(len(k) for k in report)
    for key, value in report.items():
        if key != "restarts":
            print(f"{key.ljust(width)}  {value}")
    ok = report["missed"] == 0 and report["duplicate_executions"] == 0
    print("OK: no slot missed, none executed twice" if ok else "VIOLATION", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
