"""DESIGN.md §4 on a real cluster: a node whose clock is off (libfaketime) is measured by the
leader, reported unhealthy, and gets no new runs until its clock is right again."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chaoskit.harness import ChaosCluster, clock_unavailable, make_root

pytestmark = pytest.mark.integration

KEYS = {"clock_check_period_s": 0.5, "max_clock_offset_s": 1, "lookahead_s": 1}


@pytest.fixture
def cluster() -> Iterator[ChaosCluster]:
    reason = clock_unavailable()
    if reason:
        pytest.skip(reason)
    c = ChaosCluster(make_root(), 3, cluster_keys=KEYS, use_gids=False)
    yield c
    c.close()
    shutil.rmtree(c.root, ignore_errors=True)


def _nodes(cluster: ChaosCluster, via: str) -> dict[str, dict[str, Any]]:
    code, body = cluster.api(via, "GET", "/v1/nodes")
    assert code == 200, body
    return {n["id"]: n for n in body["items"]}


def test_a_node_whose_clock_is_off_gets_no_new_runs(cluster: ChaosCluster) -> None:
    cluster.clock_offset("n3", 3.0, restart=False)
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()
    job = {
        "id": "tick",
        "schedule": {"every": 0.2},
        "overlap": "allow",
        "route": {"strategy": "round_robin"},  # every node in turn, when it may take runs
        "task": {"type": "shell", "command": ["true"]},
    }
    assert cluster.api(leader, "POST", "/v1/jobs", job)[0] == 201
    n3 = cluster.wait_for(
        "n3 judged off", lambda: (n := _nodes(cluster, "n1")["n3"]) and not n["clock_ok"] and n
    )
    assert 2500 <= n3["clock_offset_ms"] <= 3500, n3  # its clock minus the cluster's (the median)
    # n3 says so itself once it has applied the verdict (n1 applied it first: it may lag a beat)
    code, health = cluster.wait_for(
        "n3 unhealthy", lambda: (a := cluster.api("n3", "GET", "/v1/health"))[0] == 503 and a
    )
    assert health["clock_ok"] is False, health
    time.sleep(1.5)  # what was fired ahead to n3 before the verdict has moved or run by now
    since_ms = time.time() * 1000
    time.sleep(3)
    code, runs = cluster.api("n1", "GET", "/v1/runs?job=tick&limit=200")
    assert code == 200, runs
    recent = [r for r in runs["items"] if r.get("scheduled_at") and _ms(r["scheduled_at"]) > since_ms + 1500]
    assert recent and all(r["node"] != "n3" for r in recent), [(r["run_id"], r["node"]) for r in recent]

    cluster.clock_offset("n3", 0.0)  # restarted with the right time
    cluster.wait_for("n3 judged right again", lambda: _nodes(cluster, "n1")["n3"]["clock_ok"])
    cluster.wait_for(
        "a run on n3 again",
        lambda: any(
            r["node"] == "n3" for r in cluster.api("n1", "GET", "/v1/runs?job=tick&limit=50")[1]["items"]
        ),
    )


def _ms(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000
