"""Grow and shrink a live cluster under load: no slot lost, none doubled."""

from __future__ import annotations

import signal
import time
from datetime import datetime
from typing import Any

import pytest

from cluster import Cluster, Sink

pytestmark = pytest.mark.integration


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _wait(what: str, check: Any, cluster: Cluster, timeout: float = 40) -> Any:
    return cluster.wait_for(what, check, timeout)


def _nodes(cluster: Cluster, via: str) -> dict[str, dict[str, Any]]:
    code, body = cluster.api(via, "GET", "/v1/nodes")
    return {n["id"]: n for n in body["items"]} if code == 200 else {}


def test_grow_to_five_and_shrink_back_under_load(make_cluster: Any, sink: Sink) -> None:
    cluster: Cluster = make_cluster(size=5, members=3)
    cluster.start("n1", "n2", "n3")
    cluster.leader()
    cluster.wait_registered(3)
    job = {
        "id": "tick",
        "schedule": {"every": 0.5},
        "overlap": "allow",
        "task": {"type": "http", "method": "POST", "url": f"{sink.url}/tick"},
        "misfire": {"policy": "fire_all", "grace": 120, "max_catchup": 1000},
    }
    code, created = cluster.api("n2", "POST", "/v1/jobs", job)
    assert code == 201, created

    # n4 and n5 start empty, wait outside the cluster, are added one at a time and catch up.
    for new in ("n4", "n5"):
        cluster.start(new)
        _wait(f"{new}'s API", lambda new=new: cluster.status(new), cluster)
        time.sleep(1)
        assert cluster.status(new)["digest"].startswith("0:")  # not a member yet: it has applied nothing
        code, body = cluster.api("n1", "POST", "/v1/nodes", cluster.node_body(new))
        assert code == 200, body
        _wait(f"{new} to register", lambda new=new: _nodes(cluster, "n1").get(new, {}).get("alive"), cluster)
    cluster.wait_same_digest()
    # Membership lives in the log, not in the file: a restarted initial member still knows n4 and n5.
    cluster.kill("n1")
    cluster.start("n1")
    cluster.wait_same_digest()
    _wait(
        "n1 to reconnect to the added nodes",
        lambda: all(m["connected"] for m in cluster.status("n1")["members"] if m["id"] in ("n4", "n5")),
        cluster,
    )
    _wait(
        "runs on the new nodes",
        lambda: {e["x-raftsched-node"] for e in sink.for_job("tick")} >= {"n4", "n5"},
        cluster,
    )

    # Shrink back: drain and remove n5 and n4; each stops by itself.
    for gone in ("n5", "n4"):
        code, body = cluster.api("n1", "DELETE", f"/v1/nodes/{gone}")
        assert code == 202 and body["draining"], body
        _wait(f"{gone} to leave", lambda gone=gone: gone not in _nodes(cluster, "n1"), cluster)
        assert cluster.wait_exit(gone) == 0

    # Remove the leader: it hands leadership over first, then the new leader removes it.
    leader = cluster.leader()
    code, body = cluster.api(leader, "DELETE", f"/v1/nodes/{leader}")
    assert code == 202, body
    survivor = next(n for n in ("n1", "n2", "n3") if n != leader)
    _wait("the old leader to leave", lambda: leader not in _nodes(cluster, survivor), cluster)
    assert cluster.wait_exit(leader) == 0
    new_leader = cluster.leader()
    assert new_leader != leader

    time.sleep(2)
    code, paused = cluster.api(new_leader, "POST", "/v1/jobs/tick/pause")
    assert code == 200, paused
    time.sleep(3)
    events = sink.for_job("tick")
    executed = [(e["x-raftsched-run-id"], e["x-raftsched-attempt"]) for e in events]
    assert len(executed) == len(set(executed)), "a (run, attempt) executed twice"
    slots = {_ms(e["x-raftsched-scheduled-at"]) for e in events}
    start, stop = _ms(created["created_at"]), _ms(paused["updated_at"]) - 1000
    due = [start + k * 500 for k in range(1, 10_000) if start + k * 500 <= stop]
    missing = [s for s in due if s not in slots]
    assert not missing, f"slots never executed: {missing}\n{cluster.logs()}"
    cluster.wait_same_digest()


def test_a_node_restarted_after_sigterm_takes_runs_again(make_cluster: Any) -> None:
    """SIGTERM drains the node (no new runs); its next life must lift that drain. It stayed
    draining for good when nothing else in its record changed."""
    cluster: Cluster = make_cluster()
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()
    node = next(n for n in cluster.ids if n != leader)
    job = {
        "id": "rr",
        "schedule": {"every": 0.2},
        "overlap": "allow",
        "route": {"strategy": "round_robin"},
        "task": {"type": "shell", "command": ["true"]},
    }
    assert cluster.api(leader, "POST", "/v1/jobs", job)[0] == 201
    assert cluster.stop(node) == 0
    cluster.start(node)
    restarted_ms = time.time() * 1000
    deadline = time.monotonic() + 20
    taken: list[str] = []
    while time.monotonic() < deadline and not taken:
        code, runs = cluster.api(leader, "GET", f"/v1/runs?job=rr&node={node}&limit=20")
        assert code == 200, runs
        taken = [r["run_id"] for r in runs["items"] if _ms(r["scheduled_at"]) > restarted_ms + 1000]
        time.sleep(0.3)
    code, nodes = cluster.api(leader, "GET", "/v1/nodes")
    assert taken, [n for n in nodes["items"] if n["id"] == node]

    # The stopped process's own drain may reach the leader after the new one registered (another
    # connection, read later): the node then registers again within its register period.
    def undrained() -> bool:
        items = cluster.api(leader, "GET", "/v1/nodes")[1]["items"]
        return not next(n for n in items if n["id"] == node)["draining"]

    cluster.wait_for("the restarted node to take runs, not draining", undrained, timeout=10)


def test_sigusr1_dumps_every_thread_and_the_node_goes_on(make_cluster: Any) -> None:
    """`kill -USR1` is how an operator (and the harness, on a stop that overruns) sees where a node
    is stuck: every thread's stack into the node's log, and the node keeps serving."""
    cluster: Cluster = make_cluster(size=1)
    cluster.start()
    node = cluster.leader()
    cluster.procs[node].send_signal(signal.SIGUSR1)
    log = cluster.root / f"{node}.log"
    dump = _wait("the dumps", lambda: "asyncio tasks" in log.read_text() and log.read_text(), cluster, 10)
    assert "Current thread" in dump, dump[-3000:]  # the threads'
    assert "raftsched/scheduler.py" in dump, dump[-3000:]  # the tasks': the scheduler waits
    assert cluster.procs[node].poll() is None
    assert cluster.api(node, "GET", "/v1/health")[0] == 200
    assert cluster.stop(node) == 0


def test_a_stopping_leader_does_not_lead_again_while_it_drains(make_cluster: Any) -> None:
    """SIGTERM hands leadership over, but the stopping node's log is the most caught-up: it could
    win the next election and lead through its whole drain. It hands over again each time."""
    cluster: Cluster = make_cluster(node_keys={"shutdown_grace_s": 15})
    cluster.start()
    leader = cluster.leader()
    cluster.wait_registered()
    zone = "abc"[cluster.ids.index(leader) % 3]
    long = {
        "id": "long",
        "schedule": {"every": 3600, "start_at": "2020-01-01T00:00:00Z"},
        "route": {"tags": {"zone": zone}},
        "task": {"type": "shell", "command": ["sleep", "12"]},
    }
    assert cluster.api(leader, "POST", "/v1/jobs", long)[0] == 201
    assert cluster.api(leader, "POST", "/v1/jobs/long/trigger")[0] == 201
    time.sleep(1.5)  # it runs on the leader: the drain lasts until it ends
    proc = cluster.procs[leader]
    proc.terminate()
    others = [n for n in cluster.ids if n != leader]
    led_again, deadline = [], time.monotonic() + 9
    time.sleep(3)  # the hand-over
    while time.monotonic() < deadline and proc.poll() is None:
        st = cluster.status(leader)
        if st and st.get("role") == "leader":
            led_again.append(round(deadline - time.monotonic(), 1))
        for n in others:  # an election among the others also makes it a follower again
            cluster.status(n)
        time.sleep(0.5)
    assert proc.poll() is None, "the drain should still be running (the task sleeps 12 s)"
    assert len(led_again) <= 1, f"the stopping node led again at {led_again}"
    assert cluster.leader(exclude=(leader,)) in others
    assert cluster.wait_exit(leader, timeout=30) == 0
