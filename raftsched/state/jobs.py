"""Commands about jobs: create, replace, restore, delete, pause, resume, trigger; cancel a run."""

from __future__ import annotations

from typing import Any

from ..errors import RaftschedError
from ..ids import manual_run_id
from ..model import JobSpec, RunState
from ..records import NO_RUNS, ZERO_STATS, JobRecord, ReadOnlyDict, Run, evolve, shared_parts
from .data import ACTIVE, Result, ok, reject
from .paused import PausedCommands, edit_replans

__all__ = ["JobCommands"]

_STARTED = frozenset(
    {RunState.RUNNING, RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.LOST}
)


class JobCommands(PausedCommands):
    def _apply_put_job(self, body: dict[str, Any]) -> Result:
        try:
            spec = shared_parts(JobSpec.from_dict(body["spec"]))
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
        replans = "accounted" in body and edit_replans(old, spec)
        if replans:
            # Version 2: the old schedule's slots this edit overtakes (a paused range, or due and
            # never fired) are recorded first, then the new schedule plans from the edit.
            moved = self._account(old, body["accounted"], now_ms)
            if moved is None:
                return _stale(spec.id)
            old = moved
        keep = set(body.get("keep_slots") or ())
        cancelled = False
        for rid in list(self.job_active.get(spec.id, {})):
            run = self.runs[rid]
            if run.state is RunState.PENDING and not run.manual and run.nominal_ms not in keep:
                self._finish(run, RunState.CANCELLED, now_ms, reason="job edited")
                cancelled = True
        if spec.paused and not old.spec.paused:
            self._cancel_pending(spec.id, now_ms, "job paused")
        last_slot, next_slot = old.last_slot_ms, body.get("next_nominal_ms")
        if (cancelled or spec.schedule != old.spec.schedule) and last_slot is not None and last_slot > now_ms:
            # Slots were fired ahead under the old schedule (or cancelled now): plan the new one from
            # the edit (or the newest slot that has started), so none of its slots is skipped.
            # Kept runs are not fired twice: a slot that has a run is never fired again.
            started = [
                self.runs[r].nominal_ms
                for r in self.job_runs.get(spec.id, {})
                if not self.runs[r].manual and self.runs[r].state in _STARTED
            ]
            last_slot, next_slot = max([now_ms, *(s for s in started if s <= last_slot)]), None
        elif replans:
            last_slot = max(now_ms, last_slot if last_slot is not None else now_ms)
        record = evolve(
            old,
            spec=spec,
            version=old.version + 1,
            updated_ms=now_ms,
            last_slot_ms=last_slot,
            next_nominal_ms=next_slot,
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
        # Shared until the job has runs and statistics of its own: most jobs of a big table never do.
        self.job_runs[spec.id] = self.job_active[spec.id] = NO_RUNS
        self.stats[spec.id] = ZERO_STATS
        return ok(job_id=spec.id, version=1, created=True)

    def _apply_restore_jobs(self, body: dict[str, Any]) -> Result:
        """Recreate jobs from a backup with their own creation time and schedule position, so that
        `every` phases and next fire times survive; jobs that exist are left to the caller."""
        restored, existing, invalid = [], [], []
        entry: ReadOnlyDict | None = None  # one audit entry, shared by the jobs of this command
        for item in body.get("jobs", ()):
            try:
                spec = shared_parts(JobSpec.from_dict(item["spec"]))
            except (RaftschedError, KeyError, TypeError):
                invalid.append(str((item.get("spec") or {}).get("id", "?")))
                continue
            if spec.id in self.jobs:
                existing.append(spec.id)
                continue
            self._create_job(spec, {**body, "next_nominal_ms": item.get("next_nominal_ms")})
            self.jobs[spec.id] = evolve(
                self.jobs[spec.id],
                created_ms=item.get("created_ms", body["now_ms"]),
                last_slot_ms=item.get("last_slot_ms"),
            )
            if entry is None:
                entry = ReadOnlyDict(
                    at_ms=body["now_ms"],
                    actor=str(body.get("actor", "")),
                    action="restored from a backup",
                    version=1,
                )
            self.audit.setdefault(spec.id, []).append(entry)
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
        if (
            job.spec.paused
            and "accounted" in body
            and self._account(job, body["accounted"], body["now_ms"]) is None
        ):
            return _stale(job.spec.id)  # version 2: the paused range is counted before it goes
        for rid in list(self.job_active.get(job.spec.id, {})):
            self._finish(self.runs[rid], RunState.CANCELLED, body["now_ms"], reason="job deleted")
        for rid in self.job_runs.pop(job.spec.id, {}):
            self.runs.pop(rid, None)
        del self.jobs[job.spec.id]
        self.audit.pop(job.spec.id, None)
        self.job_active.pop(job.spec.id, None)
        self.job_waiting.pop(job.spec.id, None)
        self.stats.pop(job.spec.id, None)
        return ok(job_id=job.spec.id)

    def _apply_pause_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        if not job.spec.paused:
            self._cancel_pending(job.spec.id, now_ms, "job paused")
            last = job.last_slot_ms
            missed = body.get("missed")
            if isinstance(missed, dict) and missed.get("from_ms") == job.next_nominal_ms:
                # Due before the pause and never fired (no leader then): missed, not lost.
                reason = "not fired before the job was paused (no leader)"
                until, count = int(missed["until_ms"]), int(missed["count"])
                self._record(
                    job, RunState.MISSED, missed["from_ms"], now_ms, reason, until_ms=until, count=count
                )
                last = max(last or 0, until)
            job = evolve(
                job,
                spec=evolve(job.spec, paused=True),
                version=job.version + 1,
                updated_ms=now_ms,
                paused_ms=now_ms,
                last_slot_ms=last,
                actor=str(body.get("actor", "")),
            )
            self.jobs[job.spec.id] = job
        return ok(job_id=job.spec.id, version=job.version)

    def _apply_resume_job(self, body: dict[str, Any]) -> Result:
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        if job.spec.paused and "accounted" in body:
            moved = self._account(job, body["accounted"], now_ms)  # version 2: the paused range
            if moved is None:
                return _stale(job.spec.id)
            job = moved
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
            job = evolve(
                job,
                spec=evolve(job.spec, paused=False),
                version=job.version + 1,
                updated_ms=now_ms,
                paused_ms=None,
                next_nominal_ms=body.get("next_nominal_ms"),
                last_slot_ms=last,
                actor=str(body.get("actor", "")),
            )
            self.jobs[job.spec.id] = job
        return ok(job_id=job.spec.id, version=job.version)

    def _apply_trigger_job(self, body: dict[str, Any]) -> Result:
        """A manual run now, or one per node of `nodes` (broadcast and shards): `<id>@manual-<ms>`,
        `~<shard>` when there are several, as a scheduled slot's runs are named. Never moves the
        schedule, never counted as fired. Applying it twice adds nothing (the run ids exist)."""
        job = self._job_or_reject(body)
        if not isinstance(job, JobRecord):
            return job
        now_ms = body["now_ms"]
        nodes = body.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            nodes = [body.get("node")]
        base = manual_run_id(job.spec.id, now_ms)
        ids = [base] if len(nodes) == 1 else [f"{base}~{shard}" for shard in range(len(nodes))]
        for shard, (rid, node) in enumerate(zip(ids, nodes, strict=True)):
            if rid not in self.runs:
                self._add_run(
                    Run(
                        run_id=rid,
                        job_id=job.spec.id,
                        incarnation=job.incarnation,
                        attempt=1,
                        nominal_ms=now_ms,
                        due_ms=now_ms,
                        node=node,
                        state=RunState.PENDING,
                        created_ms=now_ms,
                        shard=shard,
                        shards=len(nodes),
                        manual=True,
                        env=body.get("env"),
                        kwargs=body.get("kwargs"),
                    )
                )
        # One run: the result older entries had (it is kept for idempotent replies, in snapshots).
        return ok(run_id=ids[0], run_ids=ids) if len(ids) > 1 else ok(run_id=ids[0])

    def _apply_cancel_run(self, body: dict[str, Any]) -> Result:
        run = self.runs.get(str(body.get("run_id")))
        if run is None:
            return reject("not_found", f"no run {body.get('run_id')!r}", "run_id")
        if run.state in ACTIVE:
            self._finish(run, RunState.CANCELLED, body["now_ms"], reason=f"cancelled by {body.get('actor')}")
        return ok(run_id=run.run_id, state=self.runs[run.run_id].state.value)


def _stale(job_id: str) -> Result:
    """An `accounted` item that does not start at the job's position: the proposer's view was
    stale (a fire or the leader's accounting came first). Nothing applied: read again, retry."""
    return reject("unavailable", f"job {job_id!r} moved on since it was read: retry", "job_id")
