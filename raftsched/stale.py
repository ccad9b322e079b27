"""Pending runs that missed their misfire grace: the rule the leader commits and workers keep.

A run is committed ahead to the node that starts it at its due time. One still pending past its
due time plus the job's `misfire.grace` (its node was down, stopping, or the whole cluster was
stopped) is a slot that missed its grace like any other, and the job's misfire policy decides:

- `skip`: it is recorded `missed`;
- `fire_once`, `fire_all`: it stays, as the one late run the policy fires, until a newer slot of
  the job falls due; then it is recorded `missed` and the newer slot fires in its place.

So a stale pending run never holds a `forbid` job "active" for longer than one slot past its
grace: before this rule, every slot that fell due meanwhile was recorded `skipped` ("overlap: a
run of the job is active") for a run that had not started and might never start on time.
Manual, queued (`waiting`) and claimed (`at_most_once`: its node may be starting it) runs are
left alone. Pure: the caller passes the time.
"""

from __future__ import annotations

from .model import MisfirePolicy, RunState
from .planning import next_key
from .records import JobRecord, Run

__all__ = ["expiry"]


def expiry(job: JobRecord, run: Run, now_ms: int) -> str | None:
    """Why `run` (of `job`) is to be recorded `missed` at `now_ms`, or None: it may still start."""
    if run.state is not RunState.PENDING or run.manual or run.waiting or run.claimed:
        return None
    misfire = job.spec.misfire
    if now_ms <= run.due_ms + int(misfire.grace * 1000):
        return None
    if misfire.policy is MisfirePolicy.SKIP:
        return "not started within its misfire grace (policy skip)"
    newer = next_key(job)
    if newer is None or newer > now_ms:
        return None  # the one late run the policy fires: no newer slot is due to take its place
    return f"not started within its misfire grace; a newer slot fires in its place ({misfire.policy.value})"
