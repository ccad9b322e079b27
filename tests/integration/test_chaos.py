"""The CI chaos tier (TESTING.md): real 3-node clusters with every workload running, one fault
each, then the ten checkers over the recorded history. The long runs are scripts/chaos.py.

Partitions need root and iptables (scripts/install-chaos-tools installs it; CI runs as root):
the isolation test skips with the reason otherwise. Regression tests for what the chaos found
are at the end (each was marked xfail(strict) until raftsched was fixed).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from chaoskit.checkers import Result
from chaoskit.figures import table
from chaoskit.groundtruth import shell_task
from chaoskit.harness import ChaosCluster, make_root, partition_unavailable
from chaoskit.history import page_all
from chaoskit.scenario import ChaosRun

pytestmark = pytest.mark.integration

MakeRun = Callable[..., ChaosRun]


@pytest.fixture
def chaos() -> Iterator[MakeRun]:
    runs: list[ChaosRun] = []

    def make(**kwargs: Any) -> ChaosRun:
        run = ChaosRun(size=3, seed=kwargs.pop("seed", 1), **kwargs)
        runs.append(run)
        return run

    yield make
    keep = bool(os.environ.get("RAFTSCHED_KEEP"))  # keep the data dirs and node logs to debug
    for run in runs:
        run.close(keep=keep)
        if keep:
            print(f"kept {run.root}")


def verdict(run: ChaosRun) -> tuple[list[Result], dict[str, Any]]:
    # A node catching up after a pause may start a run the log has cancelled meanwhile: the bug
    # pinned by test_a_node_catching_up_never_starts_a_cancelled_run; tolerated here for 5 s.
    history, results, report = run.finish(catch_up_s=5.0)
    print("\n" + table(report))
    bad = {r.name: r.violations[:5] for r in results if r.violations}
    assert not bad, f"invariants violated: {bad}\n{run.cluster.logs()}"
    assert report["executed"] > 20 and report["slots_due"] > 20, report
    writes = next(r for r in results if r.name.startswith("7 "))  # linearizable admin writes
    assert writes.counts["states_checked"] > 20, writes.counts
    return results, report


def test_leader_kill_9(chaos: MakeRun) -> None:
    run = chaos()
    run.start()
    time.sleep(6)
    run.fault("kill", "leader", duration_s=3)
    time.sleep(6)
    _, report = verdict(run)
    assert report["failover_s"]["n"] >= 1


def test_leader_pause_past_the_election_timeout(chaos: MakeRun) -> None:
    run = chaos(seed=2)
    run.start()
    time.sleep(6)
    old = run.leader()
    run.fault("pause", old, duration_s=3)  # the election timeout is at most 1.5 s
    time.sleep(6)
    _, report = verdict(run)
    assert any(
        e["old_leader"] == old and e["new_leader"] not in (None, old) for e in report["failover_s"]["events"]
    ), report["failover_s"]


def test_leader_isolation(chaos: MakeRun) -> None:
    reason = partition_unavailable()
    if reason:
        pytest.skip(reason)
    run = chaos(seed=3)
    run.start()
    time.sleep(6)
    old = run.leader()
    run.fault("isolate", old, duration_s=4)
    time.sleep(6)
    _, report = verdict(run)
    assert any(e["old_leader"] == old for e in report["failover_s"]["events"]), report["failover_s"]


def test_one_way_cuts(chaos: MakeRun) -> None:
    """A follower that cannot answer the leader (mute), then one that no longer hears it (deaf:
    it calls elections the others hear)."""
    reason = partition_unavailable()
    if reason:
        pytest.skip(reason)
    run = chaos(seed=5)
    run.start()
    time.sleep(6)
    run.fault("oneway", "follower", duration_s=4, direction="mute")
    time.sleep(5)
    run.fault("oneway", "follower", duration_s=4, direction="deaf")
    time.sleep(6)
    _, report = verdict(run)
    assert report["fault_count"] >= 2, report


def test_full_cluster_restart_keeps_every_job_and_run(chaos: MakeRun) -> None:
    run = chaos(seed=4)
    run.start()
    time.sleep(6)
    node = run.leader()
    before_jobs = {j["id"]: j for j in page_all(run.cluster, node, "/v1/jobs?consistent=true")}
    before_runs = {r["run_id"]: r for r in page_all(run.cluster, node, "/v1/runs")}
    run.fault("restart_all", duration_s=1)
    run.cluster.leader(timeout=60)
    run.cluster.wait_healthy(timeout=60)
    node = run.leader()
    after_jobs = {j["id"]: j for j in page_all(run.cluster, node, "/v1/jobs?consistent=true")}
    after_runs = {r["run_id"]: r for r in page_all(run.cluster, node, "/v1/runs")}
    deleted = {op.job for op in run.log.ops if op.kind == "delete" and op.status != "failed"}
    missing_jobs = [j for j in before_jobs if j not in after_jobs and j not in deleted]
    assert not missing_jobs, missing_jobs
    for job_id, job in before_jobs.items():
        if job_id in after_jobs:
            assert after_jobs[job_id]["version"] >= job["version"], (job, after_jobs[job_id])
    kept = [r for r in before_runs.values() if r["job_id"] not in deleted]
    assert all(r["run_id"] in after_runs for r in kept), [
        r["run_id"] for r in kept if r["run_id"] not in after_runs
    ]
    time.sleep(5)
    verdict(run)


# ---------------------------------------------------------------- regressions: what the chaos found


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.fixture
def plain() -> Iterator[ChaosCluster]:
    cluster = ChaosCluster(make_root(), 3, cluster_keys={"lookahead_s": 2, "node_timeout_s": 2})
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    yield cluster
    cluster.close()
    import shutil

    shutil.rmtree(cluster.root, ignore_errors=True)


def test_a_schedule_edit_loses_no_slot_of_the_new_schedule(plain: ChaosCluster) -> None:
    """Found by scripts/chaos.py (churn clients editing `every`): with lookahead 2 s a job every
    1 s has slots C+1000 and C+2000 committed at once; an edit to every 1.5 s at C+300 cancels
    both (neither is a 1.5 s slot) but the job's last slot stays C+2000, so C+1500, a slot of the
    new schedule after the edit, is never fired and no skipped record says why."""
    job = {"id": "edited", "schedule": {"every": 1}, "overlap": "allow", "task": shell_task(plain.gt_dir)}
    code, created = plain.api("n1", "POST", "/v1/jobs", job)
    assert code == 201, created
    start = _ms(created["created_at"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        runs = plain.api("n1", "GET", "/v1/jobs/edited/runs")[1]["items"]
        if len(runs) >= 2:
            break
        time.sleep(0.02)
    assert time.time() * 1000 < start + 1200, "too slow to edit before the new schedule's first slot"
    code, body = plain.api(
        "n1",
        "PUT",
        "/v1/jobs/edited",
        {**job, "schedule": {"every": 1.5}},
        headers={"If-Match": str(created["version"])},
    )
    assert code == 200, body
    edited_ms = time.time() * 1000
    time.sleep(4.5)
    plain.api("n1", "POST", "/v1/jobs/edited/pause")
    runs = plain.api("n1", "GET", "/v1/jobs/edited/runs?limit=1000")[1]["items"]
    slots = {_ms(r["scheduled_at"]): r for r in runs}
    new_slots = [start + k * 1500 for k in range(1, 4) if start + k * 1500 > edited_ms]
    unaccounted = [s - start for s in new_slots if s not in slots]
    assert not unaccounted, (
        f"slots (ms after creation) of the new schedule with no run or record: {unaccounted}"
    )


def _journal_damage(cluster: ChaosCluster, mode: str) -> dict[str, Any]:
    """Load a job, stop a follower, damage its journal, start it: it must refuse to start (exit
    non-zero, saying why) or recover its peers' state; it must never run on a different state."""
    job = {"id": "tick", "schedule": {"every": 0.5}, "overlap": "allow", "task": shell_task(cluster.gt_dir)}
    assert cluster.api("n1", "POST", "/v1/jobs", job)[0] == 201
    time.sleep(3)
    victim = next(n for n in cluster.ids if n != cluster.leader())
    cluster.stop(victim)
    info = cluster.damage_journal(victim, mode)
    log_at = (cluster.root / f"{victim}.log").stat().st_size
    cluster.start(victim)
    code = cluster.exit_status(victim, timeout=6)
    tail = (cluster.root / f"{victim}.log").read_bytes()[log_at:].decode(errors="replace")
    if code is not None:
        assert code != 0 and "journal" in tail.lower(), f"exited {code} without saying why:\n{tail[-2000:]}"
        return {**info, "result": "refused", "exit": code}
    cluster.wait_same_digest(timeout=15)  # AssertionError: the node serves another state
    return {**info, "result": "recovered"}


def test_a_truncated_journal_is_refused_or_recovered(plain: ChaosCluster) -> None:
    _journal_damage(plain, "truncate")


def test_a_bit_flipped_journal_is_refused_or_recovered(plain: ChaosCluster) -> None:
    _journal_damage(plain, "flip-json")


def test_a_node_catching_up_never_starts_a_cancelled_run(plain: ChaosCluster) -> None:
    """Found by scripts/chaos.py (seed 2, n2 paused) and the pause scenario above: fires for a paused
    node, cancelled (job paused) while it is still stopped, must never start when it resumes."""
    noise = {
        "id": "noise",
        "schedule": {"every": 0.1},
        "overlap": "allow",
        "route": {"tags": {"zone": "a"}},
        "task": {"type": "shell", "command": ["true"]},
    }  # a backlog of entries for n2 to apply
    assert plain.api("n1", "POST", "/v1/jobs", noise)[0] == 201
    started_ms = []
    for attempt in range(4):  # a race: before the fix it showed within 1-4 tries; stop at the first
        if started_ms:
            break
        job_id = f"pinned-{attempt}"
        plain.pause("n2")
        job = {
            "id": job_id,
            "schedule": {"every": 0.1},
            "overlap": "allow",
            "route": {"tags": {"zone": "b"}},  # n2 only
            "task": shell_task(plain.gt_dir, 0.2),
        }
        # Forced: n2, the only node in zone b, is stopped and may already be known down.
        assert plain.api("n1", "POST", "/v1/jobs?force=true", job)[0] == 201
        time.sleep(4)
        code, paused = plain.api("n1", "POST", f"/v1/jobs/{job_id}/pause")
        assert code == 200, paused
        cancelled_ms = time.time() * 1000
        time.sleep(0.5)
        plain.resume("n2")
        time.sleep(3)
        events = [e for e in _events(plain) if e["job"] == job_id and e["ev"] == "start"]
        started_ms += [e["wall_ms"] - cancelled_ms for e in events]
    assert not started_ms, f"runs started {started_ms} ms after the log had cancelled them"


def _events(cluster: ChaosCluster) -> list[dict[str, Any]]:
    from chaoskit.groundtruth import read_events

    return read_events(cluster.gt_dir)


def test_a_paused_jobs_run_is_not_started_again_when_its_node_dies(plain: ChaosCluster) -> None:
    """Found by scripts/chaos.py (seed 3111, the slot races): a run was running on n2 when its job
    was paused (a pause cancels pending runs only); n2 was killed, and the new leader reassigned
    the running run (at_least_once: attempt 2, due now) to a live node, which started it 6.8 s
    after the pause was acknowledged (invariant 6)."""
    job = {"id": "long", "schedule": {"every": 1}, "overlap": "allow", "task": shell_task(plain.gt_dir, 20)}
    assert plain.api("n1", "POST", "/v1/jobs", job)[0] == 201
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [e for e in _events(plain) if e["job"] == "long"]:
        time.sleep(0.1)
    node = next(e["node"] for e in _events(plain) if e["job"] == "long")
    api = next(n for n in plain.ids if n != node)
    code, body = plain.api(api, "POST", "/v1/jobs/long/pause")
    assert code == 200, body
    paused_ms = time.time() * 1000
    plain.kill(node)
    time.sleep(8)  # node_timeout_s (2), an election if it led, and a reassignment
    later = [
        (e["node"], e["attempt"], round(e["wall_ms"] - paused_ms))
        for e in _events(plain)
        if e["job"] == "long" and e["ev"] == "start" and e["wall_ms"] > paused_ms + 500
    ]
    assert not later, f"runs of the paused job started (node, attempt, ms after the pause): {later}"


def test_an_edit_after_a_slot_fell_due_unfired_loses_no_slot(plain: ChaosCluster) -> None:
    """Found by scripts/chaos.py (5 nodes, seed 3302, the slot races): a `queue` job whose run is
    active has its next slot fired at the due time, not ahead; an edit (every 1 s -> 2 s) applied
    31 ms after that slot fell due, before the leader's fire, left the job planned from its last
    fired slot on the new schedule: the slot was neither run nor recorded missed (a pause records
    such slots missed since e0b84a9; an edit does not)."""
    from chaoskit.workload import next_slot_ms

    lost: list[int] = []
    for attempt in range(5):  # a race of a few ms: stop at the first loss
        if lost:
            break
        job_id = f"edited-{attempt}"
        job = {
            "id": job_id,
            "schedule": {"every": 1},
            "overlap": "queue",
            "task": shell_task(plain.gt_dir, 1.5),
        }
        leader = plain.leader()
        code, created = plain.api(leader, "POST", "/v1/jobs", job)
        assert code == 201, created
        time.sleep(2.5)  # a run is active: the next slots wait for their due time
        code, view = plain.api(leader, "GET", f"/v1/jobs/{job_id}")
        slot = next_slot_ms(view, time.time() * 1000 + 300)
        if (slot - _ms(view["created_at"])) % 2000 == 0:
            slot += 1000  # a slot of the old schedule only
        time.sleep(max(0.0, (slot + 2) / 1000 - time.time()))
        edit = {**job, "schedule": {"every": 2}}
        code, body = plain.api(
            leader, "PUT", f"/v1/jobs/{job_id}", edit, headers={"If-Match": str(view["version"])}
        )
        assert code == 200, body
        time.sleep(3)
        plain.api(leader, "POST", f"/v1/jobs/{job_id}/pause")
        runs = plain.api(leader, "GET", f"/v1/jobs/{job_id}/runs?limit=1000")[1]["items"]
        covered = any(
            _ms(r["scheduled_at"]) <= slot <= _ms(r.get("until") or r["scheduled_at"]) for r in runs
        )
        if not covered:
            lost.append(slot)
    assert not lost, f"slots due before the edit, neither run nor recorded: {lost}"
