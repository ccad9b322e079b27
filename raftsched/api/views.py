"""Records -> the JSON shapes of API.md. Call with the state's lock held.

Jobs are shown with sensitive inline header values redacted (`redaction.spec_view`)."""

from __future__ import annotations

from typing import Any

from ..accounting import NOTHING, Overlay, overlay
from ..model import RunState, iso_ms
from ..records import JobRecord, NodeRecord, Run, Summary
from ..state import State
from .redaction import spec_view

__all__ = ["job_view", "node_view", "paused_overlay", "run_view", "stats_view"]


def paused_overlay(job: JobRecord, state: State) -> Overlay:
    """A paused job's slots up to the committed clock that the leader has not recorded yet, as
    the records it will make of them (every node shows the same). Before the cluster runs
    command version 2 there is no committed clock, and resume records the range."""
    if state.cluster_version < 2:
        return NOTHING
    return overlay(job, state.newest_run(job.spec.id), state.clock_ms)


def job_view(job: JobRecord, state: State) -> dict[str, Any]:
    out = spec_view(job.spec)
    account = paused_overlay(job, state)
    out.update(
        version=job.version,
        incarnation=job.incarnation,
        next_fire_at=None if job.spec.paused else iso_ms(job.next_nominal_ms),
        last_fire_at=iso_ms(job.last_fire_ms),
        last_slot_at=iso_ms(_last_slot_ms(job, state, account)),
        next_slot_at=None if job.spec.paused else iso_ms(_next_slot_ms(job, state)),
        created_at=iso_ms(job.created_ms),
        updated_at=iso_ms(job.updated_ms),
        updated_by=job.actor,
        stats=stats_view(state.stats.get(job.spec.id, {}), account.counts),
        last_run=_last_run(job.spec.id, state),
        audit=[
            {**entry, "at": iso_ms(entry["at_ms"])} for entry in reversed(state.audit.get(job.spec.id, []))
        ],
    )
    return out


_FINISHED = frozenset({"succeeded", "failed", "timed_out", "cancelled", "lost"})


def _due_by(state: State) -> float:
    """The committed clock: slots up to it have fallen due (no bound before version 2)."""
    return state.clock_ms if state.cluster_version > 1 else float("inf")


def _last_slot_ms(job: JobRecord, state: State, account: Overlay) -> int | None:
    """The newest slot of the job that fell due by the committed clock and is a run (pending or
    not) or a record (the newest slot of a range record)."""
    due_by, newest = _due_by(state), account.last_slot_ms()
    for run in state.runs_newest_first(job.spec.id):
        slot = run.until_ms or run.nominal_ms
        if not run.manual and slot <= due_by and (newest is None or slot > newest):
            newest = slot
    return newest


def _next_slot_ms(job: JobRecord, state: State) -> int | None:
    """The job's next slot after the committed clock: its first pending run after it, or the slot
    the leader has not fired yet."""
    due_by = _due_by(state)
    pending = [
        run.nominal_ms
        for run_id in state.job_active.get(job.spec.id, ())
        if (run := state.runs[run_id]).state is RunState.PENDING
        and not run.manual
        and run.nominal_ms > due_by
    ]
    return min(pending, default=job.next_nominal_ms)


def _last_run(job_id: str, state: State) -> dict[str, Any] | None:
    """The newest run that ended (skipped and missed records are not results)."""
    for run in state.runs_newest_first(job_id):
        if run.state.value in _FINISHED:
            return {"run_id": run.run_id, "state": run.state.value, "finished_at": iso_ms(run.finished_ms)}
    return None


def run_view(run: Run, *, with_output: bool = True) -> dict[str, Any]:
    duration = None
    if (
        run.started_ms is not None
        and run.finished_ms is not None
        and run.state.value not in ("skipped", "missed")
    ):
        duration = (run.finished_ms - run.started_ms) / 1000
    lateness = (run.started_ms - run.due_ms) / 1000 if run.started_ms is not None else None
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "job_id": run.job_id,
        "attempt": run.attempt,
        "scheduled_at": iso_ms(run.nominal_ms),
        "due_at": iso_ms(run.due_ms),
        "node": run.node,
        "state": run.state.value,
        "created_at": iso_ms(run.created_ms),
        "started_at": iso_ms(run.started_ms),
        "finished_at": iso_ms(run.finished_ms),
        "duration": duration,
        "lateness": lateness,
        "exit_code": run.exit_code,
        "http_status": run.http_status,
        "error": run.error,
        "reason": run.reason,
        "shard": run.shard,
        "shards": run.shards,
        "manual": run.manual,
        "output_truncated": run.output_truncated,
    }
    if run.until_ms is not None:
        out.update(until=iso_ms(run.until_ms), count=run.count)
    if with_output:
        out["output"] = run.output
    return out


def node_view(node: NodeRecord, state: State, connected: bool | None) -> dict[str, Any]:
    running, pending = state.node_runs(node.id)
    return {
        "id": node.id,
        "raft": node.raft,
        "http": node.http,
        "tags": node.tags,
        "capacity": node.capacity,
        "running": running,
        "pending": pending,
        "alive": node.up,
        "connected": connected,
        "draining": node.draining,
        "leaving": node.leaving,
        "voter": True,
        "version": node.version,
        "commands": state.published.get(node.id, 1),  # the highest command version it applies
        "leader": state.leader == node.id,
        "clock_offset_ms": node.clock_offset_ms,
        "clock_ok": node.clock_ok,
        "policy": node.policy.to_dict(),
        "down_reason": node.down_reason,
    }


def stats_view(stats: dict[str, Any], extra: tuple[tuple[str, int], ...] = ()) -> dict[str, Any]:
    """Counters and summaries; `extra` adds to counters (a paused range not recorded yet)."""
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, Summary):
            out[key] = {
                "count": value.count,
                "p50": _s(value.quantile_ms(0.5)),
                "p99": _s(value.quantile_ms(0.99)),
                "max": _s(value.max_ms if value.count else None),
                "mean": _s(value.total_ms // value.count if value.count else None),
            }
        else:
            out[key] = value
    for key, n in extra:
        out[key] = out.get(key, 0) + n
    return out


def _s(ms: int | None) -> float | None:
    return None if ms is None else ms / 1000
