"""On a real 3-node cluster: the cluster's command version rises once every node publishes it,
and a paused job's range is shown, the same on every node, and recorded by the leader."""

from __future__ import annotations

import time
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

JOB = {"schedule": {"every": 0.5}, "task": {"type": "shell", "command": ["true"]}, "overlap": "forbid"}


def test_the_cluster_version_rises_and_paused_ranges_are_accounted(make_cluster: Any) -> None:
    cluster: Cluster = make_cluster()
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()

    def upgraded() -> bool:
        states = [cluster.status(n) for n in cluster.ids]
        return all(
            s is not None and s["cluster_version"] == 2 and {m["commands"] for m in s["members"]} == {2}
            for s in states
        )

    cluster.wait_for("cluster version 2", upgraded)
    for job_id in ("kept", "gone"):
        code, body = cluster.api(leader, "POST", "/v1/jobs", {"id": job_id, **JOB})
        assert code == 201, body
    time.sleep(2)
    for job_id in ("kept", "gone"):
        code, body = cluster.api(leader, "POST", f"/v1/jobs/{job_id}/pause")
        assert code == 200, body
    time.sleep(3)

    def same_everywhere() -> list[tuple[str, int, str]] | None:
        """The range as each node shows it: by the committed clock, so the same once the nodes
        have applied the same entries (the leader commits its clock every second: read again)."""
        cluster.wait_same_digest()
        shown = [cluster.api(n, "GET", "/v1/jobs/kept/runs?state=skipped")[1]["items"] for n in cluster.ids]
        records = [[(r["run_id"], r["count"], r["until"]) for r in items] for items in shown]
        return records[0] if records[0] and all(r == records[0] for r in records) else None

    records = [cluster.wait_for("the same paused range on every node", same_everywhere)]
    (run_id, count, _), *_ = records[0]
    assert count >= 4 and run_id.startswith("kept@")
    code, job = cluster.api(leader, "GET", "/v1/jobs/kept")
    assert job["last_slot_at"] >= records[0][0][2] and job["next_slot_at"] is None  # ISO: ordered
    assert job["stats"]["skipped"] >= count

    code, _ = cluster.api(leader, "DELETE", "/v1/jobs/gone")
    assert code == 204
    code, body = cluster.api(leader, "POST", "/v1/jobs/kept/resume")
    assert code == 200 and not body["paused"] and body["next_slot_at"] is not None
    cluster.wait_same_digest()
    code, runs = cluster.api(leader, "GET", "/v1/jobs/kept/runs?state=skipped&consistent=true")
    assert runs["items"][0]["run_id"] == run_id and runs["items"][0]["count"] >= count
    code, stats = cluster.api(leader, "GET", "/v1/stats")
    assert stats["cluster"]["skipped"] >= runs["items"][0]["count"] + 4  # the deleted job's range counted
