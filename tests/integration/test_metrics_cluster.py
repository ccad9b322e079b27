"""GET /metrics on a real 3-node cluster: replicated counters agree, one leader, coherent Raft gauges."""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from raftsched import __version__
from raftsched.records import COUNTERS

from cluster import Cluster

pytestmark = pytest.mark.integration

JOB = "tick"


def scrape(cluster: Cluster, node: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the node's /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(cluster.url(node) + "/metrics", timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def pick(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def replicated(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> dict[Any, float]:
    """The samples that come from the replicated statistics (the same on every node)."""
    prefixes = ("raftsched_job_", "raftsched_runs_total", "raftsched_lateness_", "raftsched_duration_")
    return {k: v for k, v in samples.items() if k[0].startswith(prefixes)}


def test_metrics_agree_across_a_real_cluster(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "c")
    try:
        cluster.start()
        cluster.leader()
        cluster.wait_registered()
        job = {"id": JOB, "schedule": {"every": 1}, "task": {"type": "shell", "command": ["true"]}}
        code, body = cluster.api(cluster.ids[0], "POST", "/v1/jobs", job)
        assert code == 201, body

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            runs = pick(
                scrape(cluster, cluster.ids[0]), "raftsched_job_runs_total", job=JOB, outcome="succeeded"
            )
            if runs >= 3:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("fewer than 3 runs succeeded\n" + cluster.logs())
        # Freeze the counters: no new fires; the last run (`true`) ends within moments.
        code, body = cluster.api(cluster.ids[1], "POST", f"/v1/jobs/{JOB}/pause")
        assert code == 200, body

        deadline = time.monotonic() + 20
        while True:
            scraped = {node: scrape(cluster, node) for node in cluster.ids}
            views = [replicated(s) for s in scraped.values()]
            active = [
                pick(s, "raftsched_runs_active", state=st)
                for s in scraped.values()
                for st in ("pending", "running")
            ]
            if all(v == views[0] for v in views) and not any(active):
                break
            assert time.monotonic() < deadline, f"replicated metrics differ: {views}\n{cluster.logs()}"
            time.sleep(0.3)

        # The same job counters on every node, and they add up.
        first = scraped[cluster.ids[0]]
        counters = {c: pick(first, "raftsched_job_runs_total", job=JOB, outcome=c) for c in COUNTERS}
        assert counters["fired"] >= 3 and counters["succeeded"] >= 3, counters
        ended = sum(counters[c] for c in ("succeeded", "failed", "timed_out", "cancelled", "lost"))
        assert ended == counters["fired"], counters
        for c in COUNTERS:
            assert pick(first, "raftsched_runs_total", outcome=c) == counters[c]
        for key in ("lateness", "duration"):
            name = f"raftsched_job_{key}_seconds"
            count = pick(first, name + "_count", job=JOB)
            assert pick(first, name + "_bucket", job=JOB, le="+Inf") == count > 0
            assert pick(first, f"raftsched_{key}_seconds_count") == count
        assert counters["succeeded"] <= pick(first, "raftsched_job_duration_seconds_count", job=JOB) <= ended

        # Raft: one leader, and each node's role gauges tell one story.
        leaders = []
        for node, s in scraped.items():
            roles = {r: pick(s, "raftsched_raft_role", role=r) for r in ("leader", "follower", "candidate")}
            assert sum(roles.values()) == 1, (node, roles)
            assert pick(s, "raftsched_raft_is_leader") == roles["leader"]
            if roles["leader"]:
                leaders.append(node)
            assert pick(s, "raftsched_raft_applied_index") > 0
            assert pick(s, "raftsched_raft_commit_index") > 0
            assert pick(s, "raftsched_raft_log_entries") > 0
            assert pick(s, "raftsched_raft_term") >= 1
            assert pick(s, "raftsched_state_applied_total") > 0
            peers = {k[1]: v for k, v in s.items() if k[0] == "raftsched_raft_peer_connected"}
            assert len(peers) == 2 and all(v == 1 for v in peers.values()), (node, peers)
            assert {dict(labels)["peer"] for labels in peers} == set(cluster.ids) - {node}
            assert pick(s, "raftsched_build_info", node=node, version=__version__) == 1
            assert pick(s, "raftsched_nodes", state="up") == 3
            assert pick(s, "raftsched_jobs") == 1 and pick(s, "raftsched_jobs_paused") == 1
            for member in cluster.ids:
                assert pick(s, "raftsched_node_up", node=member) == 1
                assert pick(s, "raftsched_node_capacity", node=member) == 8
        assert len(leaders) == 1, leaders
        assert len({pick(s, "raftsched_raft_term") for s in scraped.values()}) == 1
    finally:
        cluster.close()
