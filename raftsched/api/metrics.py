"""`GET /metrics`: the node's view in the Prometheus text format (prometheus-client).

Nothing is registered globally and nothing happens at import: each request builds a fresh
`CollectorRegistry` holding one `_Collector`, which copies what it needs from the replicated
state under `state.lock` (the lock is held only for the copy, never while rendering) and
reads this node's Raft status, then renders the text off the event loop.

What is exported (every name starts with `raftsched_`):

* replicated statistics, the same on every node: `job_runs_total{job,outcome}` and
  `runs_total{outcome}` for each counter of `records.COUNTERS`; the histograms
  `job_lateness_seconds{job}`, `job_duration_seconds{job}`, `lateness_seconds` and
  `duration_seconds`, made from the state's fixed-bucket `Summary` (`BUCKETS_MS` in seconds);
* cluster gauges from the replicated state: `jobs`, `jobs_paused`, `runs_active{state}`,
  `nodes{state}`, and per node `node_up`, `node_running`, `node_capacity`, `node_draining`,
  `node_clock_ok`, `node_clock_offset_seconds` (clockwatch.py);
* this node's Raft view: `raft_role{role}`, `raft_term`, `raft_commit_index`,
  `raft_applied_index`, `raft_log_entries`, `raft_is_leader`, `raft_peer_connected{peer}`,
  `raft_compactions_total`, `raft_appends_trimmed_total`, `raft_appends_refused_total` (logmatch.py),
  `raft_rejected_connections_total{reason}` (Raft connections closed by raftguard.py),
  and `state_applied_total` (commands applied to this node's state), `build_info{version,node}`;
* alerts, replicated: `alert_deliveries_total{channel,outcome}` (outcome `delivered`, or `failed`
  for each failed delivery attempt) and `alerts_pending{channel}` (decided, not yet delivered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from .. import __version__
from ..alerting import Delivery
from ..errors import NoLeader
from ..model import RunState
from ..records import BUCKETS_MS, COUNTERS, Summary
from ..replication import RaftStatus
from ..state import State
from .app import SERVICES

__all__ = ["add_routes"]

ROLES = ("leader", "follower", "candidate")
ACTIVE_STATES = (RunState.PENDING, RunState.RUNNING)
# The `le` labels of the histogram buckets: BUCKETS_MS in seconds, then the open bucket.
_BOUNDS = tuple(repr(b / 1000) for b in BUCKETS_MS) + ("+Inf",)


def add_routes(app: web.Application) -> None:
    """Register this module's routes on `app`."""
    app.router.add_get("/metrics", metrics)


async def metrics(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    try:
        raft: RaftStatus | None = svc.raft.status()
    except NoLeader:  # the Raft node is not running: still export the state
        raft = None
    registry = CollectorRegistry()
    registry.register(_Collector(svc.state, raft, node_id=svc.node_id, version=__version__))
    body = await asyncio.to_thread(generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ---------------------------------------------------------------- the snapshot


@dataclass(frozen=True, slots=True)
class _Stats:
    counters: tuple[int, ...]  # in COUNTERS order
    lateness: Summary
    duration: Summary


@dataclass(frozen=True, slots=True)
class _Node:
    id: str
    raft: str
    up: bool
    draining: bool
    capacity: int
    running: int
    pending: int
    clock_offset_ms: int | None = None
    clock_ok: bool = True


@dataclass(slots=True)
class _Snapshot:
    applied: int = 0
    jobs: int = 0
    paused: int = 0
    active: dict[str, int] = field(default_factory=dict)
    nodes: list[_Node] = field(default_factory=list)
    totals: _Stats | None = None
    per_job: dict[str, _Stats] = field(default_factory=dict)
    alert_counts: dict[str, int] = field(default_factory=dict)  # "channel|outcome" -> deliveries
    alerts_pending: dict[str, int] = field(default_factory=dict)  # channel -> alerts


def _copy_summary(s: Summary) -> Summary:
    return Summary(buckets=list(s.buckets), count=s.count, total_ms=s.total_ms, max_ms=s.max_ms)


def _copy_stats(stats: dict[str, Any]) -> _Stats:
    return _Stats(
        counters=tuple(int(stats[c]) for c in COUNTERS),
        lateness=_copy_summary(stats["lateness"]),
        duration=_copy_summary(stats["duration"]),
    )


def _snapshot(state: State) -> _Snapshot:
    """Copy what the metrics need, holding the state's lock only for the copy."""
    with state.lock:
        snap = _Snapshot(applied=state.applied, jobs=len(state.jobs))
        snap.paused = sum(1 for j in state.jobs.values() if j.spec.paused)
        snap.active = dict.fromkeys((s.value for s in ACTIVE_STATES), 0)
        for ids in state.job_active.values():
            for rid in ids:
                run = state.runs.get(rid)
                if run is not None and run.state.active:
                    snap.active[run.state.value] += 1
        snap.nodes = [
            _Node(
                id=n.id,
                raft=n.raft,
                up=n.up,
                draining=n.draining,
                capacity=n.capacity,
                running=running,
                pending=pending,
                clock_offset_ms=n.clock_offset_ms,
                clock_ok=n.clock_ok,
            )
            for n in state.nodes.values()
            for running, pending in (state.node_runs(n.id),)
        ]
        snap.totals = _copy_stats(state.totals)
        snap.per_job = {job_id: _copy_stats(s) for job_id, s in state.stats.items()}
        snap.alert_counts = dict(state.alert_counts)
        snap.alerts_pending = dict.fromkeys(state.channels, 0)
        for alert in state.alerts.values():
            if alert.delivery is Delivery.PENDING:
                snap.alerts_pending[alert.channel] = snap.alerts_pending.get(alert.channel, 0) + 1
    return snap


# ---------------------------------------------------------------- the collector


class _Collector:
    """Yields every family from one consistent copy of the state and one Raft status."""

    def __init__(self, state: State, raft: RaftStatus | None, *, node_id: str, version: str) -> None:
        self._state = state
        self._raft = raft
        self._node_id = node_id
        self._version = version

    def collect(self) -> Iterator[Metric]:
        snap = _snapshot(self._state)
        yield from _statistics(snap)
        yield from _cluster(snap)
        yield from _alerts(snap)
        if self._raft is not None:
            yield from _raft(self._raft, snap)
        applied = CounterMetricFamily(
            "raftsched_state_applied_total", "Commands applied to this node's replicated state."
        )
        applied.add_metric([], snap.applied)
        yield applied
        yield InfoMetricFamily(
            "raftsched_build", "This node's build.", value={"version": self._version, "node": self._node_id}
        )


def _buckets(s: Summary) -> list[tuple[str, float]]:
    out, seen = [], 0
    for bound, n in zip(_BOUNDS, s.buckets, strict=True):
        seen += n
        out.append((bound, float(seen)))
    return out


def _statistics(snap: _Snapshot) -> Iterator[Metric]:
    job_runs = CounterMetricFamily(
        "raftsched_job_runs_total",
        "Runs of a job by outcome (replicated: every node reports the same); outcome fired counts "
        "the scheduled slots fired, manual triggers apart.",
        labels=["job", "outcome"],
    )
    runs = CounterMetricFamily(
        "raftsched_runs_total",
        "Runs of all jobs by outcome (replicated); outcome fired counts the scheduled slots fired, "
        "manual triggers apart.",
        labels=["outcome"],
    )
    histograms = {
        key: (
            HistogramMetricFamily(
                f"raftsched_job_{key}_seconds", doc + " per job (replicated).", labels=["job"]
            ),
            HistogramMetricFamily(f"raftsched_{key}_seconds", doc + " of all jobs (replicated).", labels=[]),
        )
        for key, doc in (
            ("lateness", "Start time minus due time of first attempts"),
            ("duration", "Run durations"),
        )
    }
    for job_id, stats in sorted(snap.per_job.items()):
        for name, value in zip(COUNTERS, stats.counters, strict=True):
            job_runs.add_metric([job_id, name], value)
        for key, summary in (("lateness", stats.lateness), ("duration", stats.duration)):
            histograms[key][0].add_metric([job_id], _buckets(summary), summary.total_ms / 1000)
    if snap.totals is not None:
        for name, value in zip(COUNTERS, snap.totals.counters, strict=True):
            runs.add_metric([name], value)
        for key, summary in (("lateness", snap.totals.lateness), ("duration", snap.totals.duration)):
            histograms[key][1].add_metric([], _buckets(summary), summary.total_ms / 1000)
    yield job_runs
    yield runs
    for per_job, cluster in histograms.values():
        yield per_job
        yield cluster


def _alerts(snap: _Snapshot) -> Iterator[Metric]:
    deliveries = CounterMetricFamily(
        "raftsched_alert_deliveries",
        "Alert delivery attempts by channel and outcome (replicated): delivered, or failed per attempt.",
        labels=["channel", "outcome"],
    )
    for key, count in sorted(snap.alert_counts.items()):
        channel, _, outcome = key.rpartition("|")
        deliveries.add_metric([channel, outcome], count)
    yield deliveries
    pending = GaugeMetricFamily(
        "raftsched_alerts_pending", "Alerts decided and not yet delivered, by channel.", labels=["channel"]
    )
    for channel, count in sorted(snap.alerts_pending.items()):
        pending.add_metric([channel], count)
    yield pending


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _cluster(snap: _Snapshot) -> Iterator[Metric]:
    yield _gauge("raftsched_jobs", "Jobs in the replicated job table.", snap.jobs)
    yield _gauge("raftsched_jobs_paused", "Paused jobs.", snap.paused)
    active = GaugeMetricFamily(
        "raftsched_runs_active", "Runs pending or running, by state.", labels=["state"]
    )
    for state_name, count in snap.active.items():
        active.add_metric([state_name], count)
    yield active
    nodes = GaugeMetricFamily("raftsched_nodes", "Member nodes by liveness (as committed).", labels=["state"])
    up = sum(1 for n in snap.nodes if n.up)
    nodes.add_metric(["up"], up)
    nodes.add_metric(["down"], len(snap.nodes) - up)
    yield nodes
    families = {
        "up": GaugeMetricFamily("raftsched_node_up", "1 if the node is committed alive.", labels=["node"]),
        "running": GaugeMetricFamily(
            "raftsched_node_running", "Runs executing on the node now (its load).", labels=["node"]
        ),
        "pending": GaugeMetricFamily(
            "raftsched_node_pending", "Runs assigned to the node, not yet due.", labels=["node"]
        ),
        "capacity": GaugeMetricFamily(
            "raftsched_node_capacity", "Runs the node executes at once.", labels=["node"]
        ),
        "draining": GaugeMetricFamily(
            "raftsched_node_draining", "1 if the node is draining.", labels=["node"]
        ),
        "clock_ok": GaugeMetricFamily(
            "raftsched_node_clock_ok",
            "0 if the node's clock is off the cluster's (no new runs).",
            labels=["node"],
        ),
        "clock_offset": GaugeMetricFamily(
            "raftsched_node_clock_offset_seconds",
            "The node's clock minus the cluster's (the median of all nodes'), as the leader measured it.",
            labels=["node"],
        ),
    }
    for n in snap.nodes:
        families["up"].add_metric([n.id], int(n.up))
        families["running"].add_metric([n.id], n.running)
        families["pending"].add_metric([n.id], n.pending)
        families["capacity"].add_metric([n.id], n.capacity)
        families["draining"].add_metric([n.id], int(n.draining))
        families["clock_ok"].add_metric([n.id], int(n.clock_ok))
        if n.clock_offset_ms is not None:
            families["clock_offset"].add_metric([n.id], n.clock_offset_ms / 1000)
    yield from families.values()


def _raft(raft: RaftStatus, snap: _Snapshot) -> Iterator[Metric]:
    role = GaugeMetricFamily(
        "raftsched_raft_role", "1 for this node's current Raft role, 0 for the others.", labels=["role"]
    )
    for name in ROLES:
        role.add_metric([name], int(raft.role == name))
    yield role
    yield _gauge("raftsched_raft_is_leader", "1 if this node is the Raft leader.", int(raft.role == "leader"))
    yield _gauge("raftsched_raft_term", "This node's current Raft term.", raft.term)
    yield _gauge(
        "raftsched_raft_commit_index", "The highest log index this node knows committed.", raft.commit_index
    )
    yield _gauge(
        "raftsched_raft_applied_index", "The highest log index applied on this node.", raft.applied_index
    )
    yield _gauge(
        "raftsched_raft_log_entries", "Entries in this node's Raft log (since compaction).", raft.log_len
    )
    yield CounterMetricFamily(
        "raftsched_raft_compactions",
        "Snapshots (log compactions) this node started at its turns, staggered between nodes.",
        value=raft.compactions,
    )
    yield CounterMetricFamily(
        "raftsched_raft_appends_trimmed",
        "AppendEntries rewritten so that entries this node already held were kept (Raft's log matching).",
        value=raft.appends_trimmed,
    )
    yield CounterMetricFamily(
        "raftsched_raft_appends_refused",
        "AppendEntries refused because they would have overwritten committed entries.",
        value=raft.appends_refused,
    )
    rejected = CounterMetricFamily(
        "raftsched_raft_rejected_connections",
        "Raft connections this node closed, by reason (raftguard.Reason).",
        labels=["reason"],
    )
    for reason, count in sorted(raft.rejected_connections.items()):
        rejected.add_metric([str(reason)], count)
    yield rejected
    by_addr = {n.raft: n.id for n in snap.nodes}
    peers = GaugeMetricFamily(
        "raftsched_raft_peer_connected",
        "1 if this node's Raft connection to the peer is up.",
        labels=["peer", "address"],
    )
    for addr, connected in sorted(raft.connected.items()):
        peers.add_metric([by_addr.get(addr, addr), addr], int(connected))
    yield peers
