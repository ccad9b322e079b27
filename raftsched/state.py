"""The replicated state machine: jobs, runs, nodes, the leader's term.

Contract (as hashicorp/raft's FSM): `apply(data)` is deterministic. It reads no clock,
environment, file or random source; time and ids come in the command. It iterates in
insertion order only. It never raises: a bad or stale command returns a rejection value
`{"ok": False, "code", "message", "field"}`. Every node applies the same bytes in the same
order and reports the same `digest` (count of applied entries + rolling hash of their bytes).

Threads: `apply` runs on PySyncObj's tick thread; readers on the event loop. Both hold
`lock` (an RLock) for the duration of one apply or one read, so a reader never iterates a
dict that is being changed. Records are frozen, so a reference taken under the lock stays
valid after it is released.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from .commands import Command, CommandType, DecodeError, decode
from .errors import RaftschedError
from .model import Delivery, JobSpec, Overlap, RunState
from .records import JobRecord, NodeRecord, Run, Summary, new_stats
from .routing import Candidate, pick_nodes

__all__ = ["SNAPSHOT_VERSION", "State"]

SNAPSHOT_VERSION = 1
REQUEST_TTL_MS = 24 * 3600 * 1000
AUDIT_PER_JOB = 20
MAX_REQUESTS = 100_000
TERMINAL = frozenset(
    {
        RunState.SUCCEEDED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.SKIPPED,
        RunState.MISSED,
    }
)
OUTCOME_COUNTER = {
    RunState.SUCCEEDED: "succeeded",
    RunState.FAILED: "failed",
    RunState.TIMED_OUT: "timed_out",
    RunState.CANCELLED: "cancelled",
    RunState.LOST: "lost",
    RunState.SKIPPED: "skipped",
    RunState.MISSED: "missed",
}

Result = dict[str, Any]


def ok(**fields: Any) -> Result:
    return {"ok": True, **fields}


def reject(code: str, message: str, field: str | None = None) -> Result:
    return {"ok": False, "code": code, "message": message, "field": field}


class State:
    """All replicated data. Mutated only by `apply`; see the module docstring for threads."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.applied = 0
        self.digest = b"\0" * 16
        self.term = 0
        self.leader: str | None = None
        self.settings: dict[str, int] = {"history_per_job": 100, "output_tail_bytes": 4096}
        self.jobs: dict[str, JobRecord] = {}
        self.runs: dict[str, Run] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.job_runs: dict[str, dict[str, None]] = {}  # job -> its run ids, oldest first
        self.job_active: dict[str, dict[str, None]] = {}  # job -> pending/running run ids
        self.node_active: dict[str, dict[str, None]] = {}  # node -> pending/running run ids
        self.stats: dict[str, dict[str, Any]] = {}  # job -> counters and summaries
        self.totals: dict[str, Any] = new_stats()
        self.requests: dict[str, tuple[str, Result, int]] = {}
        self.audit: dict[str, list[dict[str, Any]]] = {}  # job -> its last mutations, oldest first
        self.removed: dict[
            str, int
        ] = {}  # node id -> when it was removed (a removed node may not re-register)
        self.next_incarnation = 1
        self.listeners: list[Callable[[Command, Result], None]] = []

    # ------------------------------------------------------------------ entry point

    def apply(self, data: bytes) -> Result:
        """Apply one log entry. Never raises; the result goes back to the proposer."""
        with self.lock:
            self.applied += 1
            self.digest = hashlib.blake2b(self.digest + data, digest_size=16).digest()
            try:
                cmd = decode(data)
            except DecodeError as exc:
                return reject("bad_command", str(exc))
            try:
                result = self._apply_deduplicated(cmd)
            except Exception as exc:  # noqa: BLE001 - a bug must not wedge the log (PYSYNCOBJ.md bug 1)
                result = reject("internal", f"{type(exc).__name__}: {exc}")
        for listener in self.listeners:
            listener(cmd, result)
        return result

    def _apply_deduplicated(self, cmd: Command) -> Result:
        now_ms = cmd.body.get("now_ms")
        if cmd.rid is not None:
            seen = self.requests.get(cmd.rid)
            fingerprint = str(cmd.body.get("fp", ""))
            if seen is not None:
                if seen[0] != fingerprint:
                    return reject("idempotency_mismatch", "request id reused with another body")
                return {**seen[1], "duplicate": True}
        result = self._dispatch(cmd)
        if cmd.rid is not None and isinstance(now_ms, int):
            self.requests[cmd.rid] = (str(cmd.body.get("fp", "")), result, now_ms)
            self._trim_requests(now_ms)
        return result

    def _trim_requests(self, now_ms: int) -> None:
        while self.requests:
            oldest = next(iter(self.requests))
            if self.requests[oldest][2] >= now_ms - REQUEST_TTL_MS and len(self.requests) <= MAX_REQUESTS:
                return
            del self.requests[oldest]

    def _dispatch(self, cmd: Command) -> Result:
        handler = self._HANDLERS.get(cmd.type)
        if handler is None:
            return reject("bad_command", f"no handler for {cmd.type}")
        body = cmd.body
        if cmd.type in self._LEADER_COMMANDS:
            term = body.get("term")
            if not isinstance(term, int) or term != self.term:
                # Older: a deposed leader. Newer: a leader whose BeginTerm has not committed yet.
                return reject("stale_term", f"term {term} is not the current term {self.term}")
        result = handler(self, body)
        if result.get("ok") and cmd.type in _AUDITED:
            self._audit(cmd, result)
        return result

    def _audit(self, cmd: Command, result: Result) -> None:
        """Who changed a job, when, to which version: the last AUDIT_PER_JOB entries per job."""
        body = cmd.body
        job_id = body.get("job_id") or result.get("job_id") or str(body.get("run_id", "")).partition("@")[0]
        if job_id not in self.jobs:
            return
        action = _AUDITED[cmd.type]
        if cmd.type is CommandType.PUT_JOB:
            action = "created" if result.get("created") else "updated"
        elif cmd.type is CommandType.CANCEL_RUN:
            action = f"cancelled run {body.get('run_id')}"
        elif cmd.type is CommandType.TRIGGER_JOB:
            action = f"triggered run {result.get('run_id')}"
        trail = self.audit.setdefault(job_id, [])
        trail.append(
            {
                "at_ms": body.get("now_ms"),
                "actor": str(body.get("actor", "")),
                "action": action,
                "version": self.jobs[job_id].version,
            }
        )
        del trail[:-AUDIT_PER_JOB]

    # ------------------------------------------------------------------ cluster

    def _apply_begin_term(self, body: dict[str, Any]) -> Result:
        term = body["term"]
        if term < self.term or (term == self.term and body["leader"] != self.leader):
            return reject("stale_term", f"term {term} is not newer than {self.term}")
        self.term, self.leader = term, body["leader"]
        for key in self.settings:
            if isinstance(body.get(key), int) and body[key] > 0:
                self.settings[key] = body[key]
        return ok(term=term)

    def _apply_register_node(self, body: dict[str, Any]) -> Result:
        """A node announces its address, tags and capacity; it is up from now on."""
        node_id = body["node"]
        if node_id in self.removed:
            return reject("removed", f"node {node_id!r} was removed from the cluster", "node")
        old = self.nodes.get(node_id)
        self.nodes[node_id] = NodeRecord(
            id=node_id,
            http=body["http"],
            raft=body["raft"],
            tags=dict(body.get("tags", {})),
            capacity=int(body.get("capacity", 8)),
            up=True,
            # A node that starts again takes runs again, unless an operator is removing it.
            draining=old.leaving if old else False,
            leaving=old.leaving if old else False,
            version=str(body.get("version", "")),
            updated_ms=body["now_ms"],
        )
        self.node_active.setdefault(node_id, {})
        return ok()

    def _apply_add_node(self, body: dict[str, Any]) -> Result:
        """An operator adds a member: recorded down until the node itself registers."""
        node_id, raft = body["node"], body["raft"]
        old = self.nodes.get(node_id)
        if old is not None:
            if old.raft != raft:
                return reject("already_exists", f"node {node_id!r} exists with raft {old.raft}", "id")
            return ok(node=node_id, created=False)
        if any(n.raft == raft for n in self.nodes.values()):
            return reject("already_exists", f"raft address {raft} is taken", "raft")
        self.removed.pop(node_id, None)
        self.nodes[node_id] = NodeRecord(
            id=node_id,
            http=body["http"],
            raft=raft,
            tags=dict(body.get("tags", {})),
            capacity=int(body.get("capacity", 8)),
            up=False,
            updated_ms=body["now_ms"],
        )
        self.node_active.setdefault(node_id, {})
        return ok(node=node_id, created=True)

    def _apply_drain_node(self, body: dict[str, Any]) -> Result:
        """Draining: no new runs; the leader moves pending ones and removes the node when idle."""
        node = self.nodes.get(body["node"])
        if node is None:
            return reject("not_found", f"no node {body['node']!r}", "id")
        draining = bool(body.get("draining", True))
        leaving = draining and (bool(body.get("leaving", False)) or node.leaving)
        self.nodes[node.id] = dataclasses.replace(node, draining=draining, leaving=leaving,
                                                  updated_ms=body["now_ms"])
        return ok(node=node.id, draining=draining, leaving=leaving)

    def _apply_remove_node(self, body: dict[str, Any]) -> Result:
        """The end of a drain: the node leaves the table once nothing is active on it."""
        node = self.nodes.get(body["node"])
        if node is None:
            return ok(node=body["node"], removed=False)
        if not node.leaving or self.node_active.get(node.id):
            return reject("rejected", f"node {node.id!r} is not drained", "id")
        del self.nodes[node.id]
        self.node_active.pop(node.id, None)
        self.removed[node.id] = body["now_ms"]
        return ok(node=node.id, removed=True)

    def _apply_set_node(self, body: dict[str, Any]) -> Result:
        node = self.nodes.get(body["node"])
        if node is None:
            return reject("not_found", f"no node {body['node']!r}", "node")
        self.nodes[node.id] = dataclasses.replace(node, up=bool(body["up"]), updated_ms=body["now_ms"])
        return ok()

    def _apply_noop(self, body: dict[str, Any]) -> Result:
        return ok()

    # ------------------------------------------------------------------ jobs

    def _apply_put_job(self, body: dict[str, Any]) -> Result:
        try:
            spec = JobSpec.from_dict(body["spec"])
        except RaftschedError as exc:
            return reject(exc.code, exc.message, exc.field)
        old = self.jobs.get(spec.id)
        if body.get("mode") == "create" and old is not None:
            return reject("already_exists", f"job {spec.id!r} exists", "id")
        if_version = body.get("if_version")
        if if_version is not None and (old is None or old.version != if_version):
            have = old.version if old else None
            return reject("version_mismatch", f"job version is {have}, not {if_version}")
        now_ms = body["now_ms"]
        if old is None:
            return self._create_job(spec, body)
        keep = set(body.get("keep_slots") or ())
        for rid in list(self.job_active.get(spec.id, {})):
            run = self.runs[rid]
            if run.state is RunState.PENDING and not run.manual and run.nominal_ms not in keep:
                self._finish(run, RunState.CANCELLED, now_ms, reason="job edited")
        if spec.paused and not old.spec.paused:
            self._cancel_pending(spec.id, now_ms, "job paused")
        record = dataclasses.replace(
            old,
            spec=spec,
            version=old.version + 1,
            updated_ms=now_ms,
            next_nominal_ms=body.get("next_nominal_ms"),
            actor=str(body.get("actor", "")),
            paused_ms=(old.paused_ms or now_ms) if spec.paused else None,
        )
        self.jobs[spec.id] = record
        return ok(job_id=spec.id, version=record.version, created=False)

    def _create_job(self, spec: JobSpec, body: dict[str, Any]) -> Result:
        now_ms = body["now_ms"]
        record = JobRecord(
            spec=spec,
            version=1,
            incarnation=self.next_incarnation,
            created_ms=now_ms,
            updated_ms=now_ms,
            next_nominal_ms=body.get("next_nominal_ms"),
            paused_ms=now_ms if spec.paused else None,
            actor=str(body.get("actor", "")),
        )
        self.next_incarnation += 1
        self.jobs[spec.id] = record
        self.job_runs[spec.id] = {}
        self.job_active[spec.id] = {}
        self.stats[spec.id] = new_stats()
        return ok(job_id=spec.id, version=1, created=True)

    def _apply_restore_jobs(self, body: dict[str, Any]) -> Result:
        """Recreate jobs from a backup with their own creation time and schedule position, so that
        `every` phases and next fire times survive; jobs that exist are left to the caller."""
        restored, existing, invalid = [], [], []
        for item in body.get("jobs", ()):
            try:
                spec = JobSpec.from_dict(item["spec"])
            except (RaftschedError, KeyError, TypeError):
                invalid.append(str((item.get("spec") or {}).get("id", "?")))
                continue
            if spec.id in self.jobs:
                existing.append(spec.id)
                continue
            self._create_job(spec, {**body, "next_nominal_ms": item.get("next_nominal_ms")})
            self.jobs[spec.id] = dataclasses.replace(
                self.jobs[spec.id],
                created_ms=item.get("created_ms", body["now_ms"]),
                last_slot_ms=item.get("last_slot_ms"),
            )
            self.audit.setdefault(spec.id, []).append(
                {
                    "at_ms": body["now_ms"],
                    "actor": str(body.get("actor", "")),
                    "action": "restored from a backup",
                    "version": 1,
                }
            )
            restored.append(spec.id)
        return ok(restored=restored, existing=existing, invalid=invalid)

    def _job_or_reject(self, body: dict[str, Any]) -> JobRecord | Result:
        job = self.jobs.get(body.get("job_id", ""))
        if job is None:
            return reject("not_found", f"no job {body.get('job_id')!r}", "job_id")
        if_version = body.get("if_version")
        if if_version is not None and job.version != if_version:
            return reject("version_mismatch", f"job version is {job.version}, not {if_version}")
        return job

    def _apply_delete_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        for rid in list(self.job_active.get(job.spec.id, {})):
            self._finish(self.runs[rid], RunState.CANCELLED, body["now_ms"], reason="job deleted")
        for rid in self.job_runs.pop(job.spec.id, {}):
            self.runs.pop(rid, None)
        del self.jobs[job.spec.id]
        self.audit.pop(job.spec.id, None)
        self.job_active.pop(job.spec.id, None)
        self.stats.pop(job.spec.id, None)
        return ok(job_id=job.spec.id)

    def _apply_pause_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        if not job.spec.paused:
            self._cancel_pending(job.spec.id, now_ms, "job paused")
            job = dataclasses.replace(
                job,
                spec=dataclasses.replace(job.spec, paused=True),
                version=job.version + 1,
                updated_ms=now_ms,
                paused_ms=now_ms,
                actor=str(body.get("actor", "")),
            )
            self.jobs[job.spec.id] = job
        return ok(job_id=job.spec.id, version=job.version)

    def _apply_resume_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        if job.spec.paused:
            skipped = body.get("skipped")
            if isinstance(skipped, dict) and skipped.get("count", 0) > 0:
                self._record(
                    job,
                    RunState.SKIPPED,
                    skipped["from_ms"],
                    now_ms,
                    "job paused",
                    until_ms=skipped["until_ms"],
                    count=skipped["count"],
                )
            last = max(job.last_slot_ms or 0, now_ms)
            job = dataclasses.replace(
                job,
                spec=dataclasses.replace(job.spec, paused=False),
                version=job.version + 1,
                updated_ms=now_ms,
                paused_ms=None,
                next_nominal_ms=body.get("next_nominal_ms"),
                last_slot_ms=last,
                actor=str(body.get("actor", "")),
            )
            self.jobs[job.spec.id] = job
        return ok(job_id=job.spec.id, version=job.version)

    def _cancel_pending(self, job_id: str, now_ms: int, reason: str) -> None:
        for rid in list(self.job_active.get(job_id, {})):
            run = self.runs[rid]
            if run.state is RunState.PENDING:
                self._finish(run, RunState.CANCELLED, now_ms, reason=reason)

    # ------------------------------------------------------------------ runs: creation

    def _apply_trigger_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        rid = f"{job.spec.id}@manual-{now_ms}"
        if rid not in self.runs:
            self._add_run(
                Run(
                    run_id=rid,
                    job_id=job.spec.id,
                    incarnation=job.incarnation,
                    attempt=1,
                    nominal_ms=now_ms,
                    due_ms=now_ms,
                    node=body.get("node"),
                    state=RunState.PENDING,
                    created_ms=now_ms,
                    manual=True,
                    env=body.get("env"),
                    kwargs=body.get("kwargs"),
                )
            )
        return ok(run_id=rid)

    def _apply_fire_runs(self, body: dict[str, Any]) -> Result:
        fired: list[str] = []
        rejected = 0
        for item in body.get("skips", ()):
            rejected += 0 if self._skip_slot(item, body["now_ms"]) else 1
        for item in body.get("fires", ()):
            ids = self._fire_slot(item, body["now_ms"])
            fired.extend(ids)
            rejected += 0 if ids else 1
        return ok(fired=fired, rejected=rejected)

    def _slot_job(self, item: dict[str, Any]) -> JobRecord | None:
        """The job a fire or skip is for, when it is still that incarnation, enabled, and the slot new."""
        job = self.jobs.get(item["job_id"])
        if job is None or job.incarnation != item["incarnation"] or job.spec.paused:
            return None
        if job.last_slot_ms is not None and item["nominal_ms"] <= job.last_slot_ms:
            return None  # already fired or recorded: exactly once per slot
        return job

    def _advance(self, job: JobRecord, item: dict[str, Any], now_ms: int, *, fired: bool) -> None:
        last = item.get("until_ms") or item["nominal_ms"]
        self.jobs[job.spec.id] = dataclasses.replace(
            job,
            last_slot_ms=last,
            next_nominal_ms=item.get("next_nominal_ms"),
            last_fire_ms=now_ms if fired else job.last_fire_ms,
            fired=job.fired + (1 if fired else 0),
        )

    def _skip_slot(self, item: dict[str, Any], now_ms: int) -> bool:
        job = self._slot_job(item)
        if job is None:
            return False
        state = RunState.MISSED if item.get("state") == "missed" else RunState.SKIPPED
        self._record(
            job,
            state,
            item["nominal_ms"],
            now_ms,
            str(item.get("reason", "")),
            until_ms=item.get("until_ms"),
            count=int(item.get("count", 1)),
        )
        self._advance(job, item, now_ms, fired=False)
        return True

    def _fire_slot(self, item: dict[str, Any], now_ms: int) -> list[str]:
        job = self._slot_job(item)
        nodes: list[str] = item.get("nodes") or []
        if job is None or not nodes:
            return []
        nominal = item["nominal_ms"]
        verdict = self._overlap_verdict(job, now_ms)
        self._advance(job, item, now_ms, fired=verdict != "skip")
        if verdict == "skip":
            self._record(job, RunState.SKIPPED, nominal, now_ms, "overlap: a run of the job is active")
            return []
        ids = []
        for shard, node in enumerate(nodes):
            rid = f"{job.spec.id}@{nominal}" if len(nodes) == 1 else f"{job.spec.id}@{nominal}~{shard}"
            self._add_run(
                Run(
                    run_id=rid,
                    job_id=job.spec.id,
                    incarnation=job.incarnation,
                    attempt=1,
                    nominal_ms=nominal,
                    due_ms=item["due_ms"],
                    node=node,
                    state=RunState.PENDING,
                    created_ms=now_ms,
                    shard=shard,
                    shards=len(nodes),
                    waiting=verdict == "queue",
                )
            )
            ids.append(rid)
        self.stats[job.spec.id]["fired"] += 1
        self.totals["fired"] += 1
        return ids

    def _overlap_verdict(self, job: JobRecord, now_ms: int) -> str:
        """'run', 'queue' or 'skip' for a new slot of `job`, by its overlap policy."""
        active = [self.runs[r] for r in self.job_active.get(job.spec.id, {}) if not self.runs[r].manual]
        policy = job.spec.overlap
        if not active or policy is Overlap.ALLOW:
            return "run"
        if policy is Overlap.REPLACE:
            for run in active:
                self._finish(run, RunState.CANCELLED, now_ms, reason="replaced by a newer slot")
            return "run"
        if policy is Overlap.QUEUE and not any(r.waiting for r in active):
            return "queue"
        return "skip"

    def _record(
        self,
        job: JobRecord,
        state: RunState,
        nominal_ms: int,
        now_ms: int,
        reason: str,
        *,
        until_ms: int | None = None,
        count: int = 1,
    ) -> None:
        rid = f"{job.spec.id}@{nominal_ms}"
        if rid in self.runs:
            return
        run = Run(
            run_id=rid,
            job_id=job.spec.id,
            incarnation=job.incarnation,
            attempt=0,
            nominal_ms=nominal_ms,
            due_ms=nominal_ms,
            node=None,
            state=state,
            created_ms=now_ms,
            finished_ms=now_ms,
            reason=reason,
            until_ms=until_ms,
            count=count,
        )
        self._add_run(run)
        self._count(job.spec.id, OUTCOME_COUNTER[state], count)
        self._trim_history(job.spec.id)

    def _add_run(self, run: Run) -> None:
        self.runs[run.run_id] = run
        self.job_runs.setdefault(run.job_id, {})[run.run_id] = None
        if run.state.active:
            self.job_active.setdefault(run.job_id, {})[run.run_id] = None
            if run.node is not None:
                self.node_active.setdefault(run.node, {})[run.run_id] = None

    # ------------------------------------------------------------------ runs: progress

    def _worker_run(self, item: dict[str, Any], node: str) -> Run | None:
        """The run a worker reports on, if the report is for its current attempt (fencing)."""
        run = self.runs.get(str(item.get("run_id")))
        if run is None or run.node != node or run.attempt != item.get("attempt"):
            return None
        return run

    def _apply_claim_runs(self, body: dict[str, Any]) -> Result:
        accepted = []
        for item in body["items"]:
            run = self._worker_run(item, body["node"])
            if run is not None and run.state is RunState.PENDING and not run.waiting:
                if not run.claimed:
                    self.runs[run.run_id] = dataclasses.replace(run, claimed=True)
                accepted.append(run.run_id)
        return ok(accepted=accepted)

    def _apply_start_runs(self, body: dict[str, Any]) -> Result:
        accepted = []
        for item in body["items"]:
            run = self._worker_run(item, body["node"])
            if run is None or run.waiting or not run.state.active:
                continue
            if run.state is RunState.PENDING:
                if self._delivery(run) is Delivery.AT_MOST_ONCE and not run.claimed:
                    continue
                run = dataclasses.replace(run, state=RunState.RUNNING, started_ms=item["started_ms"])
                self.runs[run.run_id] = run
                self._observe(run.job_id, "lateness", item["started_ms"] - run.due_ms)
            accepted.append(run.run_id)
        return ok(accepted=accepted)

    def _apply_finish_runs(self, body: dict[str, Any]) -> Result:
        accepted = []
        for item in body["items"]:
            run = self._worker_run(item, body["node"])
            if run is None or run.waiting or not run.state.active:
                continue
            try:
                outcome = RunState(item["outcome"])
            except ValueError:
                continue
            if outcome not in (RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT):
                continue
            self._report(run, item, outcome)
            accepted.append(run.run_id)
        return ok(accepted=accepted)

    def _report(self, run: Run, item: dict[str, Any], outcome: RunState) -> None:
        started = item.get("started_ms") or run.started_ms or item["finished_ms"]
        if run.started_ms is None:
            self._observe(run.job_id, "lateness", started - run.due_ms)
        tail = self.settings["output_tail_bytes"]
        output = str(item.get("output") or "")
        run = dataclasses.replace(
            run,
            started_ms=started,
            exit_code=item.get("exit_code"),
            http_status=item.get("http_status"),
            error=item.get("error"),
            output=output.encode()[-tail:].decode(errors="ignore"),
        )
        self._observe(run.job_id, "duration", item["finished_ms"] - started)
        job = self.jobs.get(run.job_id)
        if outcome is not RunState.SUCCEEDED and job is not None and run.attempt <= job.spec.retries.max:
            self._retry(run, job, item["finished_ms"])
            return
        self._finish(run, outcome, item["finished_ms"])

    def _retry(self, run: Run, job: JobRecord, now_ms: int) -> None:
        """Decided here, once the failure is committed: every node computes the same next attempt."""
        attempt = run.attempt + 1
        delay_ms = int(job.spec.retries.delay_s(attempt) * 1000)
        spread = int(delay_ms * job.spec.retries.jitter)
        if spread:
            delay_ms += int.from_bytes(
                hashlib.blake2b(f"{run.run_id}#{attempt}".encode(), digest_size=4).digest(), "big"
            ) % (spread + 1)
        node = self._pick_node(job, run.run_id, exclude=run.node) or run.node
        self._move(
            run,
            dataclasses.replace(
                run,
                attempt=attempt,
                node=node,
                state=RunState.PENDING,
                due_ms=now_ms + delay_ms,
                started_ms=None,
                claimed=False,
                reason=f"retry after: {run.error}",
            ),
        )
        self._count(run.job_id, "retried")

    def _apply_cancel_run(self, body: dict[str, Any]) -> Result:
        run = self.runs.get(str(body.get("run_id")))
        if run is None:
            return reject("not_found", f"no run {body.get('run_id')!r}", "run_id")
        if run.state.active:
            self._finish(run, RunState.CANCELLED, body["now_ms"], reason=f"cancelled by {body.get('actor')}")
        return ok(run_id=run.run_id, state=self.runs[run.run_id].state.value)

    def _apply_reassign_runs(self, body: dict[str, Any]) -> Result:
        moved, lost = [], []
        for item in body["moves"]:
            run = self.runs.get(str(item.get("run_id")))
            if run is None or not run.state.active or run.attempt != item.get("attempt"):
                continue
            if run.node == item.get("node"):
                continue
            if self._delivery(run) is Delivery.AT_MOST_ONCE and (
                run.claimed or run.state is RunState.RUNNING
            ):
                self._finish(run, RunState.LOST, body["now_ms"], reason=f"node {run.node} is down")
                lost.append(run.run_id)
                continue
            due = max(run.due_ms, body["now_ms"]) if run.state is RunState.RUNNING else run.due_ms
            self._move(
                run,
                dataclasses.replace(
                    run,
                    attempt=run.attempt + 1,
                    node=item["node"],
                    state=RunState.PENDING,
                    due_ms=due,
                    started_ms=None,
                    claimed=False,
                    reason=f"reassigned from {run.node}",
                ),
            )
            self._count(run.job_id, "reassigned")
            moved.append(run.run_id)
        return ok(moved=moved, lost=lost)

    # ------------------------------------------------------------------ helpers

    def _delivery(self, run: Run) -> Delivery:
        job = self.jobs.get(run.job_id)
        return job.spec.delivery if job else Delivery.AT_LEAST_ONCE

    def _move(self, old: Run, new: Run) -> None:
        if old.node is not None:
            self.node_active.get(old.node, {}).pop(old.run_id, None)
        self.runs[new.run_id] = new
        if new.node is not None:
            self.node_active.setdefault(new.node, {})[new.run_id] = None

    def _finish(self, run: Run, state: RunState, now_ms: int, *, reason: str | None = None) -> None:
        self.runs[run.run_id] = dataclasses.replace(
            run, state=state, finished_ms=now_ms, waiting=False, reason=reason or run.reason
        )
        self.job_active.get(run.job_id, {}).pop(run.run_id, None)
        if run.node is not None:
            self.node_active.get(run.node, {}).pop(run.run_id, None)
        self._count(run.job_id, OUTCOME_COUNTER[state])
        self._release_queued(run.job_id, now_ms)
        self._trim_history(run.job_id)

    def _release_queued(self, job_id: str, now_ms: int) -> None:
        active = [self.runs[r] for r in self.job_active.get(job_id, {})]
        if any(not r.waiting for r in active if not r.manual):
            return
        for run in active:
            if run.waiting:
                self.runs[run.run_id] = dataclasses.replace(
                    run, waiting=False, due_ms=max(run.due_ms, now_ms)
                )
                return

    def _trim_history(self, job_id: str) -> None:
        ids = self.job_runs.get(job_id)
        if ids is None:
            return
        excess = len(ids) - len(self.job_active.get(job_id, {})) - self.settings["history_per_job"]
        for rid in list(ids):
            if excess <= 0:
                return
            if self.runs[rid].state in TERMINAL:
                del ids[rid]
                del self.runs[rid]
                excess -= 1

    def _count(self, job_id: str, counter: str, n: int = 1) -> None:
        self.totals[counter] += n
        if job_id in self.stats:
            self.stats[job_id][counter] += n

    def _observe(self, job_id: str, summary: str, value_ms: int) -> None:
        self.totals[summary].add(value_ms)
        if job_id in self.stats:
            self.stats[job_id][summary].add(value_ms)

    def _pick_node(self, job: JobRecord, salt: str, exclude: str | None = None) -> str | None:
        candidates = self.candidates()
        others = [c for c in candidates if c.id != exclude]
        picked = pick_nodes(
            dataclasses.replace(job.spec.route, strategy=job.spec.route.strategy.LEAST_LOADED),
            job.spec.id,
            salt,
            others or candidates,
        )
        return picked[0] if picked else None

    # ------------------------------------------------------------------ reads (hold `lock`)

    def candidates(self) -> list[Candidate]:
        """Routing's view of the nodes: tags, capacity and active runs per node."""
        return [
            Candidate(
                id=n.id,
                tags=n.tags,
                capacity=n.capacity,
                running=len(self.node_active.get(n.id, {})),
                up=n.up,
                draining=n.draining,
            )
            for n in self.nodes.values()
        ]

    def active_runs_of(self, node_id: str) -> list[Run]:
        return [self.runs[r] for r in self.node_active.get(node_id, {})]

    def runs_newest_first(self, job_id: str | None = None) -> Iterator[Run]:
        ids = reversed(self.job_runs.get(job_id, {})) if job_id is not None else reversed(self.runs)
        return (self.runs[r] for r in ids)

    def digest_hex(self) -> str:
        return f"{self.applied}:{self.digest.hex()}"

    # ------------------------------------------------------------------ snapshots

    def dump(self, *, locked: bool = True) -> bytes:
        """The whole state as orjson bytes.

        `locked=False` is for the forked compaction child only: it is single-threaded, and a
        lock copied while the loop thread held it would never be released there.
        """
        if locked:
            with self.lock:
                return self.dump(locked=False)
        return orjson.dumps(
            {
                "v": SNAPSHOT_VERSION,
                "applied": self.applied,
                "digest": self.digest.hex(),
                "term": self.term,
                "leader": self.leader,
                "settings": self.settings,
                "next_incarnation": self.next_incarnation,
                "jobs": [j.to_dict() for j in self.jobs.values()],
                "runs": [r.to_dict() for r in self.runs.values()],
                "nodes": [n.to_dict() for n in self.nodes.values()],
                "stats": {k: _stats_dict(v) for k, v in self.stats.items()},
                "totals": _stats_dict(self.totals),
                "requests": [[k, *v] for k, v in self.requests.items()],
                "audit": self.audit,
                "removed": self.removed,
            }
        )

    def load(self, data: bytes) -> None:
        raw = orjson.loads(data)
        if raw.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {raw.get('v')!r}")
        with self.lock:
            self.__init_data(raw)

    def __init_data(self, raw: dict[str, Any]) -> None:
        listeners = self.listeners
        State.__init__(self)
        self.listeners = listeners
        self.applied, self.digest = raw["applied"], bytes.fromhex(raw["digest"])
        self.term, self.leader, self.settings = raw["term"], raw["leader"], raw["settings"]
        self.next_incarnation = raw["next_incarnation"]
        for d in raw["jobs"]:
            job = JobRecord.from_dict(d)
            self.jobs[job.spec.id] = job
            self.job_runs[job.spec.id], self.job_active[job.spec.id] = {}, {}
        self.nodes = {n["id"]: NodeRecord.from_dict(n) for n in raw["nodes"]}
        for d in raw["runs"]:
            self._add_run(Run.from_dict(d))
        self.stats = {k: _stats_from(v) for k, v in raw["stats"].items()}
        self.totals = _stats_from(raw["totals"])
        self.requests = {k: (fp, res, ms) for k, fp, res, ms in raw["requests"]}
        self.audit = raw.get("audit", {})
        self.removed = raw.get("removed", {})

    _HANDLERS: dict[CommandType, Callable[[State, dict[str, Any]], Result]] = {}
    _LEADER_COMMANDS = frozenset(
        {CommandType.FIRE_RUNS, CommandType.REASSIGN_RUNS, CommandType.SET_NODE, CommandType.REMOVE_NODE}
    )


_AUDITED = {
    CommandType.PUT_JOB: "updated",
    CommandType.PAUSE_JOB: "paused",
    CommandType.RESUME_JOB: "resumed",
    CommandType.TRIGGER_JOB: "triggered",
    CommandType.CANCEL_RUN: "cancelled a run",
}

State._HANDLERS = {t: getattr(State, f"_apply_{t.value}") for t in CommandType}


def _stats_dict(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Summary) else v for k, v in stats.items()}


def _stats_from(raw: dict[str, Any]) -> dict[str, Any]:
    out = new_stats()
    for key, value in raw.items():
        out[key] = Summary(**value) if isinstance(value, dict) else value
    return out
