"""Recording a history: the admin-op log, and the collection of records at the end of a run.

`AdminClient` performs job writes on a chosen node and records each as an `Op` with its invoke and
completion times and its outcome as a Jepsen client would: `ok` (2xx), `failed` (a definite
refusal: 4xx, or 503 `unavailable`, which API.md defines as not applied, or a refused connection)
or `indeterminate` (504, a timeout, a reset: it may have applied). An indeterminate write is retried
with the same `Idempotency-Key` to learn its outcome; one still unknown stays indeterminate.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
import urllib.error
import uuid
from typing import Any

from .checkers import History, Op
from .groundtruth import executions, read_events, sink_executions
from .harness import ChaosCluster

__all__ = ["AdminClient", "OpLog", "collect", "page_all", "quiesce"]


class OpLog:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.snapshots: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self._ids = itertools.count(1)

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)


def _call(
    cluster: ChaosCluster,
    node: str,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
    timeout: float,
) -> tuple[str, int | None, Any]:
    """-> (outcome, http status, body) for one request."""
    try:
        code, answer = cluster.api(node, method, path, body, headers=headers, timeout=timeout)
    except ConnectionRefusedError:
        return "failed", None, {"error": {"code": "connection_refused"}}
    except (TimeoutError, urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionRefusedError):
            return "failed", None, {"error": {"code": "connection_refused"}}
        return "indeterminate", None, {"error": {"code": type(reason).__name__}}
    if 200 <= code < 300:
        return "ok", code, answer
    if code == 503 or 400 <= code < 500:
        return "failed", code, answer
    return "indeterminate", code, answer


class AdminClient:
    def __init__(self, cluster: ChaosCluster, log: OpLog, name: str, timeout: float = 12.0) -> None:
        self.cluster = cluster
        self.log = log
        self.name = name
        self.timeout = timeout

    def write(
        self,
        kind: str,
        job: str,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        if_match: int | None = None,
        retries: int = 3,
    ) -> Op:
        headers = {"Idempotency-Key": f"{self.name}-{uuid.uuid4().hex}"}
        if if_match is not None:
            headers["If-Match"] = f'"{if_match}"'
        t0, w0 = time.monotonic(), time.time() * 1000
        outcome, code, answer = _call(self.cluster, node, method, path, body, headers, self.timeout)
        tries = 0
        while outcome == "indeterminate" and tries < retries:
            tries += 1
            time.sleep(1.0)
            again = _call(self.cluster, node, method, path, body, headers, self.timeout)
            if again[0] == "ok" or (again[0] == "failed" and again[1] not in (None, 503)):
                outcome, code, answer = again
        op = Op(
            id=self.log.next_id(),
            kind=kind,
            job=job,
            node=node,
            invoke_mono=t0,
            invoke_wall_ms=w0,
            complete_mono=time.monotonic(),
            complete_wall_ms=time.time() * 1000,
            status=outcome,
            http=code,
            code=(answer or {}).get("error", {}).get("code") if isinstance(answer, dict) else None,
            client=self.name,
            if_match=if_match,
            spec=body if kind in ("create", "update") else None,
            result=answer if outcome == "ok" and isinstance(answer, dict) and "version" in answer else None,
        )
        if outcome == "ok" and kind != "delete":
            with contextlib.suppress(OSError, ValueError):
                rc, seen = self.cluster.api(node, "GET", f"/v1/jobs/{job}", timeout=3)
                op.read_after = seen if rc == 200 else {"version": None, "status": rc}
        self.log.add(op)
        return op


def page_all(cluster: ChaosCluster, node: str, path: str, timeout: float = 30) -> list[dict[str, Any]]:
    """Every item of a list endpoint, following cursors."""
    items: list[dict[str, Any]] = []
    cursor = None
    sep = "&" if "?" in path else "?"
    while True:
        url = f"{path}{sep}limit=1000" + (f"&cursor={cursor}" if cursor else "")
        code, body = cluster.api(node, "GET", url, timeout=timeout)
        if code != 200:
            raise RuntimeError(f"GET {url} on {node}: {code} {body}")
        items.extend(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            return items


def quiesce(cluster: ChaosCluster, client: AdminClient, timeout: float = 60) -> str:
    """Pause every job (recorded ops), then wait until no run is pending or running."""
    leader = cluster.leader(timeout=60)
    for job in page_all(cluster, leader, "/v1/jobs?consistent=true"):
        if not job.get("paused"):
            client.write("pause", job["id"], leader, "POST", f"/v1/jobs/{job['id']}/pause")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, RuntimeError):
            leader = cluster.leader(timeout=10)
            active = page_all(cluster, leader, "/v1/runs?state=running") + page_all(
                cluster, leader, "/v1/runs?state=pending"
            )
            if not active:
                return leader
        time.sleep(0.5)
    return cluster.leader(timeout=10)


def with_paused_ranges(
    cluster: ChaosCluster, node: str, items: list[dict[str, Any]], paused: list[str]
) -> list[dict[str, Any]]:
    """`items` with each paused job's records as a read of the job shows them: its paused range
    up to the committed clock, which the leader records in turns (a record extended, or new)."""
    by_id = {item["run_id"]: i for i, item in enumerate(items)}
    out = list(items)
    for job_id in paused:
        for record in page_all(cluster, node, f"/v1/runs?job={job_id}&state=skipped") + page_all(
            cluster, node, f"/v1/runs?job={job_id}&state=missed"
        ):
            if record["run_id"] in by_id:
                out[by_id[record["run_id"]]] = record
            else:
                out.append(record)
    return out


def collect(
    cluster: ChaosCluster, log: OpLog, sink_events: list[dict[str, Any]] | None = None, **settings: Any
) -> History:
    """Records, digests and jobs from every running node, and the ground truth, as a History."""
    with contextlib.suppress(AssertionError):
        cluster.wait_same_digest(timeout=60)
    leader = cluster.leader(timeout=30)
    final_jobs = {j["id"]: j for j in page_all(cluster, leader, "/v1/jobs?consistent=true")}
    with contextlib.suppress(AssertionError):
        cluster.wait_same_digest(timeout=60)
    records: dict[str, list[dict[str, Any]]] = {}
    digests: dict[str, str | None] = {}
    records_wall_ms = time.time() * 1000
    paused = [job_id for job_id, job in final_jobs.items() if job.get("paused")]
    for node in cluster.alive():
        try:
            records[node] = with_paused_ranges(cluster, node, page_all(cluster, node, "/v1/runs"), paused)
        except (OSError, RuntimeError):
            records[node] = []
    for node in cluster.alive():
        st = cluster.status(node)
        digests[node] = st["digest"] if st else None
    gt = executions(read_events(cluster.gt_dir)) + sink_executions(sink_events or [])
    samples = [vars(s) for s in cluster.observer.snapshot()]
    return History(
        executions=sorted(gt, key=lambda e: e.start_mono),
        ops=list(log.ops),
        records=records,
        snapshots=list(log.snapshots),
        digests=digests,
        samples=samples,
        faults=list(cluster.faults),
        final_jobs=final_jobs,
        end_mono=time.monotonic(),
        end_wall_ms=time.time() * 1000,
        records_wall_ms=records_wall_ms,
        max_clock_offset_s=max((abs(v) for v in cluster.offsets.values()), default=0.0),
        **settings,
    )
