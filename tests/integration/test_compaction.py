"""Compaction turns on a real cluster: the nodes hold one log, and each snapshots at its own
entries (compaction.py), so their forked writers do not all run at once."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

EVERY = 30


def _job(i: int) -> dict[str, Any]:
    return {"id": f"j{i}", "schedule": {"every": 3600}, "task": {"type": "shell", "command": ["true"]}}


def test_each_node_compacts_at_its_own_turns(make_cluster: Any) -> None:
    cluster: Cluster = make_cluster(cluster_keys={"log_compaction_min_entries": EVERY})
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    for i in range(5 * EVERY):
        code, body = cluster.api(cluster.ids[i % 3], "POST", "/v1/jobs", _job(i))
        assert code == 201, body
    cluster.wait_same_digest()

    # Turns are spaced by the rank of the node's Raft address among the voters.
    addresses = sorted(f"127.0.0.1:{cluster.ports[n][0]}" for n in cluster.ids)
    expected = {n: addresses.index(f"127.0.0.1:{cluster.ports[n][0]}") * EVERY // 3 for n in cluster.ids}
    deadline = time.monotonic() + 20
    while True:
        statuses = {n: cluster.status(n) or {} for n in cluster.ids}
        if all(s.get("compactions", 0) >= 2 for s in statuses.values()):
            break
        assert time.monotonic() < deadline, f"{statuses}\n{cluster.logs()}"
        time.sleep(0.2)
    for node, st in statuses.items():
        turn = st["compaction_turn"]
        assert turn > 0 and turn % EVERY == expected[node], (node, turn, expected)
        assert st["log_len"] < 2 * EVERY + 20, (node, st["log_len"])  # the log was cut
    assert len({t % EVERY for t in (s["compaction_turn"] for s in statuses.values())}) == 3

    # A node restarted from its own snapshot (and the entries after it) comes back with every job.
    node = cluster.ids[1]
    cluster.kill(node)
    cluster.start(node)
    cluster.wait_same_digest()
    code, listed = cluster.api(node, "GET", f"/v1/jobs?limit={10 * EVERY}")
    assert code == 200 and {j["id"] for j in listed["items"]} == {f"j{i}" for i in range(5 * EVERY)}
