"""No task process outlives its run on a real 3-node cluster, whatever it does to escape.

The task starts `sleep` processes that leave its process group (`setsid`) or its parentage (a
double fork). Each `sleep` gets a duration unique to the test (`302.<marker>`), so the test finds
exactly its own processes through /proc/PID/cmdline; any left at the end are killed by pid.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

FAR = "2099-01-01T00:00:00Z"  # a one-shot slot that never comes: runs come from manual triggers only


def escaping_task(marker: str) -> dict[str, Any]:
    script = f"setsid sleep 302.{marker} & ( sleep 303.{marker} & ) ; sleep 304.{marker}"
    return {"type": "shell", "command": ["sh", "-c", script]}


def marked(marker: str) -> list[int]:
    """Live processes running `sleep 30x.<marker>`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if args[0].endswith(b"sleep") and args[1:2] and args[1].endswith(f".{marker}".encode()):
            if state not in (b"Z", b"X"):
                found.append(int(name))
    return found


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)
    return value


@pytest.fixture
def marker() -> Iterator[str]:
    mark = str(random.randrange(10**8, 10**9))
    yield mark
    for pid in marked(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster3(make_cluster: Callable[..., Cluster]) -> Cluster:
    cluster = make_cluster(cluster_keys={"lookahead_s": 1, "node_timeout_s": 2})
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    return cluster


def start_run(cluster: Cluster, job: dict[str, Any], marker: str) -> tuple[str, str]:
    """Create and trigger `job`; once its three sleeps run, (run id, node running it)."""
    node = cluster.leader()
    code, body = cluster.api(node, "POST", "/v1/jobs", {"schedule": {"at": FAR}, **job})
    assert code == 201, body
    code, run = cluster.api(node, "POST", f"/v1/jobs/{job['id']}/trigger")
    assert code == 201, run
    wait_for(lambda: len(marked(marker)) == 3, 15, "the task's three sleeps")

    def running_on() -> str | None:
        code, body = cluster.api(node, "GET", f"/v1/runs/{run['run_id']}")
        return body.get("node") if code == 200 and body.get("state") == "running" else None

    return run["run_id"], wait_for(running_on, 10, "the run to show as running")


def test_killing_the_node_kills_every_descendant(cluster3: Cluster, marker: str) -> None:
    cluster = cluster3
    _, victim = start_run(cluster, {"id": "escape-kill", "task": escaping_task(marker)}, marker)
    killed = time.monotonic()
    cluster.kill(victim)  # SIGKILL: the node cleans up nothing itself
    wait_for(lambda: not marked(marker), 3, f"the sleeps of {victim}'s task to die with it")
    print(f"\nkill -9 {victim}: every descendant gone within {time.monotonic() - killed:.2f}s")


def test_timeout_kills_setsid_and_double_forked_descendants(cluster3: Cluster, marker: str) -> None:
    cluster = cluster3
    job = {"id": "escape-timeout", "task": escaping_task(marker), "timeout": 2}
    run_id, node = start_run(cluster, job, marker)

    def ended() -> dict[str, Any] | None:
        code, body = cluster.api(node, "GET", f"/v1/runs/{run_id}")
        return body if code == 200 and body.get("state") != "running" else None

    run = wait_for(ended, 15, "the run to time out")
    assert run["state"] == "timed_out", run
    assert not marked(marker), "a descendant outlived its timed-out run"
