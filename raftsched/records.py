"""Records the replicated state keeps: jobs, runs, nodes, statistics.

Frozen, so that a reader holding one never sees it change under it; the state replaces
records (`evolve`, a cheap `dataclasses.replace`) instead of mutating them. Each has
`to_dict`/`from_dict` for the orjson snapshot (nothing of ours is pickled).
"""

from __future__ import annotations

import copy
import dataclasses
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, TypeVar

from .errors import RaftschedError
from .model import JobSpec, Misfire, Retries, Route, RunState, spec_from_snapshot

__all__ = [
    "BUCKETS_MS",
    "NO_RUNS",
    "ZERO_STATS",
    "UNKNOWN_POLICY",
    "JobRecord",
    "NodePolicy",
    "NodeRecord",
    "ReadOnlyDict",
    "Run",
    "Summary",
    "evolve",
    "new_stats",
    "shared_parts",
    "stats_from_dict",
    "stats_to_dict",
]

R = TypeVar("R")

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
        d = _fields_dict(self)
        d["spec"] = self.spec.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobRecord:
        try:
            spec = spec_from_snapshot(d["spec"])
        except (KeyError, TypeError, ValueError, RaftschedError):
            spec = JobSpec.from_dict(d["spec"])  # not as `to_dict` writes it: the strict parser decides
        return cls(**{**d, "spec": shared_parts(spec)})


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
    env: dict[str, Any] | None = None  # wire form: strings or {"secret": NAME} (model.values_to_wire)
    kwargs: dict[str, Any] | None = None
    waiting: bool = False  # overlap `queue`: waits for the active run to end
    claimed: bool = False  # at_most_once: claimed in the log before starting
    until_ms: int | None = None  # skipped/missed records may cover a range of slots
    count: int = 1
    output_truncated: bool = False  # the node that ran `attempt` kept less than its whole output

    def to_dict(self) -> dict[str, Any]:
        out = _fields_dict(self)
        # Only when true: snapshots of runs whose output was kept whole keep their bytes (and
        # older code can still read them).
        if not self.output_truncated:
            del out["output_truncated"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Run:
        return cls(**{**d, "state": RunState(d["state"])})


def _names(value: object) -> tuple[str, ...] | None:
    """A published list of strings, sorted; None (unknown) for anything else."""
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(sorted(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class NodePolicy:
    """What a node publishes about the tasks it will run (its REGISTER_NODE `policy`), for the
    API's refusal of jobs no live node may run (`eligibility`).

    Invariant: None means "unknown: accept" for every field; a record from an old log, or from
    a node that does not publish a field, refuses nothing because of it. `command_allow`: the
    directories as configured and, on that node, through `realpath`; empty: any program.
    `http_allow`: networks as strings. `secrets`: the NAMES of the secrets the node has, never
    values. `brokers`: the names of the `[broker]` sections the node has. `run_tasks` false: the
    node runs no task at all.
    """

    run_tasks: bool = True
    allow_shell: bool | None = None
    command_allow: tuple[str, ...] | None = None
    python_allow: tuple[str, ...] | None = None
    http_allow: tuple[str, ...] | None = None
    secrets: tuple[str, ...] | None = None
    brokers: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The wire and snapshot form: unknown fields left out."""
        known = {k: v for k, v in _fields_dict(self).items() if v is not None}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in known.items()}

    @classmethod
    def from_dict(cls, raw: object) -> NodePolicy:
        """Tolerant (the state applies it and never raises): a malformed field is unknown."""
        if not isinstance(raw, dict):
            return UNKNOWN_POLICY
        shell, run_tasks = raw.get("allow_shell"), raw.get("run_tasks")
        return cls(
            run_tasks=run_tasks if isinstance(run_tasks, bool) else True,
            allow_shell=shell if isinstance(shell, bool) else None,
            command_allow=_names(raw.get("command_allow")),
            python_allow=_names(raw.get("python_allow")),
            http_allow=_names(raw.get("http_allow")),
            secrets=_names(raw.get("secrets")),
            brokers=_names(raw.get("brokers")),
        )


UNKNOWN_POLICY = NodePolicy()


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
    policy: NodePolicy = UNKNOWN_POLICY  # as the node published it; unknown until it does
    down_reason: str | None = None  # why the leader committed it down (None while up)

    def to_dict(self) -> dict[str, Any]:
        out = _fields_dict(self)
        # Unmeasured clocks, unknown policies and a down without a reason stay out of snapshots:
        # those of a cluster without them keep their bytes (and older code can still read them).
        if self.clock_offset_ms is None and self.clock_ok:
            del out["clock_offset_ms"], out["clock_ok"]
        if self.policy == UNKNOWN_POLICY:
            del out["policy"]
        else:
            out["policy"] = self.policy.to_dict()
        if self.down_reason is None:
            del out["down_reason"]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NodeRecord:
        if "policy" not in d:
            return cls(**d)
        return cls(**{**d, "policy": NodePolicy.from_dict(d["policy"])})


@dataclass(slots=True)
class Summary:
    """A latency histogram with fixed buckets: deterministic, mergeable, cheap."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_MS) + 1))
    count: int = 0
    total_ms: int = 0
    max_ms: int = 0

    def add(self, value_ms: int) -> None:
        if value_ms < 0:
            value_ms = 0
        self.buckets[bisect_left(BUCKETS_MS, value_ms)] += 1  # the first bound >= value_ms
        self.count += 1
        self.total_ms += value_ms
        if value_ms > self.max_ms:
            self.max_ms = value_ms

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
    """Counters and summaries of one job (or of the cluster), all zero, to be changed in place."""
    stats: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    stats["lateness"] = Summary()
    stats["duration"] = Summary()
    return stats


def stats_to_dict(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: v.to_dict() if isinstance(v, Summary) else v for k, v in stats.items()}


def stats_from_dict(raw: dict[str, Any]) -> dict[str, Any]:
    """The stats a snapshot holds; all-zero ones are the shared `ZERO_STATS`."""
    if raw == _ZERO_DICT:
        return ZERO_STATS
    out = new_stats()
    for key, value in raw.items():
        out[key] = Summary(**value) if isinstance(value, dict) else value
    return out


# ---------------------------------------------------------------- shared parts
#
# Most jobs have the same empty maps, default policies and (until they run) all-zero statistics.
# One instance of each serves them all; it refuses to change, so a writer that forgets to replace
# it first fails (deterministically) instead of changing every job at once.


class ReadOnlyDict(dict[str, Any]):
    """A dict that refuses every change (reads, equality and serialization are a dict's)."""

    __slots__ = ()

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("a shared read-only dict: replace it instead of changing it")

    __setitem__ = __delitem__ = __ior__ = _refuse
    setdefault = update = pop = popitem = clear = _refuse

    def __reduce__(self) -> tuple[type[ReadOnlyDict], tuple[dict[str, Any]]]:
        return (type(self), (dict(self),))  # pickle: built whole, not item by item

    def __copy__(self) -> dict[str, Any]:
        return dict(self)  # a copy is for changing

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)


class _ReadOnlySummary(Summary):
    __slots__ = ()

    def add(self, value_ms: int) -> None:
        raise TypeError("the shared zero summary: replace the stats instead of changing them")


EMPTY = ReadOnlyDict()
NO_RUNS = ReadOnlyDict()  # the run ids of a job that has none: `job_runs` and `job_active` values
ZERO_STATS = ReadOnlyDict(new_stats(), lateness=_ReadOnlySummary(), duration=_ReadOnlySummary())
_ZERO_DICT = stats_to_dict(ZERO_STATS)
_RETRIES, _MISFIRE, _ROUTE = Retries(), Misfire(), Route(tags=EMPTY)


def shared_parts(spec: JobSpec) -> JobSpec:
    """`spec` (an equal one) whose default policies and empty maps are the shared instances."""
    changes: dict[str, Any] = {}
    if spec.retries is not _RETRIES and spec.retries == _RETRIES:
        changes["retries"] = _RETRIES
    if spec.misfire is not _MISFIRE and spec.misfire == _MISFIRE:
        changes["misfire"] = _MISFIRE
    route = spec.route
    if not route.tags and route.tags is not EMPTY:
        changes["route"] = _ROUTE if route == _ROUTE else evolve(route, tags=EMPTY)
    if not spec.labels and spec.labels is not EMPTY:
        changes["labels"] = EMPTY
    task = spec.task
    maps = (("env", task.env), ("headers", task.headers), ("kwargs", task.kwargs))
    empty = {name: EMPTY for name, m in maps if not m and m is not EMPTY}
    if empty:
        changes["task"] = evolve(task, **empty)
    return evolve(spec, **changes) if changes else spec


# ---------------------------------------------------------------- copies


def evolve(record: R, **changes: Any) -> R:
    """`dataclasses.replace(record, **changes)` for the frozen, slotted records, at a third of the
    cost: the copy takes every field from `record` (nothing to default, no `__init__` to run) and
    then the changed ones. An unknown field name raises TypeError, as `replace` does."""
    setters = _SETTERS.get(type(record)) or _setters(type(record))
    new = setters[""](record)
    for name, value in changes.items():
        try:
            setter = setters[name]
        except KeyError:
            raise TypeError(f"{type(record).__name__} has no field {name!r}") from None
        setter(new, value)
    return new  # type: ignore[no-any-return]


_SETTERS: dict[type, dict[str, Callable[..., Any]]] = {}


def _setters(cls: type) -> dict[str, Callable[..., Any]]:
    """Per field, the slot's own setter (it bypasses the frozen `__setattr__`, as the generated
    `__init__` does); under "", a function that copies every field into a new instance."""
    names = [f.name for f in dataclasses.fields(cls)]
    setters: dict[str, Callable[..., Any]] = {name: cls.__dict__[name].__set__ for name in names}
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls, **{f"_set_{n}": setters[n] for n in names}}
    body = "".join(f"    _set_{n}(new, record.{n})\n" for n in names)
    exec(f"def copy(record):\n    new = _new(_cls)\n{body}    return new\n", scope)  # noqa: S102
    setters[""] = scope["copy"]
    _SETTERS[cls] = setters
    return setters


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _fields_dict(record: Any) -> dict[str, Any]:
    names = _FIELD_NAMES.get(type(record))
    if names is None:
        names = _FIELD_NAMES[type(record)] = tuple(f.name for f in dataclasses.fields(record))
    return {name: getattr(record, name) for name in names}
