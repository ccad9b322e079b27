"""Commands about runs: fire slots (exactly once each), worker reports fenced by attempt, retries, moves."""

from __future__ import annotations

import hashlib
from typing import Any

from ..model import AlertOn, Delivery, Overlap, RunState
from ..records import JobRecord, Run, evolve
from .data import ACTIVE, Result, StateData, ok, reject

__all__ = ["RunCommands"]


class RunCommands(StateData):
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
        """The job a fire or skip is for, when it is still that incarnation and version (a plan made
        from the record an edit replaced would fire the old schedule's slots: an edit can commit
        between the leader's plan and its fire), enabled, and the slot new. Items without a version
        (logs written before it was carried) are fenced by incarnation alone."""
        job = self.jobs.get(item["job_id"])
        if job is None or job.incarnation != item["incarnation"] or job.spec.paused:
            return None
        if "version" in item and item["version"] != job.version:
            return None
        if job.last_slot_ms is not None and item["nominal_ms"] <= job.last_slot_ms:
            return None  # already fired or recorded: exactly once per slot
        return job

    def _advance(self, job: JobRecord, item: dict[str, Any], now_ms: int, *, fired: bool) -> None:
        last = item.get("until_ms") or item["nominal_ms"]
        self.jobs[job.spec.id] = evolve(
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
        if f"{job.spec.id}@{nominal}" in self.runs or f"{job.spec.id}@{nominal}~0" in self.runs:
            self._advance(job, item, now_ms, fired=False)  # a slot that has a run is never fired again
            return []
        verdict = self._overlap_verdict(job, now_ms)
        self._advance(job, item, now_ms, fired=verdict != "skip")
        if verdict == "skip":
            self._record(job, RunState.SKIPPED, nominal, now_ms, "overlap: a run of the job is active")
            self._note_run_event(AlertOn.SKIPPED, self.runs[f"{job.spec.id}@{nominal}"], now_ms)
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
        self._count(job.spec.id, "fired")
        return ids

    def _overlap_verdict(self, job: JobRecord, now_ms: int) -> str:
        """'run', 'queue' or 'skip' for a new slot of `job`, by its overlap policy."""
        policy = job.spec.overlap
        if policy is Overlap.ALLOW:
            return "run"
        active = [self.runs[r] for r in self.job_active.get(job.spec.id, {}) if not self.runs[r].manual]
        if not active:
            return "run"
        if policy is Overlap.REPLACE:
            for run in active:
                self._finish(run, RunState.CANCELLED, now_ms, reason="replaced by a newer slot")
            return "run"
        if policy is Overlap.QUEUE and not any(r.waiting for r in active):
            return "queue"
        return "skip"

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
                    self.runs[run.run_id] = evolve(run, claimed=True)
                accepted.append(run.run_id)
        return ok(accepted=accepted)

    def _apply_start_runs(self, body: dict[str, Any]) -> Result:
        accepted = []
        for item in body["items"]:
            run = self._worker_run(item, body["node"])
            if run is None or run.waiting or run.state not in ACTIVE:
                continue
            if run.state is RunState.PENDING:
                if self._delivery(run) is Delivery.AT_MOST_ONCE and not run.claimed:
                    continue
                run = self._started(run, item["started_ms"])
                late_ms = item["started_ms"] - run.due_ms
                self._observe(run.job_id, "lateness", late_ms)
                self._note_run_event(AlertOn.LATE, run, body["now_ms"], late_ms=late_ms)
            accepted.append(run.run_id)
        return ok(accepted=accepted)

    def _apply_finish_runs(self, body: dict[str, Any]) -> Result:
        accepted = []
        for item in body["items"]:
            run = self._worker_run(item, body["node"])
            if run is None or run.waiting or run.state not in ACTIVE:
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
        report: dict[str, Any] = {
            "started_ms": started,
            "exit_code": item.get("exit_code"),
            "http_status": item.get("http_status"),
            "error": item.get("error"),
            "output": _tail(str(item.get("output") or ""), self.settings["output_tail_bytes"]),
            # Absent from reports of whole outputs (and from every report before the field).
            "output_truncated": item.get("output_truncated") is True,
        }
        self._observe(run.job_id, "duration", item["finished_ms"] - started)
        job = self.jobs.get(run.job_id)
        if outcome is not RunState.SUCCEEDED and job is not None and run.attempt <= job.spec.retries.max:
            self._retry(run, job, item["finished_ms"], report)
            return
        self._finish(run, outcome, item["finished_ms"], **report)

    def _retry(self, run: Run, job: JobRecord, now_ms: int, report: dict[str, Any]) -> None:
        """Decided here, once the failure is committed: every node computes the same next attempt.
        The new attempt keeps the failed one's `report` (its output and error), but not its start."""
        attempt = run.attempt + 1
        delay_ms = int(job.spec.retries.delay_s(attempt) * 1000)
        spread = int(delay_ms * job.spec.retries.jitter)
        if spread:
            delay_ms += int.from_bytes(
                hashlib.blake2b(f"{run.run_id}#{attempt}".encode(), digest_size=4).digest(), "big"
            ) % (spread + 1)
        node = self._pick_node(job, run.run_id, exclude=run.node) or run.node
        retry = {
            **report,
            "attempt": attempt,
            "node": node,
            "state": RunState.PENDING,
            "due_ms": now_ms + delay_ms,
            "started_ms": None,
            "claimed": False,
            "reason": f"retry after: {report['error']}",
        }
        self._move(run, evolve(run, **retry))
        self._count(run.job_id, "retried")

    def _apply_unclaim_runs(self, body: dict[str, Any]) -> Result:
        """A stopping node hands back the runs it has not started and will never start. It takes
        no new runs from now on (as DRAIN_NODE; `leaving` is kept), so the leader moves them at
        once. Each item is fenced by node and attempt and must still be pending: a run that
        started, moved or ended meanwhile is left alone. A handed-back run is no longer claimed,
        so an `at_most_once` run moves rather than becoming `lost`."""
        node = self.nodes.get(str(body.get("node")))
        if node is None:
            return reject("not_found", f"no node {body.get('node')!r}", "node")
        self.nodes[node.id] = evolve(node, draining=True, updated_ms=body["now_ms"])
        released = []
        for item in body["items"]:
            run = self._worker_run(item, node.id)
            if run is None or run.state is not RunState.PENDING:
                continue
            if run.claimed:
                self.runs[run.run_id] = evolve(run, claimed=False)
            released.append(run.run_id)
        return ok(node=node.id, released=released)

    def _apply_expire_runs(self, body: dict[str, Any]) -> Result:
        """The leader records pending runs that missed their misfire grace as `missed` (the rule
        is the scheduler's, `stale.expiry`). Fenced by attempt; a run that started, moved or ended
        meanwhile is left alone, and so is a claimed one (its node may be starting it)."""
        expired = []
        for item in body["items"]:
            run = self.runs.get(str(item.get("run_id")))
            if run is None or run.state is not RunState.PENDING or run.attempt != item.get("attempt"):
                continue
            if run.claimed:
                continue
            reason = str(item.get("reason") or "not started within its misfire grace")
            self._finish(run, RunState.MISSED, body["now_ms"], reason=reason)
            expired.append(run.run_id)
        return ok(expired=expired)

    def _apply_reassign_runs(self, body: dict[str, Any]) -> Result:
        moved, lost = [], []
        for item in body["moves"]:
            run = self.runs.get(str(item.get("run_id")))
            if run is None or run.state not in ACTIVE or run.attempt != item.get("attempt"):
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
                evolve(
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


def _tail(output: str, max_bytes: int) -> str:
    """The last `max_bytes` bytes of `output` in UTF-8, without a character cut in two."""
    return output.encode()[-max_bytes:].decode(errors="ignore")
