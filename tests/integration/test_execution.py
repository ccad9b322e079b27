"""Execution semantics on a real 3-node cluster: what runs, where, how often, and what is left behind.

Every task here is `tasks/groundtruth.py`, which appends one fsynced JSON line per start / end event
(run id, attempt, node, shard, pid, process group, time) to a file of the test's own. The tests
compare that ground truth with what the cluster reports over its API.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

GT = str(Path(__file__).parent / "tasks" / "groundtruth.py")
FAR = "2099-01-01T00:00:00Z"  # a one-shot slot that never comes: runs come from manual triggers only
TERMINAL = {"succeeded", "failed", "timed_out", "cancelled", "lost", "skipped", "missed"}
FAST = {"lookahead_s": 1, "node_timeout_s": 2}

T = TypeVar("T")


# ---------------------------------------------------------------- helpers


def _wait(fn: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _task(gt_file: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return {"type": "shell", "command": [sys.executable, GT, str(gt_file), *args], "env": env or {}}


def _job(job_id: str, task: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"id": job_id, "schedule": {"at": FAR}, "task": task, **fields}


def _events(gt_file: Path, ev: str | None = None) -> list[dict[str, Any]]:
    if not gt_file.exists():
        return []
    lines = [json.loads(line) for line in gt_file.read_text().splitlines() if line.strip()]
    return [e for e in lines if ev is None or e["ev"] == ev]


def _gone(pid: int) -> bool:
    """No live process with this pid: absent, or a zombie nobody reaps (some containers' PID 1)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] in (b"Z", b"X")


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _get_run(cluster: Cluster, run_id: str, prefer: str | None = None) -> dict[str, Any] | None:
    """The run as the first answering live node (the preferred one first) sees it."""
    nodes = cluster.alive()
    if prefer in nodes:
        nodes = [prefer, *(n for n in nodes if n != prefer)]
    for node in nodes:
        with contextlib.suppress(OSError):
            code, body = cluster.api(node, "GET", f"/v1/runs/{run_id}", timeout=3)
            if code == 200:
                return body  # type: ignore[no-any-return]
    return None


def _wait_run(cluster: Cluster, run_id: str, states: set[str], timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        run = _get_run(cluster, run_id)
        return run if run is not None and run["state"] in states else None

    try:
        return _wait(check, timeout, f"run {run_id} in {states}")
    except AssertionError:
        raise AssertionError(
            f"run {run_id} never reached {states}: {_get_run(cluster, run_id)}\n{cluster.logs()}"
        ) from None


def _create(cluster: Cluster, node: str, spec: dict[str, Any]) -> None:
    code, body = cluster.api(node, "POST", "/v1/jobs", spec)
    assert code == 201, body


def _trigger(cluster: Cluster, node: str, job_id: str, body: Any = None) -> dict[str, Any]:
    code, run = cluster.api(node, "POST", f"/v1/jobs/{job_id}/trigger", body)
    assert code == 201, run
    return run  # type: ignore[no-any-return]


def _zone(cluster: Cluster, node: str) -> str:
    return "abc"[cluster.ids.index(node) % 3]  # the harness tags nodes zone=a, b, c


@pytest.fixture
def reaper() -> Iterator[list[int]]:
    """Pids of task processes a test expects may outlive their node; killed (by pid) at teardown."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        cmd = _cmdline(pid)
        if not _gone(pid) and (GT.encode() in cmd or cmd == b"sleep\x0060\x00"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def cluster3(make_cluster: Callable[..., Cluster]) -> Cluster:
    cluster = make_cluster(cluster_keys=FAST, node_keys={"shutdown_grace_s": 10})
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    return cluster


# ---------------------------------------------------------------- 1. timeouts


def test_timeout_kills_child_and_grandchild(cluster3: Cluster, tmp_path: Path, reaper: list[int]) -> None:
    cluster, gt = cluster3, tmp_path / "timeout.jsonl"
    node = cluster.leader()
    _create(cluster, node, _job("slow", _task(gt, "--grandchild", "--sleep", "30"), timeout=1))
    run_id = _trigger(cluster, node, "slow")["run_id"]

    grand = _wait(lambda: _events(gt, "grandchild"), 10, "the grandchild to start")[0]
    child_pid, grandchild_pid = grand["pid"], grand["child_pid"]
    reaper.extend([child_pid, grandchild_pid])
    assert not _gone(child_pid) and not _gone(grandchild_pid)

    run = _wait_run(cluster, run_id, TERMINAL, timeout=15)
    assert run["state"] == "timed_out", run
    assert run["attempt"] == 1 and "timed out after 1 s" in (run["error"] or ""), run
    assert 0.9 <= run["duration"] < 4, run  # the timeout, plus at most the TERM -> KILL grace
    # The whole process group is gone: the task and the `sleep 60` it started.
    _wait(lambda: _gone(child_pid) and _gone(grandchild_pid), 5, "the task's process tree to go")
    assert not _events(gt, "end")
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 2. retries


def test_retries_back_off_and_move_to_another_node(cluster3: Cluster, tmp_path: Path) -> None:
    cluster, gt = cluster3, tmp_path / "retries.jsonl"
    node = cluster.leader()
    retries = {"max": 2, "initial_delay": 0.5, "backoff": 2, "jitter": 0}
    _create(cluster, node, _job("flaky", _task(gt, "--exit", "1"), retries=retries))
    run_id = _trigger(cluster, node, "flaky")["run_id"]

    seen: dict[int, dict[str, Any]] = {}  # attempt -> the run as first seen pending/running at it

    def finished() -> dict[str, Any] | None:
        run = _get_run(cluster, run_id, prefer=node)
        if run is None:
            return None
        seen.setdefault(run["attempt"], run)
        return run if run["state"] in TERMINAL else None

    run = _wait(finished, 20, f"run {run_id} to end", interval=0.02)
    assert run["state"] == "failed" and run["attempt"] == 3 and run["exit_code"] == 1, run
    assert sorted(seen) == [1, 2, 3], seen

    starts, ends = _events(gt, "start"), _events(gt, "end")
    assert [e["attempt"] for e in starts] == [1, 2, 3], starts
    assert [e["attempt"] for e in ends] == [1, 2, 3], ends
    assert {e["run"] for e in starts} == {run_id}
    # Each retry is due `delay` after the previous attempt's failure: 0.5 s, then 1 s (backoff 2).
    # (The ground truth's end is a few ms before the worker's finished_ms; a loaded host adds more.)
    waits: dict[int, float] = {}
    for attempt, delay in ((2, 0.5), (3, 1.0)):
        due = _ms(seen[attempt]["due_at"]) / 1000
        waits[attempt] = due - ends[attempt - 2]["t"]
        assert delay - 0.05 <= waits[attempt] <= delay + 0.4, (attempt, waits, seen[attempt])
        start = starts[attempt - 1]["t"]
        assert due - 0.05 <= start <= due + 1.0, (attempt, start - due)  # started at its due time
    assert 0.3 <= waits[3] - waits[2] <= 0.7, waits  # the delay doubled
    # A retry goes to another node than the attempt that failed.
    nodes = [e["node"] for e in starts]
    assert nodes[1] != nodes[0] and nodes[2] != nodes[1], nodes

    code, stats = cluster.api(node, "GET", "/v1/stats")
    assert code == 200
    job = stats["jobs"]["flaky"]
    assert (job["retried"], job["failed"], job["succeeded"]) == (2, 1, 0), job
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 3, 4. a node dies mid-run


def _run_on_a_follower(
    cluster: Cluster, job: dict[str, Any], gt: Path
) -> tuple[str, str, dict[str, Any], str]:
    """Create `job` and trigger it so that its run starts on a node that is not the leader.

    A ballast run pinned to the leader (by its zone tag) makes the leader the most loaded node, so
    least_loaded routing sends the trigger elsewhere. Returns (leader, ballast run id, the start
    event of the run, the run id).
    """
    leader = cluster.leader()
    ballast = _job(
        "ballast",
        {"type": "shell", "command": [sys.executable, "-c", "import time; time.sleep(120)"]},
        route={"tags": {"zone": _zone(cluster, leader)}},
    )
    _create(cluster, leader, ballast)
    ballast_id = _trigger(cluster, leader, "ballast")["run_id"]
    # Routing counts runs executing, as their start reports say: wait for the ballast's.
    _wait_run(cluster, ballast_id, {"running"}, timeout=5)
    _create(cluster, leader, job)
    run = _trigger(cluster, leader, job["id"])
    assert run["node"] != leader, run
    start = _wait(lambda: _events(gt, "start"), 10, "the run to start")[0]
    assert start["node"] == run["node"] and start["attempt"] == 1, start
    _wait_run(cluster, run["run_id"], {"running"}, timeout=5)
    return leader, ballast_id, start, run["run_id"]


def _kill_and_time_reassign(
    cluster: Cluster, victim: str, run_id: str, leader: str, moved: Callable[[dict[str, Any]], bool]
) -> tuple[float, dict[str, Any]]:
    """kill -9 `victim`; seconds until the run shows its move (REASSIGN committed), and the run then."""
    killed = time.monotonic()
    cluster.kill(victim)

    def check() -> dict[str, Any] | None:
        run = _get_run(cluster, run_id, prefer=leader)
        return run if run is not None and moved(run) else None

    run = _wait(check, 20, f"run {run_id} to move off {victim}", interval=0.02)
    return time.monotonic() - killed, run


def test_kill_node_at_least_once_runs_again_elsewhere(
    cluster3: Cluster, tmp_path: Path, reaper: list[int]
) -> None:
    cluster, gt = cluster3, tmp_path / "alo.jsonl"
    job = _job("long-alo", _task(gt, "--grandchild", "--sleep", "4"))
    leader, ballast_id, first, run_id = _run_on_a_follower(cluster, job, gt)
    victim = first["node"]
    grandchild = _wait(lambda: _events(gt, "grandchild"), 5, "the grandchild to start")[0]["child_pid"]
    reaper.extend([first["pid"], grandchild])

    took, run = _kill_and_time_reassign(cluster, victim, run_id, leader, lambda r: r["attempt"] >= 2)
    assert run["attempt"] == 2 and run["node"] not in (victim, None), run
    print(f"\nat_least_once: kill -9 {victim} -> reassigned (attempt 2 visible) in {took:.2f}s")
    # The task dies with its node (parent-death signal): attempt 1 does not run on beside attempt 2.
    _wait(lambda: _gone(first["pid"]), 3, "the task on the killed node to die with it")

    run = _wait_run(cluster, run_id, TERMINAL, timeout=20)
    assert run["state"] == "succeeded" and run["attempt"] == 2, run
    starts = _events(gt, "start")
    assert [(e["attempt"], e["node"]) for e in starts] == [(1, victim), (2, run["node"])], starts
    ends = _events(gt, "end")
    assert [(e["attempt"], e["node"]) for e in ends] == [(2, run["node"])], ends  # attempt 1 never ended

    code, stats = cluster.api(leader, "GET", "/v1/stats")
    assert stats["jobs"]["long-alo"]["reassigned"] == 1 and stats["jobs"]["long-alo"]["succeeded"] == 1
    code, _ = cluster.api(leader, "POST", f"/v1/runs/{ballast_id}/cancel")
    assert code == 202
    # The grandchild was out of the death signal's reach; the node's next life reaps it.
    print(f"grandchild of attempt 1 alive after the kill: {not _gone(grandchild)}")
    cluster.start(victim)
    _wait(lambda: _gone(grandchild), 15, "the restarted node to reap the grandchild of its last life")
    cluster.wait_same_digest()


def test_kill_node_at_most_once_run_is_lost(cluster3: Cluster, tmp_path: Path, reaper: list[int]) -> None:
    cluster, gt = cluster3, tmp_path / "amo.jsonl"
    job = _job("long-amo", _task(gt, "--sleep", "4"), delivery="at_most_once")
    leader, ballast_id, first, run_id = _run_on_a_follower(cluster, job, gt)
    victim = first["node"]
    reaper.append(first["pid"])

    took, run = _kill_and_time_reassign(cluster, victim, run_id, leader, lambda r: r["state"] != "running")
    assert run["state"] == "lost" and run["attempt"] == 1 and run["node"] == victim, run
    print(f"\nat_most_once: kill -9 {victim} -> lost in {took:.2f}s")
    _wait(lambda: _gone(first["pid"]), 3, "the task on the killed node to die with it")

    cluster.start(victim)  # not even its own node, back, starts it again
    cluster.wait_registered()
    time.sleep(1.5)
    starts = _events(gt, "start")
    assert len(starts) == 1 and starts[0]["attempt"] == 1 and starts[0]["node"] == victim, starts
    assert not _events(gt, "end")
    run = _get_run(cluster, run_id, prefer=leader)
    assert run is not None and run["state"] == "lost" and run["attempt"] == 1, run
    code, stats = cluster.api(leader, "GET", "/v1/stats")
    assert code == 200
    assert stats["jobs"]["long-amo"]["lost"] == 1 and stats["cluster"]["lost"] == 1, stats
    assert stats["jobs"]["long-amo"]["reassigned"] == 0, stats
    code, _ = cluster.api(leader, "POST", f"/v1/runs/{ballast_id}/cancel")
    assert code == 202
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 5. broadcast and shards


def test_broadcast_one_run_per_node_and_shards(cluster3: Cluster, tmp_path: Path) -> None:
    cluster = cluster3
    node = cluster.leader()
    start_ms = (int(time.time()) + 2) * 1000
    schedule = {"every": 1, "start_at": _iso(start_ms), "end_at": _iso(start_ms + 3500)}
    slots = [start_ms + k * 1000 for k in (1, 2, 3)]
    files = {"bc": tmp_path / "bc.jsonl", "sh5": tmp_path / "sh5.jsonl"}
    routes = {"bc": {"strategy": "broadcast"}, "sh5": {"strategy": "shards", "shards": 5}}
    for job_id, route in routes.items():
        _create(
            cluster,
            node,
            _job(job_id, _task(files[job_id]), route=route, overlap="allow") | {"schedule": schedule},
        )

    time.sleep(max(0.0, slots[-1] / 1000 - time.time()) + 0.5)
    for job_id, width in (("bc", 3), ("sh5", 5)):

        def all_done(job_id: str = job_id, width: int = width) -> list[dict[str, Any]] | None:
            code, body = cluster.api(node, "GET", f"/v1/jobs/{job_id}/runs?limit=100")
            runs = body["items"] if code == 200 else []
            done = len(runs) == 3 * width and all(r["state"] in TERMINAL for r in runs)
            return runs if done else None

        runs = _wait(all_done, 15, f"{job_id}: {3 * width} finished runs")
        by_id = {r["run_id"]: r for r in runs}
        expected = {f"{job_id}@{slot}~{i}" for slot in slots for i in range(width)}
        assert set(by_id) == expected, sorted(by_id)
        assert all(r["state"] == "succeeded" for r in runs), runs
        events = {e["run"]: e for e in _events(files[job_id], "start")}
        assert set(events) == expected, sorted(events)
        for rid, run in by_id.items():
            shard = int(rid.rsplit("~", 1)[1])
            ev = events[rid]
            assert (run["shard"], run["shards"]) == (shard, width), run
            told = (ev["shard"], ev["shards"], ev["node"], ev["attempt"])
            assert told == (shard, width, run["node"], 1), ev
            assert _ms(ev["scheduled_at"]) == _ms(run["scheduled_at"]), (ev, run)
        for slot in slots:
            nodes = [by_id[f"{job_id}@{slot}~{i}"]["node"] for i in range(width)]
            if job_id == "bc":
                # One run per node; the shard is the node's index among the nodes sorted by id.
                assert nodes == sorted(cluster.ids), nodes
            else:
                assert set(nodes) == set(cluster.ids), nodes  # 5 shards spread over all 3 nodes
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 6. cancel


def test_cancel_running_run_kills_it(cluster3: Cluster, tmp_path: Path, reaper: list[int]) -> None:
    cluster, gt = cluster3, tmp_path / "cancel.jsonl"
    node = cluster.leader()
    _create(cluster, node, _job("to-cancel", _task(gt, "--grandchild", "--sleep", "60")))
    run_id = _trigger(cluster, node, "to-cancel")["run_id"]
    grand = _wait(lambda: _events(gt, "grandchild"), 10, "the task to start")[0]
    pids = [grand["pid"], grand["child_pid"]]
    reaper.extend(pids)
    _wait_run(cluster, run_id, {"running"}, timeout=5)

    other = next(n for n in cluster.ids if n != node)
    code, body = cluster.api(other, "POST", f"/v1/runs/{run_id}/cancel")
    assert code == 202, body
    assert body["run_id"] == run_id and body["state"] == "cancelled", body
    _wait(lambda: all(_gone(p) for p in pids), 5, "the cancelled run's processes to go")
    time.sleep(0.5)  # a late report of the killed attempt must not overwrite the cancellation
    run = _get_run(cluster, run_id, prefer=node)
    assert run is not None and run["state"] == "cancelled" and run["attempt"] == 1, run
    assert len(_events(gt, "start")) == 1 and not _events(gt, "end")
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 7. manual trigger


def test_manual_trigger_env_override(cluster3: Cluster, tmp_path: Path) -> None:
    cluster, gt = cluster3, tmp_path / "manual.jsonl"
    node = cluster.leader()
    task = _task(gt, "--env", "X", "--env", "Y", env={"X": "0", "Y": "kept"})
    _create(cluster, node, _job("manual", task))

    before = int(time.time() * 1000)
    run = _trigger(cluster, node, "manual", {"env": {"X": "1"}})
    after = int(time.time() * 1000)
    match = re.fullmatch(r"manual@manual-(\d+)", run["run_id"])
    assert match and before - 50 <= int(match[1]) <= after + 50, run
    assert run["manual"] is True and run["attempt"] == 1, run
    done = _wait_run(cluster, run["run_id"], TERMINAL)
    assert done["state"] == "succeeded", done

    plain = _trigger(cluster, node, "manual")  # the override was for that run only
    assert plain["run_id"] != run["run_id"]
    assert _wait_run(cluster, plain["run_id"], TERMINAL)["state"] == "succeeded"

    starts = {e["run"]: e for e in _events(gt, "start")}
    assert starts[run["run_id"]]["env"] == {"X": "1", "Y": "kept"}, starts
    assert starts[plain["run_id"]]["env"] == {"X": "0", "Y": "kept"}, starts
    # The job's schedule is untouched by triggers.
    code, job = cluster.api(node, "GET", "/v1/jobs/manual")
    assert code == 200 and job["next_fire_at"].startswith("2099-01-01T00:00:00"), job
    cluster.wait_same_digest()


# ---------------------------------------------------------------- 8. drain on SIGTERM


def test_sigterm_drains_running_run(cluster3: Cluster, tmp_path: Path) -> None:
    cluster, gt = cluster3, tmp_path / "drain.jsonl"
    node = cluster.leader()
    _create(cluster, node, _job("short", _task(gt, "--sleep", "3")))
    run_id = _trigger(cluster, node, "short")["run_id"]
    start = _wait(lambda: _events(gt, "start"), 10, "the run to start")[0]
    victim = start["node"]

    signalled = time.time()
    status = cluster.stop(victim, timeout=20)  # SIGTERM; shutdown_grace_s = 10 > the task's 3 s
    exited = time.time()
    assert status == 0, (status, cluster.logs())
    ends = _events(gt, "end")
    assert len(ends) == 1 and ends[0]["node"] == victim, ends
    # The task still had most of its 3 s to go when the node was told to stop, and the node waited.
    assert signalled < ends[0]["t"] - 1.5 and ends[0]["t"] <= exited, (signalled, ends, exited)

    # Reported before the node exited: the survivors know the result without the dead node.
    cluster.leader(exclude=(victim,))
    code, run = cluster.api(cluster.alive()[0], "GET", f"/v1/runs/{run_id}?consistent=true")
    assert code == 200 and run["state"] == "succeeded" and run["attempt"] == 1, run
    assert run["node"] == victim, run
    time.sleep(3)  # past node_timeout_s: the victim is down now, and nothing was moved or re-run
    run = _get_run(cluster, run_id)
    assert run is not None and run["state"] == "succeeded" and run["attempt"] == 1, run
    assert len(_events(gt, "start")) == 1
    cluster.wait_same_digest()


def _metronome(gt: Path, route: dict[str, Any]) -> dict[str, Any]:
    return {"id": "metro", "schedule": {"every": 1}, "overlap": "allow", "task": _task(gt), "route": route}


def _drain_node_running_a_job(cluster: Cluster, victim: str, gt: Path) -> tuple[float, float]:
    """Run a 4 s job on `victim`, SIGTERM it mid-run; (signalled, exited) wall-clock times."""
    short = _job("short", _task(gt, "--sleep", "4"), route={"tags": {"zone": _zone(cluster, victim)}})
    _create(cluster, cluster.leader(), short)
    _trigger(cluster, cluster.leader(), "short")
    _wait(lambda: _events(gt, "start"), 10, "the short run to start")
    signalled = time.time()
    status = cluster.stop(victim, timeout=20)
    exited = time.time()
    assert status == 0, cluster.logs()
    assert len(_events(gt, "end")) == 1  # drained: the 4 s run finished
    return signalled, exited


def test_sigterm_leader_keeps_the_cluster_scheduling(cluster3: Cluster, tmp_path: Path) -> None:
    cluster, gt, metro = cluster3, tmp_path / "short.jsonl", tmp_path / "metro.jsonl"
    leader = cluster.leader()
    follower = next(n for n in cluster.ids if n != leader)
    _create(cluster, leader, _metronome(metro, {"tags": {"zone": _zone(cluster, follower)}}))
    time.sleep(2)
    signalled, exited = _drain_node_running_a_job(cluster, leader, gt)
    survivor = cluster.leader(exclude=(leader,))
    time.sleep(2.5)

    code, body = cluster.api(survivor, "GET", "/v1/jobs/metro/runs?limit=100")
    assert code == 200
    # A quorum was up all along (the draining leader still ran Raft): slots due while it drained are on time.
    window = [r for r in body["items"] if signalled + 0.2 <= _ms(r["due_at"]) / 1000 <= exited - 0.2]
    assert len(window) >= 2, body["items"]
    late = [(r["run_id"], r["lateness"]) for r in window if r["lateness"] is None or r["lateness"] > 0.5]
    assert not late, f"slots due during the leader's drain started late: {late}"
    cluster.wait_same_digest()


def test_sigterm_node_takes_no_new_runs_while_draining(cluster3: Cluster, tmp_path: Path) -> None:
    cluster, gt, metro = cluster3, tmp_path / "short.jsonl", tmp_path / "metro.jsonl"
    leader = cluster.leader()
    victim = next(n for n in cluster.ids if n != leader)
    _create(cluster, leader, _metronome(metro, {"strategy": "round_robin"}))  # every node in turn
    time.sleep(2)
    signalled, exited = _drain_node_running_a_job(cluster, victim, gt)
    time.sleep(4)  # past node_timeout_s: whatever it was given has been moved and run

    code, body = cluster.api(leader, "GET", "/v1/jobs/metro/runs?limit=100")
    assert code == 200
    # Fires committed while the node drained must go to the other nodes, and start on time.
    window = [r for r in body["items"] if signalled + 0.3 <= _ms(r["created_at"]) / 1000 <= exited]
    assert len(window) >= 3, body["items"]
    given = [
        (r["run_id"], r["attempt"], r["reason"], r["lateness"])
        for r in window
        if r["attempt"] != 1 or r["node"] == victim or r["lateness"] is None or r["lateness"] > 0.5
    ]
    assert not given, f"runs fired to the draining node {victim}: {given}"
    cluster.wait_same_digest()
