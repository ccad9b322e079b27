"""A partition that resets connections (iptables `REJECT --reject-with tcp-reset`), on a real
3-node cluster: docs/design.md ("Death detection") says the cut-off node looks exactly like a
dead process, may be committed down by the fast path though it is alive, and that this is
acceptable because every guarantee of a silent partition holds without the wait. This test holds
the design to that, with a follower cut for CUT_S seconds while it holds a run:

- the follower is committed down while alive (by which path, and how fast, is printed);
- every run it held is taken back while it is cut: moved with attempt + 1 to another node, or,
  `at_most_once` and claimed, recorded `lost`;
- ground truth: an `at_least_once` run re-executes only with a higher attempt; an
  `at_most_once` run never starts twice (a lost one at most once, on the cut-off node);
- after healing: the node is committed up, every node has the same digest, and the ten checkers
  of tests/chaoskit find no violation over the recorded history (no lost slot above all).

Two moments: `ahead` cuts while the follower holds a pending run not yet due; `mid_run` cuts
while it runs an `at_most_once` run (claimed in the log before it started: it must become
`lost` and never start elsewhere; its result, reported after healing, is refused).

Root and iptables only (scripts/install-chaos-tools; CI runs as root): it skips otherwise. Each
node runs under its own test-only gid (tests/chaoskit/harness.py); every rule is tagged and
removed by `heal()` and again by `close()`, and rules and nodes left by a killed run are removed
when the next one starts.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from chaoskit.groundtruth import Execution, executions, read_events, shell_task
from chaoskit.harness import ChaosCluster, partition_unavailable
from chaoskit.scenario import ChaosRun

pytestmark = pytest.mark.integration

NODE_TIMEOUT_S = 6  # the slow path, far from the fast path's ~1 s: the two are told apart
CUT_S = 6.0
SEED = 11  # the bad-input probes pick a node by it; nothing else here is random
AMO_SLEEP_S = 0.5  # long enough to cut an at_most_once run while it runs


def _jobs(gt_dir: Path) -> list[dict[str, Any]]:
    """Two jobs firing every second with ground-truth tasks; overlap forbid, misfire fire_once."""
    return [
        {"id": "alo", "schedule": {"every": 1}, "overlap": "forbid", "task": shell_task(gt_dir, 0.2)},
        {
            "id": "amo",
            "schedule": {"every": 1},
            "delivery": "at_most_once",
            "task": shell_task(gt_dir, AMO_SLEEP_S),
        },
    ]


def _s(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


@pytest.fixture
def run() -> Iterator[ChaosRun]:
    reason = partition_unavailable()
    if reason:
        pytest.skip(reason)
    # ChaosRun kills the nodes of a run that was killed, ChaosCluster removes its tagged rules.
    made = ChaosRun(
        size=3,
        seed=SEED,
        churn=False,
        oneshots=False,
        races=False,
        cluster_keys={"node_timeout_s": NODE_TIMEOUT_S},
    )
    made.jobs = _jobs(made.cluster.gt_dir)  # the ground-truth directory is the cluster's
    try:
        yield made
    finally:
        keep = bool(os.environ.get("RAFTSCHED_KEEP"))  # keep the data dirs and node logs to debug
        made.close(keep=keep)  # every node by pid, every tagged rule, the run directory
        if keep:
            print(f"kept {made.root}")


def _pending(cluster: ChaosCluster, leader: str) -> list[dict[str, Any]]:
    code, body = cluster.api(leader, "GET", "/v1/runs?state=pending&limit=100", timeout=3)
    assert code == 200, body
    return list(body["items"])


def _run_held_by_a_follower(
    cluster: ChaosCluster, leader: str, job: str | None, timeout: float = 15
) -> dict[str, Any]:
    """A pending run (of `job`, or any) that a follower holds, falling due 0.3 to 1.5 s from now."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.time()
        for r in _pending(cluster, leader):
            if r["node"] != leader and job in (None, r["job_id"]) and 0.3 <= _s(r["due_at"]) - now <= 1.5:
                return r
        time.sleep(0.05)
    raise AssertionError(f"no follower was given a run of {job or 'any job'} in {timeout} s")


def _wait_started(cluster: ChaosCluster, run: dict[str, Any], timeout: float = 3) -> Execution:
    """The ground truth's start of `run` on its node, as soon as the task has written it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for ex in executions(read_events(cluster.gt_dir)):
            if ex.run_id == run["run_id"] and ex.node == run["node"]:
                return ex
        time.sleep(0.01)
    raise AssertionError(f"{run['run_id']} never started on {run['node']}\n{cluster.logs()}")


def _wait_alive(
    cluster: ChaosCluster, via: str, node: str, alive: bool, since: float, timeout: float
) -> tuple[float, dict[str, Any]]:
    """Poll `via`'s committed view until `node` is (not) alive; seconds after `since`, its record."""
    while time.monotonic() - since < timeout:
        try:
            code, body = cluster.api(via, "GET", "/v1/nodes", timeout=2)
        except OSError:
            code, body = 0, None
        if code == 200:
            record: dict[str, Any] = next(n for n in body["items"] if n["id"] == node)
            if record["alive"] == alive:
                return time.monotonic() - since, record
        time.sleep(0.05)
    raise AssertionError(f"{node} not committed {'up' if alive else 'down'} in {timeout} s\n{cluster.logs()}")


@pytest.mark.parametrize("moment", ["ahead", "mid_run"])
def test_a_follower_cut_off_by_tcp_resets_is_judged_dead_and_every_guarantee_holds(
    run: ChaosRun, moment: str
) -> None:
    cluster = run.cluster
    run.start()
    time.sleep(3)  # a few slots of steady state

    leader = run.leader()
    target = _run_held_by_a_follower(cluster, leader, "amo" if moment == "mid_run" else None)
    victim = str(target["node"])
    survivor = next(n for n in cluster.ids if n not in (leader, victim))
    running = _wait_started(cluster, target) if moment == "mid_run" else None
    # What the victim holds and cannot finish before the cut (the runs due after it, and the one
    # it is running): the leader must take every one back while the victim is cut.
    before = time.time() + 0.1
    held = {
        r["run_id"]: r for r in _pending(cluster, leader) if r["node"] == victim and _s(r["due_at"]) > before
    }
    if running is not None:
        held[target["run_id"]] = target
    cluster.isolate_rejecting(victim)
    cut_at = time.monotonic()
    assert time.time() < before, "too slow to cut before the held runs fell due"
    if running is not None:
        assert cut_at < running.start_mono + AMO_SLEEP_S, "cut after the at_most_once run ended"
    # Down by either path: the wait covers the timeout's down too.
    down_s, down = _wait_alive(cluster, leader, victim, alive=False, since=cut_at, timeout=NODE_TIMEOUT_S + 3)
    assert cluster.procs[victim].poll() is None  # judged dead, yet alive
    time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))
    cluster.heal()
    healed_at = time.monotonic()
    up_s, _ = _wait_alive(cluster, survivor, victim, alive=True, since=healed_at, timeout=20)

    history, results, report = run.finish()  # quiesce, collect from every node, the ten checkers
    bad = {r.name: r.violations[:5] for r in results if r.violations}
    assert not bad, f"invariants violated: {bad}\n{cluster.logs()}"
    cluster.wait_same_digest(timeout=30)
    assert report["slots_due"] >= 2 * CUT_S, report  # both jobs fired through the cut, all accounted

    final = {r["run_id"]: r for r in history.records[leader]}
    by_run: dict[str, list[Execution]] = defaultdict(list)
    for ex in executions(read_events(cluster.gt_dir)):
        by_run[ex.run_id].append(ex)
    # at_least_once: re-executed only with a higher attempt; at_most_once: never two starts.
    for run_id, exs in by_run.items():
        attempts = [ex.attempt for ex in exs]
        allowed = len(set(attempts)) == len(attempts) if exs[0].job == "alo" else len(exs) == 1
        assert allowed, (run_id, [(ex.node, ex.attempt) for ex in exs])
    # Every held run was taken back: moved (a higher attempt, elsewhere), or lost (at_most_once,
    # claimed); its old attempt ran, if at all, on the victim alone.
    for run_id, was in held.items():
        now = final[run_id]
        moved = now["attempt"] > was["attempt"] and now["node"] != victim
        assert moved or (now["job_id"] == "amo" and now["state"] == "lost"), (was, now)
        assert all(ex.node == victim for ex in by_run[run_id] if ex.attempt == was["attempt"]), by_run[run_id]
    if running is not None:  # claimed before it started: lost, its late result refused
        assert final[target["run_id"]]["state"] == "lost", final[target["run_id"]]

    cut_off = sorted(
        (ex.job, ex.attempt)
        for exs in by_run.values()
        for ex in exs
        if ex.node == victim and cut_at <= ex.start_mono <= healed_at
    )
    twice = sorted(run_id for run_id, exs in by_run.items() if len(exs) > 1)
    path = "the fast path" if down["down_reason"] == "refused connections" else "the timeout"
    print(
        f"\n[{moment}] {victim} cut by TCP resets: committed down after {down_s:.2f} s by {path} "
        f"({down['down_reason']!r}), up {up_s:.2f} s after healing a {CUT_S:.0f} s cut; held "
        f"{[(r, final[r]['state'], final[r]['attempt'], final[r]['node']) for r in sorted(held)]}; "
        f"started by the cut-off node: {cut_off}; executed twice: {twice}; "
        f"lost: {sorted(r for r, x in final.items() if x['state'] == 'lost')}; "
        f"slots due {report['slots_due']}, executions {report['executed']}, lost slots 0"
    )
