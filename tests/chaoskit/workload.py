"""The workloads a chaos run drives at once, and the bad-input probes (invariant 10).

- metronomes: `every` jobs running the ground-truth task (and one HTTP job calling the Sink);
- a 6-field cron job (seconds first);
- one-shot `at` jobs created a few seconds ahead, so that faults fall between create and fire;
- overlapping long runs (the task outlives the period) under each overlap policy;
- an `at_most_once` job;
- churn: admin clients creating, CAS-updating (GET, then PUT with If-Match), pausing, resuming and
  deleting a small pool of jobs on random nodes, recording every operation (history.AdminClient);
- slot races: pauses, resumes, edits and deletes of a job of each overlap policy and of an
  at_most_once job, each sent a few ms to `lookahead_s` before one of the job's due slots (while
  that slot's fire is committed ahead, or its worker is about to start it); some of these jobs are
  left paused for the rest of the run, so that the end accounts for paused ranges too.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .groundtruth import shell_task
from .harness import ChaosCluster
from .history import AdminClient, OpLog

__all__ = ["Churn", "OneShots", "SlotRacer", "base_jobs", "create_jobs", "probe_bad_input", "race_jobs"]

FIRE_ALL = {"policy": "fire_all", "grace": 120, "max_catchup": 1000}
OVERLAP_POLICIES = ("forbid", "allow", "replace", "queue")


def _job(job_id: str, schedule: dict[str, Any], task: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "schedule": schedule,
        "task": task,
        "misfire": FIRE_ALL,
        "overlap": "allow",
        **extra,
    }


def base_jobs(gt_dir: Path, sink_url: str | None = None, overlap: bool = True) -> list[dict[str, Any]]:
    jobs = [
        _job("metronome", {"every": 0.5}, shell_task(gt_dir)),
        _job("cron6", {"cron": "*/2 * * * * *"}, shell_task(gt_dir)),
        _job("amo", {"every": 1}, shell_task(gt_dir, 0.2), delivery="at_most_once"),
    ]
    if sink_url:
        task = {"type": "http", "method": "POST", "url": f"{sink_url}/metronome-http", "body": {"x": 1}}
        jobs.append(_job("metronome-http", {"every": 1}, task))
    if overlap:
        jobs += [
            _job(f"ov-{policy}", {"every": 1}, shell_task(gt_dir, 2.5), overlap=policy)
            for policy in OVERLAP_POLICIES
        ]
    return jobs


def race_jobs(gt_dir: Path) -> list[dict[str, Any]]:
    """SlotRacer's jobs: one of each overlap policy whose runs outlive the period (a run is active
    at most slots), and an at_most_once job (its claim is committed ahead of the slot)."""
    jobs = [
        _job(f"race-{policy}", {"every": 1}, shell_task(gt_dir, 1.2), overlap=policy)
        for policy in OVERLAP_POLICIES
    ]
    jobs.append(_job("race-amo", {"every": 1}, shell_task(gt_dir, 0.2), delivery="at_most_once"))
    return jobs


def create_jobs(cluster: ChaosCluster, client: AdminClient, jobs: list[dict[str, Any]]) -> None:
    nodes = cluster.alive()
    for i, job in enumerate(jobs):
        op = client.write("create", job["id"], nodes[i % len(nodes)], "POST", "/v1/jobs", job, retries=30)
        if op.status != "ok":
            raise RuntimeError(f"could not create {job['id']}: {op.status} {op.http} {op.code}")


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Loop:
    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.threads: list[threading.Thread] = []

    def stop(self, wait_s: float = 60) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(wait_s)

    def _nodes(self, cluster: ChaosCluster) -> list[str]:
        with contextlib.suppress(RuntimeError):
            return list(cluster.alive())
        return []


class OneShots(_Loop):
    """Creates an `at` job every `period_s`, due 1-6 s later."""

    def __init__(
        self, cluster: ChaosCluster, log: OpLog, gt_dir: Path, seed: int, period_s: float = 4
    ) -> None:
        super().__init__()
        self.cluster, self.client = cluster, AdminClient(cluster, log, "oneshots")
        self.gt_dir, self.rng, self.period_s = gt_dir, random.Random(seed), period_s

    def start(self) -> None:
        t = threading.Thread(target=self._run, daemon=True, name="oneshots")
        self.threads.append(t)
        t.start()

    def _run(self) -> None:
        n = 0
        while not self.stop_event.wait(self.period_s):
            nodes = self._nodes(self.cluster)
            if not nodes:
                continue
            n += 1
            job = _job(f"at-{n}", {"at": _iso(time.time() + self.rng.uniform(1, 6))}, shell_task(self.gt_dir))
            self.client.write("create", job["id"], self.rng.choice(nodes), "POST", "/v1/jobs", job)


class Churn(_Loop):
    """`clients` threads doing create / CAS update / pause / resume / delete on a pool of jobs."""

    def __init__(
        self,
        cluster: ChaosCluster,
        log: OpLog,
        gt_dir: Path,
        seed: int,
        clients: int = 3,
        pool: int = 6,
        pace_s: float = 0.3,
        reschedule: bool = True,
    ) -> None:
        super().__init__()
        self.reschedule = reschedule  # updates change `every` (False: only the description)
        self.cluster, self.log, self.gt_dir = cluster, log, gt_dir
        self.seed, self.clients, self.pace_s = seed, clients, pace_s
        self.pool = [f"churn-{i}" for i in range(pool)]
        self.tokens = 0
        self.lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.clients):
            t = threading.Thread(target=self._run, args=(i,), daemon=True, name=f"churn-{i}")
            self.threads.append(t)
            t.start()

    def _token(self, client: int) -> str:
        with self.lock:
            self.tokens += 1
            return f"c{client}-{self.tokens}"

    def _spec(self, job: str, rng: random.Random, client: int) -> dict[str, Any]:
        every = rng.choice([1, 1.5, 2]) if self.reschedule else 1
        return _job(
            job,
            {"every": every},
            shell_task(self.gt_dir, 0.1),
            description=self._token(client),
            misfire=FIRE_ALL,
        )

    def _run(self, client: int) -> None:
        rng = random.Random(self.seed * 1000 + client)
        admin = AdminClient(self.cluster, self.log, f"churn{client}")
        while not self.stop_event.wait(rng.uniform(0.5, 1.5) * self.pace_s):
            nodes = self._nodes(self.cluster)
            if not nodes:
                continue
            node, job = rng.choice(nodes), rng.choice(self.pool)
            kind = rng.choices(["create", "update", "pause", "resume", "delete"], [3, 4, 2, 2, 1])[0]
            try:
                self._one(admin, rng, client, kind, job, node)
            except Exception:  # noqa: BLE001 - a client error must not end the run; the op is recorded
                continue

    def _one(
        self, admin: AdminClient, rng: random.Random, client: int, kind: str, job: str, node: str
    ) -> None:
        if kind == "create":
            admin.write("create", job, node, "POST", "/v1/jobs", self._spec(job, rng, client))
        elif kind == "update":
            code, current = self.cluster.api(node, "GET", f"/v1/jobs/{job}", timeout=5)
            if code != 200:
                return
            spec = self._spec(job, rng, client)
            spec["paused"] = current.get("paused", False)
            admin.write("update", job, node, "PUT", f"/v1/jobs/{job}", spec, if_match=current["version"])
        elif kind in ("pause", "resume"):
            admin.write(kind, job, node, "POST", f"/v1/jobs/{job}/{kind}")
        else:
            delete_job(self.cluster, self.log, admin, job, node)


def delete_job(cluster: ChaosCluster, log: OpLog, admin: AdminClient, job: str, node: str) -> None:
    """Delete a job, its runs read first (a delete removes them; the checkers need them)."""
    with contextlib.suppress(OSError, ValueError):
        code, runs = cluster.api(node, "GET", f"/v1/jobs/{job}/runs?limit=1000", timeout=5)
        if code == 200:
            with log.lock:
                log.snapshots.extend(runs["items"])
    admin.write("delete", job, node, "DELETE", f"/v1/jobs/{job}")


def next_slot_ms(view: dict[str, Any], after_ms: float) -> float:
    """The first slot of an `every` job's grid (from its creation) after `after_ms`."""
    period = float(view["schedule"]["every"]) * 1000
    created = datetime.fromisoformat(view["created_at"].replace("Z", "+00:00")).timestamp() * 1000
    return created + (max(0, (after_ms - created) // period) + 1) * period


class SlotRacer(_Loop):
    """One thread per race job: read the job, pick a state change and a lead (a few ms up to
    `lookahead_s`), wait until that long before its next due slot, then send the change. After
    `park_after` changes (drawn from the seed; None for about half the jobs) a job is paused and
    left paused to the end of the run."""

    LEADS_S = (0.003, 0.015, 0.05, 0.15, 0.4, 1.0)

    def __init__(
        self,
        cluster: ChaosCluster,
        log: OpLog,
        gt_dir: Path,
        seed: int,
        lookahead_s: float = 2.0,
        reschedule: bool = True,
    ) -> None:
        super().__init__()
        self.cluster, self.log, self.seed = cluster, log, seed
        self.reschedule = reschedule  # edits change `every` (False: only the description)
        self.jobs = race_jobs(gt_dir)
        self.leads = (*self.LEADS_S, lookahead_s)
        self.tokens = itertools.count(1)

    def start(self) -> None:
        create_jobs(self.cluster, AdminClient(self.cluster, self.log, "racer"), self.jobs)
        for i, job in enumerate(self.jobs):
            t = threading.Thread(target=self._run, args=(i, job), daemon=True, name=f"race-{i}")
            self.threads.append(t)
            t.start()

    def _run(self, i: int, job: dict[str, Any]) -> None:
        rng = random.Random(self.seed * 7919 + i)
        admin = AdminClient(self.cluster, self.log, f"racer{i}")
        park_after = rng.randint(4, 25) if rng.random() < 0.5 else None
        changes = 0
        while not self.stop_event.wait(rng.uniform(0.0, 0.4)):
            nodes = self._nodes(self.cluster)
            if not nodes:
                continue
            parking = park_after is not None and changes >= park_after
            try:
                done = self._race(admin, rng, job, rng.choice(nodes), parking)
            except Exception:  # noqa: BLE001 - a client error must not end the run; the op is recorded
                continue
            changes += done
            if parking and done:
                return  # paused (or paused already): left so to the end

    def _race(
        self, admin: AdminClient, rng: random.Random, job: dict[str, Any], node: str, parking: bool
    ) -> bool:
        """One change sent `lead` before the job's next slot; False when none was (a job found
        deleted is created again, not counted)."""
        code, view = self.cluster.api(node, "GET", f"/v1/jobs/{job['id']}", timeout=5)
        if code == 404:
            admin.write("create", job["id"], node, "POST", "/v1/jobs", job)
        if code != 200:
            return False
        kind = self._choose(rng, bool(view.get("paused")), parking)
        lead = rng.choice(self.leads)
        wait = next_slot_ms(view, time.time() * 1000 + lead * 1000) / 1000 - lead - time.time()
        if self.stop_event.wait(max(0.0, wait)):
            return False
        self._send(admin, rng, job, node, kind, view)
        return True

    @staticmethod
    def _choose(rng: random.Random, paused: bool, parking: bool) -> str:
        """The change to race: `keep` when parking a job that is paused already."""
        if parking:
            return "keep" if paused else "pause"
        if paused:
            return rng.choices(["resume", "edit", "delete"], [6, 2, 1])[0]
        return rng.choices(["pause", "edit", "delete"], [6, 3, 1])[0]

    def _send(
        self, admin: AdminClient, rng: random.Random, job: dict[str, Any], node: str, kind: str, view: Any
    ) -> None:
        path = f"/v1/jobs/{job['id']}"
        if kind == "edit":  # a CAS update from the version just read (no other client edits it)
            every = rng.choice([e for e in (1, 1.5, 2) if e != view["schedule"]["every"]])
            schedule = {"every": every} if self.reschedule else view["schedule"]
            spec = {**job, "schedule": schedule, "paused": view.get("paused", False)}
            spec["description"] = f"race-{next(self.tokens)}"
            admin.write("update", job["id"], node, "PUT", path, spec, if_match=view["version"])
        elif kind == "delete":
            delete_job(self.cluster, self.log, admin, job["id"], node)
        elif kind != "keep":
            admin.write(kind, job["id"], node, "POST", f"{path}/{kind}")


# ---------------------------------------------------------------- invariant 10

_GOOD = {"schedule": {"every": 60}, "task": {"type": "shell", "command": ["true"]}}
PROBES: list[tuple[str, str, str, Any, str | None]] = [
    # (name, method, path, body, the field the error must name)
    (
        "cron",
        "POST",
        "/v1/jobs",
        {**_GOOD, "id": "bad-cron", "schedule": {"cron": "61 * * * *"}},
        "schedule.cron",
    ),
    ("id", "POST", "/v1/jobs", {**_GOOD, "id": "bad id!"}, "id"),
    ("every", "POST", "/v1/jobs", {**_GOOD, "id": "bad-every", "schedule": {"every": -1}}, "schedule.every"),
    ("unknown", "POST", "/v1/jobs", {**_GOOD, "id": "bad-unknown", "bogus": 1}, "bogus"),
    (
        "argv",
        "POST",
        "/v1/jobs",
        {**_GOOD, "id": "bad-argv", "task": {"type": "shell", "command": ["a", 2]}},
        "task.command.1",
    ),
    ("timeout", "POST", "/v1/jobs", {**_GOOD, "id": "bad-timeout", "timeout": -5}, "timeout"),
    (
        "naive-at",
        "POST",
        "/v1/jobs",
        {**_GOOD, "id": "bad-at", "schedule": {"at": "2030-01-01T00:00:00"}},
        "schedule.at",
    ),
    ("not-json", "POST", "/v1/jobs", b"{not json", None),
    ("limit", "GET", "/v1/runs?limit=0", None, "limit"),
    ("node-raft", "POST", "/v1/nodes", {"id": "nx", "raft": "nohost", "http": "http://127.0.0.1:1"}, "raft"),
]


def probe_bad_input(cluster: ChaosCluster, node: str) -> list[dict[str, Any]]:
    """Send each malformed request; record its status, the field named, whether anything changed."""
    out = []
    for name, method, path, body, field in PROBES:
        job_id = body.get("id") if isinstance(body, dict) else None
        data = body if not isinstance(body, bytes) else None
        try:
            if isinstance(body, bytes):
                req = urllib.request.Request(
                    cluster.url(node) + path,
                    data=body,
                    method=method,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(req, timeout=10) as resp:
                        code, answer = resp.status, {}
                except urllib.error.HTTPError as exc:
                    code, answer = exc.code, json.loads(exc.read() or b"{}")
            else:
                code, answer = cluster.api(node, method, path, data, timeout=10)
        except OSError as exc:
            code, answer = None, {"error": {"message": str(exc)}}
        changed = False
        if job_id and isinstance(job_id, str) and "/" not in job_id and " " not in job_id:
            with contextlib.suppress(OSError):
                changed = cluster.api(node, "GET", f"/v1/jobs/{job_id}?consistent=true", timeout=10)[0] == 200
        if name == "node-raft":
            with contextlib.suppress(OSError, TypeError):
                items = cluster.api(node, "GET", "/v1/nodes", timeout=10)[1]["items"]
                changed = any(n["id"] == "nx" for n in items)
        error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        out.append(
            {
                "kind": "bad_input",
                "name": name,
                "status": code,
                "field": error.get("field"),
                "expect_field": field,
                "message": error.get("message"),
                "changed": changed,
                "alive": cluster.status(node) is not None,
            }
        )
    return out
