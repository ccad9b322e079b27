"""Job-write latency on a local 3-node cluster, without and then with a frame-length flood on the
leader's Raft port (an unauthenticated client announcing a 2 GiB frame and streaming).

    python scripts/bench_raft_attack.py [--seconds 10] [--out FILE]

Starts 3 nodes on 127.0.0.1, then for `--seconds` each: creates jobs one after another,
alternating the leader and a follower (which forwards to the leader), first quietly, then under
the flood. Prints p50/p99 of each phase, their ratios, failed writes, the leader's RSS and the
refusals it counted, then one JSON line. Every process it starts, it stops.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cluster import Cluster  # noqa: E402
from raftattack import FrameFlood, rss_mib  # noqa: E402


def write_for(cluster: Cluster, nodes: list[str], seconds: float, prefix: str, pid: int) -> dict[str, Any]:
    latencies_ms: list[float] = []
    failed, rss_peak = 0, rss_mib(pid)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = len(latencies_ms)
        job = {
            "id": f"{prefix}-{n}",
            "schedule": {"every": 3600},
            "task": {"type": "shell", "command": ["true"]},
        }
        started = time.monotonic()
        code, _ = cluster.api(nodes[n % len(nodes)], "POST", "/v1/jobs", job, timeout=60)
        latencies_ms.append((time.monotonic() - started) * 1000)
        failed += code != 201
        rss_peak = max(rss_peak, rss_mib(pid))
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {
        "writes": len(latencies_ms),
        "failed": failed,
        "p50_ms": cuts[49],
        "p99_ms": cuts[98],
        "rss_peak_mib": rss_peak,
    }


def rejected(cluster: Cluster, node: str) -> dict[str, float]:
    with urllib.request.urlopen(cluster.url(node) + "/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    prefix = 'raftsched_raft_rejected_connections_total{reason="'
    return {
        line[len(prefix) :].split('"')[0]: float(line.split()[-1])
        for line in lines
        if line.startswith(prefix)
    }


def report(result: dict[str, Any]) -> None:
    print(f"{'phase':8} {'writes':>7} {'failed':>7} {'p50 ms':>8} {'p99 ms':>8} {'leader RSS peak MiB':>20}")
    for phase in ("quiet", "flood"):
        r = result[phase]
        counts = f"{r['writes']:7d} {r['failed']:7d}"
        print(f"{phase:8} {counts} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['rss_peak_mib']:20.1f}")
    print(f"flood/quiet: p50 x{result['p50_ratio']:.2f}, p99 x{result['p99_ratio']:.2f}")
    flood = f"{result['flood_dials']} connections, {result['flood_bytes_sent']} bytes"
    print(f"flood: {flood}; refused by the leader: {result['rejected']}")
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-raft-attack-") as tmp:
        cluster = Cluster(Path(tmp))
        try:
            cluster.start()
            leader = cluster.leader()
            cluster.wait_registered()
            cluster.wait_healthy()
            follower = next(n for n in cluster.ids if n != leader)
            nodes, pid = [leader, follower], cluster.procs[leader].pid
            write_for(cluster, nodes, 2.0, "warmup", pid)
            quiet = write_for(cluster, nodes, args.seconds, "quiet", pid)
            with FrameFlood(cluster.ports[leader][0]) as flood:
                attacked = write_for(cluster, nodes, args.seconds, "flood", pid)
            result = {
                "quiet": quiet,
                "flood": attacked,
                "p50_ratio": attacked["p50_ms"] / quiet["p50_ms"],
                "p99_ratio": attacked["p99_ms"] / quiet["p99_ms"],
                "flood_dials": flood.dials,
                "flood_bytes_sent": flood.sent,
                "rejected": rejected(cluster, leader),
            }
        finally:
            cluster.close()
    report(result)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
