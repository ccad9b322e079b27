"""Records the replicated state keeps: jobs, runs, nodes, statistics.

Frozen, so that a reader holding one never sees it change under it; the state replaces
records (`dataclasses.replace`) instead of mutating them. Each has `to_dict`/`from_dict`
for the orjson snapshot (nothing of ours is pickled).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .model import JobSpec, RunState

__all__ = ["BUCKETS_MS", "JobRecord", "NodeRecord", "Run", "Summary", "new_stats"]

# Upper bounds (ms) of the latency histogram buckets; the last bucket is open.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000)
COUNTERS = (
    "fired",
    "succeeded",
    "failed",
    "timed_out",
    "retried",
    "skipped",
    "missed",
    "lost",
    "cancelled",
    "reassigned",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobRecord:
    spec: JobSpec
    version: int
    incarnation: int
    created_ms: int
    updated_ms: int
    next_nominal_ms: int | None
    last_slot_ms: int | None = None
    last_fire_ms: int | None = None
    fired: int = 0
    paused_ms: int | None = None
    actor: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        return cls(**{**d, "spec": JobSpec.from_dict(d["spec"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    run_id: str
    job_id: str
    incarnation: int
    attempt: int
    nominal_ms: int
    due_ms: int
    node: str | None
    state: RunState
    created_ms: int
    started_ms: int | None = None
    finished_ms: int | None = None
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None
    output: str = ""
    shard: int = 0
    shards: int = 1
    reason: str | None = None
    manual: bool = False
    env: dict[str, str] | None = None
    kwargs: dict[str, Any] | None = None
    waiting: bool = False  # overlap `queue`: waits for the active run to end
    claimed: bool = False  # at_most_once: claimed in the log before starting
    until_ms: int | None = None  # skipped/missed records may cover a range of slots
    count: int = 1

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(**{**d, "state": RunState(d["state"])})


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    id: str
    http: str
    raft: str
    tags: dict[str, str] = field(default_factory=dict)
    capacity: int = 8
    up: bool = True
    draining: bool = False  # takes no new runs (shutting down, or leaving)
    leaving: bool = False  # an operator removes it: once drained, it leaves the cluster
    version: str = ""
    updated_ms: int = 0
    clock_offset_ms: int | None = None  # from the cluster's clock (median of all), as the leader measured it
    clock_ok: bool = True  # within max_clock_offset_s of the cluster: false takes no new runs

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeRecord:
        return cls(**d)


@dataclass(slots=True)
class Summary:
    """A latency histogram with fixed buckets: deterministic, mergeable, cheap."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    count: int = 0
    total_ms: int = 0
    max_ms: int = 0

    def add(self, value_ms: int) -> None:
        value_ms = max(0, value_ms)
        index = next((i for i, b in enumerate(BUCKETS_MS) if value_ms <= b), len(BUCKETS_MS))
        self.buckets[index] += 1
        self.count += 1
        self.total_ms += value_ms
        self.max_ms = max(self.max_ms, value_ms)

    def quantile_ms(self, q: float) -> int | None:
        """The bucket bound at quantile q (an upper estimate), capped by the exact max."""
        if not self.count:
            return None
        rank, seen = q * self.count, 0
        for i, n in enumerate(self.buckets):
            seen += n
            if seen >= rank and n:
                return min(BUCKETS_MS[i] if i < len(BUCKETS_MS) else self.max_ms, self.max_ms)
        return self.max_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "buckets": self.buckets,
            "count": self.count,
            "total_ms": self.total_ms,
            "max_ms": self.max_ms,
        }


def new_stats() -> dict[str, Any]:
    stats: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    stats["lateness"] = Summary()
    stats["duration"] = Summary()
    return stats
