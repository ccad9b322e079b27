"""A leader resends AppendEntries a node already holds when that node (or the leader) stalls:
followers must never cut entries they hold (PySyncObj did, logging "truncating already-applied
log entries" in the overloaded benchmarks; raftsched/logmatch.py is the fix). Stalls are
SIGSTOP/SIGCONT bursts of the nodes under a steady write load; afterwards every node has the same
digest, no node's log shows the truncation, and the rewritten messages are counted (the path was
exercised). With `big` writes every entry is over PySyncObj's 64 KB batch size, so it travels in
chunks (start/process/finish), the path the guard first let through."""

from __future__ import annotations

import threading
import time
import urllib.request
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

TRUNCATION = "truncating already-applied log entries"


def _writer(cluster: Cluster, node: str, stop: threading.Event, done: list[int], big: bool) -> None:
    i = 0
    padding = ["x" * 40_000, "y" * 40_000] if big else []  # arguments `true` ignores
    while not stop.is_set():
        job = {
            "id": f"w{i % 40}",
            "schedule": {"every": 3600},
            "task": {"type": "shell", "command": ["true", *padding]},
            "description": f"write {i}",
        }
        try:
            code, _ = cluster.api(node, "PUT", f"/v1/jobs/w{i % 40}", job, timeout=5)
        except OSError:  # the stalled leader made the write time out: try the next one
            code = 0
        if code in (200, 201):
            done.append(i)
        i += 1


@pytest.mark.parametrize("big", [False, True], ids=["small-entries", "chunked-entries"])
def test_a_stalling_leader_never_makes_a_follower_cut_its_log(make_cluster: Any, big: bool) -> None:
    cluster: Cluster = make_cluster(cluster_keys={"lookahead_s": 2})
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()
    noisy = {
        "id": "noise",
        "schedule": {"every": 0.1},
        "overlap": "allow",
        "task": {"type": "shell", "command": ["true"]},
    }
    assert cluster.api(leader, "POST", "/v1/jobs", noisy)[0] == 201
    stop, done = threading.Event(), []
    writers = [
        threading.Thread(target=_writer, args=(cluster, n, stop, done, big), daemon=True)
        for n in cluster.ids
        if n != leader
    ]
    for w in writers:
        w.start()
    try:
        deadline, turn = time.monotonic() + 12, 0
        while time.monotonic() < deadline:
            # A stalled node answers late: the leader takes a late answer as its next index and
            # resends entries the node already holds (also the leader itself, every third turn).
            leader = cluster.leader(timeout=30)
            followers = [n for n in cluster.ids if n != leader]
            victim = leader if turn % 3 == 2 else followers[turn % len(followers)]
            turn += 1
            cluster.pause(victim)
            time.sleep(0.15)
            cluster.resume(victim)
            time.sleep(0.15)
    finally:
        stop.set()
        for w in writers:
            w.join(10)
    assert cluster.api(cluster.leader(), "POST", "/v1/jobs/noise/pause")[0] == 200
    cluster.wait_same_digest(timeout=60)
    logs = cluster.logs(tail=None)
    assert TRUNCATION not in logs, [line for line in logs.splitlines() if TRUNCATION in line][:5]
    assert len(done) > 20, len(done)
    assert sum(_counter(cluster, n, "raftsched_raft_appends_trimmed_total") for n in cluster.ids) > 0


def _counter(cluster: Cluster, node: str, name: str) -> float:
    with urllib.request.urlopen(cluster.url(node) + "/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} missing from {node}'s /metrics")
