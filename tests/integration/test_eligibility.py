"""On a real 3-node cluster: a job no live node may run is refused at creation, judged by what the
nodes publish (one node allows shell strings, then none does); a manual trigger of a broadcast
job runs once on every node."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from cluster import Cluster, Sink

pytestmark = pytest.mark.integration

FAR = "2099-01-01T00:00:00Z"  # a one-shot slot that never comes: runs come from manual triggers only
SHELL = {"id": "sh", "schedule": {"at": FAR}, "task": {"type": "shell", "command": "exit 0"}}


def _policies(cluster: Cluster, node: str) -> dict[str, Any]:
    code, body = cluster.api(node, "GET", "/v1/nodes?consistent=true")
    assert code == 200, body
    return {n["id"]: n["policy"] for n in body["items"]}


def _ended(cluster: Cluster, node: str, run_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        code, run = cluster.api(node, "GET", f"/v1/runs/{run_id}")
        return run if code == 200 and run["state"] not in ("pending", "running") else None

    return check


def test_shell_strings_are_accepted_while_one_node_allows_them(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(per_node={"n2": {"allow_shell": "true"}})
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()
    assert {n: p["allow_shell"] for n, p in _policies(cluster, leader).items()} == {
        "n1": False,
        "n2": True,
        "n3": False,
    }

    code, job = cluster.api("n3", "POST", "/v1/jobs", SHELL)  # through a follower or the leader
    assert code == 201, job
    code, run = cluster.api("n1", "POST", "/v1/jobs/sh/trigger")
    assert code == 201 and run["node"] == "n2", run  # the node that may run it
    ended = cluster.wait_for("the shell string's run", _ended(cluster, "n1", run["run_id"]))
    assert ended["state"] == "succeeded", ended

    # n2 comes back without shell strings: nodes publish again when their policy changes.
    cluster.stop("n2")
    cluster.per_node = {}
    cluster.write_config()
    cluster.start("n2")
    cluster.wait_for(
        "n2 to publish its new policy", lambda: not _policies(cluster, "n1")["n2"]["allow_shell"]
    )
    code, body = cluster.api("n1", "POST", "/v1/jobs", {**SHELL, "id": "sh2"})
    assert code == 422, body
    assert body["error"]["code"] == "no_eligible_node" and body["error"]["field"] == "task.command", body
    assert "allow_shell" in body["error"]["message"]
    code, body = cluster.api("n2", "PUT", "/v1/jobs/sh2", {**SHELL, "id": "sh2"})
    assert code == 422 and body["error"]["field"] == "task.command", body
    code, job = cluster.api("n1", "POST", "/v1/jobs?force=true", {**SHELL, "id": "sh2"})
    assert code == 201 and job["id"] == "sh2", job
    cluster.wait_same_digest()


def test_a_manual_trigger_of_a_broadcast_job_runs_on_every_node(
    make_cluster: Callable[..., Cluster], sink: Sink
) -> None:
    cluster = make_cluster()
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    job = {
        "id": "everywhere",
        "schedule": {"at": FAR},
        "route": {"strategy": "broadcast"},
        "task": {"type": "http", "method": "POST", "url": f"{sink.url}/everywhere"},
    }
    assert cluster.api("n2", "POST", "/v1/jobs", job)[0] == 201
    code, first = cluster.api("n2", "POST", "/v1/jobs/everywhere/trigger")
    assert code == 201, first
    run_ids = [r["run_id"] for r in first["runs"]]
    assert first["run_id"] == run_ids[0] and len(run_ids) == 3
    manual = run_ids[0].removesuffix("~0")
    assert run_ids == [f"{manual}~{shard}" for shard in range(3)] and "@manual-" in manual
    assert sorted(r["node"] for r in first["runs"]) == cluster.ids

    cluster.wait_for("a request from every node", lambda: len(sink.for_job("everywhere")) >= 3)
    events = sink.for_job("everywhere")
    assert sorted(e["x-raftsched-node"] for e in events) == cluster.ids, events
    assert sorted(e["x-raftsched-run-id"] for e in events) == run_ids
    assert {(e["x-raftsched-shard"], e["x-raftsched-shards"]) for e in events} == {
        (str(i), "3") for i in range(3)
    }
    for run_id in run_ids:
        ended = cluster.wait_for(f"{run_id} to end", _ended(cluster, "n1", run_id))
        assert ended["state"] == "succeeded", ended
    code, stats = cluster.api("n3", "GET", "/v1/stats")
    assert code == 200 and stats["jobs"]["everywhere"]["fired"] == 0  # manual runs are not fired slots
    cluster.wait_same_digest()
