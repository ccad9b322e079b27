"""How long a new node takes to join a loaded cluster and start taking runs.

    python scripts/bench_join.py [--jobs 10000] [--out FILE]

Starts 3 voters and one spare node (a [node] section outside `members`) on 127.0.0.1, loads
`--jobs` hourly cron jobs through the restore API (in chunks), keeps a metronome job running
into an HTTP sink, then starts the spare, adds it (POST /v1/nodes) and measures: add -> the node
has caught up and registered; add -> its first run executed (ground truth from the sink); the
snapshot it installed. Prints a table and JSON. Every process it starts, it stops.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster import Cluster, Sink  # noqa: E402


def _until(check: Any, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    raise SystemExit("timed out")


def load_jobs(cluster: Cluster, count: int) -> float:
    started = time.monotonic()
    chunk = 200
    for first in range(0, count, chunk):
        jobs = [
            {
                "spec": {
                    "id": f"hourly-{i:06d}",
                    "schedule": {"cron": f"{i % 60} * * * *"},
                    "task": {"type": "shell", "command": ["true"]},
                }
            }
            for i in range(first, min(count, first + chunk))
        ]
        code, body = cluster.api(
            "n1",
            "POST",
            "/v1/restore",
            {"format": "raftsched-backup", "version": 1, "jobs": jobs},
            timeout=120,
        )
        if code != 200:
            raise SystemExit(f"loading jobs failed: {code} {body}")
        if first % 2000 == 0:
            print(f"  loaded {first + len(jobs)} jobs", flush=True)
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sink = Sink()
    cluster = Cluster(
        Path(tempfile.mkdtemp(prefix="raftsched-join-")),
        size=4,
        members=3,
        cluster_keys={"max_body_bytes": 8 << 20, "log_compaction_min_entries": 1000},
    )
    try:
        cluster.start("n1", "n2", "n3")
        cluster.leader()
        cluster.wait_registered(3)
        load_s = load_jobs(cluster, args.jobs)
        metronome = {
            "id": "metronome",
            "schedule": {"every": 0.2},
            "overlap": "allow",
            "task": {"type": "http", "method": "POST", "url": f"{sink.url}/m"},
        }
        cluster.api("n1", "POST", "/v1/jobs", metronome)
        cluster.start("n4")
        _until(lambda: cluster.status("n4") is not None, 60)
        added = time.monotonic()
        code, body = cluster.api("n1", "POST", "/v1/nodes", cluster.node_body("n4"), timeout=60)
        if code != 200:
            raise SystemExit(f"adding n4 failed: {code} {body}")
        committed_s = time.monotonic() - added

        def registered() -> bool:
            code, body = cluster.api("n1", "GET", "/v1/nodes")
            return any(n["id"] == "n4" and n["alive"] for n in body["items"])

        registered_s = _until(registered, 300) + committed_s
        first_run_s = _until(
            lambda: any(e["x-raftsched-node"] == "n4" for e in sink.for_job("metronome")), 300
        )
        first_run_s += registered_s
        dump = cluster.root / "data" / "n4" / "raft.dump"
        report = {
            "jobs": args.jobs,
            "load_jobs_s": round(load_s, 2),
            "add_committed_s": round(committed_s, 2),
            "add_to_registered_s": round(registered_s, 2),
            "add_to_first_run_s": round(first_run_s, 2),
            "snapshot_bytes": dump.stat().st_size if dump.exists() else None,
        }
    finally:
        cluster.close()
        sink.close()
    width = max(len(k) for k in report)
    for key, value in report.items():
        print(f"{key.ljust(width)}  {value}")
    print(json.dumps(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
