"""The ten invariants of TESTING.md as pure functions over a recorded `History`.

Each `check_*` reads only the history (no clock, no network) and returns a `Result`: the
violations found (each a dict naming what, where and why) and counters for the figures. The
history holds what really happened (ground-truth executions, the admin-op log with each
operation's invoke and completion times and outcome, the faults injected, the status samples)
next to what the cluster says (run records per node, digests). The checkers trust the cluster's
records only where an invariant is *about* them (a committed skip needs a reason; a result must
belong to an attempt that ran).

Times: `*_mono` are the machine's monotonic clock (shared by every process here, so ground truth
from different nodes compares directly); `*_wall_ms` are epoch ms; slots are epoch ms.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from .groundtruth import Execution

__all__ = [
    "CHECKERS",
    "History",
    "Op",
    "Result",
    "check_all",
    "enabled_windows",
    "paused_windows",
    "slots_in",
    "window_margin_ms",
]

ACTIVE = ("pending", "running")
ANY = float("inf")


@dataclass(slots=True)
class Op:
    """One admin operation as a client saw it."""

    id: int
    kind: str  # create | update | pause | resume | delete
    job: str
    node: str
    invoke_mono: float
    invoke_wall_ms: float
    complete_mono: float
    complete_wall_ms: float
    status: str  # ok | failed | indeterminate
    http: int | None = None
    code: str | None = None
    client: str = ""
    if_match: int | None = None
    spec: dict[str, Any] | None = None  # the body of a create / update
    result: dict[str, Any] | None = None  # the job as the answer returned it
    read_after: dict[str, Any] | None = None  # GET on the same node right after an ok write

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class History:
    executions: list[Execution] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # node -> run views, at the end
    snapshots: list[dict[str, Any]] = field(default_factory=list)  # run views read earlier (before a delete)
    digests: dict[str, str | None] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(
        default_factory=list
    )  # {mono, node, ok, role, term, scheduler_term}
    faults: list[dict[str, Any]] = field(default_factory=list)  # {kind, mono, wall_ms, node | nodes | sides}
    probes: list[dict[str, Any]] = field(default_factory=list)  # bad-input requests and what they did
    final_jobs: dict[str, dict[str, Any]] = field(default_factory=dict)  # job id -> the job at the end
    end_mono: float = 0.0  # when the records were collected
    end_wall_ms: float = 0.0
    records_wall_ms: float = 0.0  # when reading the records began (0: not known)
    lookahead_s: float = 2.0
    max_clock_offset_s: float = 0.0
    # tolerances
    ack_epsilon_s: float = 0.5  # a start this long after a pause/delete acknowledgement is a violation
    kill_epsilon_s: float = 3.0  # a delete kills a running task within this (SIGTERM, then the group)
    replace_epsilon_s: float = 1.5  # overlap allowed while `replace` kills the run it replaces
    leader_within_s: float = 10.0  # liveness: a leader this soon after a recovery
    stuck_after_s: float = 15.0  # a run still active this long after its execution ended is stuck
    catch_up_s: float = 0.5  # after a pause / cut ends, a node still catching up may start a cancelled run
    # A known bug tolerated where set (the CI tier): a run that had started before a pause was
    # acknowledged is started again, with a higher attempt, when its node dies (ReassignRuns).
    tolerate_rerun_after_pause: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in vars(self).items() if k not in ("executions", "ops")}
        d["executions"] = [e.to_dict() for e in self.executions]
        d["ops"] = [o.to_dict() for o in self.ops]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(
            **{
                **d,
                "executions": [Execution.from_dict(e) for e in d.get("executions", ())],
                "ops": [Op(**o) for o in d.get("ops", ())],
            }
        )


@dataclass
class Result:
    name: str
    violations: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, what: str, **details: Any) -> None:
        self.violations.append({"what": what, **details})


# ---------------------------------------------------------------- helpers


def _ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def slots_in(schedule: dict[str, Any], created_ms: int, low_ms: float, high_ms: float) -> list[int]:
    """The slots of `schedule` in (low_ms, high_ms], computed here (not by raftsched.triggers)."""
    if high_ms <= low_ms:
        return []
    if "every" in schedule:
        period = round(float(schedule["every"]) * 1000)
        start = _ms(schedule.get("start_at")) or created_ms
        k = max(1, int((low_ms - start) // period))
        out = []
        while (slot := start + k * period) <= high_ms:
            if slot > low_ms:
                out.append(slot)
            k += 1
        return out
    if "at" in schedule:
        at = _ms(schedule["at"])
        return [at] if at is not None and low_ms < at <= high_ms else []
    if "cron" in schedule:
        from croniter import croniter

        expr = schedule["cron"]
        seconds = len(expr.split()) == 6
        base = datetime.fromtimestamp(low_ms / 1000, tz=UTC)
        it = croniter(expr, base, second_at_beginning=seconds)
        out = []
        while True:
            slot = round(it.get_next(float) * 1000)
            if slot > high_ms:
                return out
            if slot > low_ms:
                out.append(slot)
    return []


def _records(history: History) -> dict[str, list[dict[str, Any]]]:
    """Every run record known, from any node or snapshot, by run id."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for items in history.records.values():
        for r in items:
            out[r["run_id"]].append(r)
    for r in history.snapshots:
        out[r["run_id"]].append(r)
    return out


def _ranges(history: History) -> dict[str, list[dict[str, Any]]]:
    """Skipped / missed records by job (a record may cover a range of slots)."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    seen = set()
    for recs in _records(history).values():
        for r in recs:
            if r["state"] in ("skipped", "missed") and (r["job_id"], r["run_id"]) not in seen:
                seen.add((r["job_id"], r["run_id"]))
                out[r["job_id"]].append(r)
    return out


def _deleted_jobs(history: History) -> set[str]:
    return {op.job for op in history.ops if op.kind == "delete" and op.status != "failed"}


def fault_windows(history: History) -> dict[str, list[tuple[float, float, str]]]:
    """Per node, the (start_mono, end_mono, kind) of each fault it suffered; '*' for all nodes."""
    out: dict[str, list[tuple[float, float, str]]] = defaultdict(list)
    open_: dict[tuple[str, str], float] = {}
    closing = {"resume": "pause", "start": "down"}
    for f in sorted(history.faults, key=lambda f: f["mono"]):
        kind, t = f["kind"], f["mono"]
        nodes = _fault_nodes(f)
        if kind in ("pause", "kill", "stop", "isolate", "partition", "split", "cut", "journal"):
            for n in nodes:
                open_.setdefault((n, "down" if kind in ("kill", "stop") else kind), t)
        elif kind in closing:
            for n in nodes:
                start = open_.pop((n, closing[kind]), None)
                if start is not None:
                    out[n].append((start, t, closing[kind]))
        elif kind == "heal":
            for (n, k), start in list(open_.items()):
                if k in ("isolate", "partition", "split", "cut"):
                    out[n].append((start, t, k))
                    del open_[(n, k)]
    for (n, k), start in open_.items():
        out[n].append((start, history.end_mono or ANY, k))
    return out


def _fault_nodes(f: dict[str, Any]) -> list[str]:
    if "node" in f:
        return [f["node"]]
    if "nodes" in f:
        return list(f["nodes"])
    if "side_a" in f:
        return list(f["side_a"]) + list(f["side_b"])
    return []


def _down_after(history: History, node: str, t: float) -> float:
    """When `node` was next killed or stopped after t (its tasks die with it), or infinity."""
    times = [f["mono"] for f in history.faults if f["kind"] in ("kill", "stop") and f.get("node") == node]
    later = [x for x in times if x >= t]
    return min(later) if later else ANY


def _job_specs(history: History) -> dict[str, dict[str, Any]]:
    """The newest spec each job was created or updated with (ok or maybe applied)."""
    specs: dict[str, dict[str, Any]] = {}
    for op in sorted(history.ops, key=lambda o: o.invoke_mono):
        if op.kind in ("create", "update") and op.spec is not None and op.status != "failed":
            specs[op.job] = op.spec
    return specs


def _task_sleep(spec: dict[str, Any] | None) -> float:
    """The sleep of a ground-truth task (argv: python [-S] .../gt_task.py DIR SLEEP [CODE])."""
    try:
        argv = [str(a) for a in spec["task"]["command"]]  # type: ignore[index]
        at = next(i for i, a in enumerate(argv) if a.endswith("gt_task.py"))
        return float(argv[at + 2])
    except (KeyError, IndexError, TypeError, ValueError, StopIteration):
        return 0.0


def end_bound(history: History, ex: Execution, sleep_s: float) -> float:
    """An execution's end, or, without an end line (SIGKILL), the latest it can have ended."""
    if ex.end_mono is not None:
        return ex.end_mono
    return min(ex.start_mono + sleep_s + 1.0, _down_after(history, ex.node, ex.start_mono))


def _faulted(windows: dict[str, list[tuple[float, float, str]]], node: str, lo: float, hi: float) -> bool:
    return any(s <= hi and e >= lo for s, e, _ in windows.get(node, ()))


def _leader_faulted(
    history: History, windows: dict[str, list[tuple[float, float, str]]], lo: float, hi: float
) -> bool:
    """Did a fault hit the node that was leading when it began, between lo and hi? Until a new
    leader tells them, the other nodes are cut off from the cluster too: entries the old leader
    committed but had not yet announced to them are unknown to them (DESIGN.md §3, fire-ahead)."""
    leaders = leader_times(history)
    for node, spans in windows.items():
        for start, end, _ in spans:
            if start > hi or end < lo:
                continue
            before = [n for m, n, _ in leaders if m <= start]
            if not before or before[-1] == node:
                return True
    return False


# ---------------------------------------------------------------- job timelines (invariants 1, 6)


@dataclass
class Window:
    job: str
    low_wall_ms: float
    high_wall_ms: float
    schedule: dict[str, Any]
    created_ms: int
    deleted_wall_ms: float | None  # a later delete removed the job's records (snapshots remain)
    opened_by: str


def _overlapping(op: Op, others: list[Op]) -> bool:
    return any(
        o is not op and o.invoke_mono < op.complete_mono and o.complete_mono > op.invoke_mono for o in others
    )


def window_margin_ms(history: History) -> float:
    """How far inside a window a slot must be to be judged: the harness's clock reads a boundary
    (an operation's invocation or acknowledgement), the cluster stamps it by a node's clock
    (up to the allowed offset away) and fires up to `lookahead_s` ahead of it; plus a commit."""
    return (history.lookahead_s + history.max_clock_offset_s) * 1000 + 100


def _timelines(history: History) -> dict[str, list[tuple[Op, dict[str, Any] | None]]]:
    """Per job, its operations that did not fail, by invocation, each with the job's known state
    after it (None: unknown; see `enabled_windows`)."""
    by_job: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        if op.status != "failed":
            by_job[op.job].append(op)
    out: dict[str, list[tuple[Op, dict[str, Any] | None]]] = {}
    for job, ops in by_job.items():
        ops.sort(key=lambda o: o.invoke_mono)
        known: dict[str, Any] | None = None  # {"schedule", "created_ms", "enabled"}
        out[job] = []
        for op in ops:
            clean = op.status == "ok" and not _overlapping(op, ops)
            known = _after(op, known) if clean else None
            out[job].append((op, known))
    return out


def enabled_windows(history: History) -> list[Window]:
    """Per job, the stretches of time in which it was certainly enabled with a known schedule.

    Operations that failed changed nothing and are left out. A stretch opens at an ok create /
    update / resume that overlapped no other operation on the job, while the state before it is
    known (a create needs nothing before it); it closes when the next operation is invoked (or
    at the end). An indeterminate or overlapping operation makes the state unknown until the
    next clean create or update. Both ends taken from the harness's clock are moved inwards by
    `window_margin_ms` (a create opens at the job's own `created_at`).
    """
    margin = window_margin_ms(history)
    out = []
    for job, timeline in _timelines(history).items():
        for i, (op, known) in enumerate(timeline):
            if known is None or not known["enabled"]:
                continue
            nxt = timeline[i + 1][0] if i + 1 < len(timeline) else None
            high = (nxt.invoke_wall_ms if nxt is not None else history.end_wall_ms) - margin
            low = known["created_ms"] if op.kind == "create" else op.complete_wall_ms + margin
            deleted = next((o.invoke_wall_ms for o, _ in timeline[i + 1 :] if o.kind == "delete"), None)
            out.append(Window(job, low, high, known["schedule"], known["created_ms"], deleted, op.kind))
    return out


def paused_windows(history: History) -> list[Window]:
    """Per job left paused at the end by a clean pause of a known schedule, its paused range: from
    the pause's acknowledgement to when the records were read (each end moved inwards by
    `window_margin_ms`). Every slot in it must be a record by then: the cluster shows a paused
    range up to its committed clock. Unknown when the history does not say when it read."""
    if not history.records_wall_ms:
        return []
    margin = window_margin_ms(history)
    out = []
    for job, timeline in _timelines(history).items():
        op, known = timeline[-1]
        if op.kind != "pause" or known is None or not (history.final_jobs.get(job) or {}).get("paused"):
            continue
        low, high = op.complete_wall_ms + margin, history.records_wall_ms - margin
        out.append(
            Window(job, low, high, known["schedule"], known["created_ms"], None, "pause (left paused)")
        )
    return out


def _after(op: Op, known: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job's state after a clean ok operation, given the state before (None: unknown)."""
    res = op.result or {}
    if op.kind == "create" or (op.kind == "update" and op.spec is not None):
        spec = op.spec or {}
        created = _ms(res.get("created_at"))
        if created is None:
            return None
        return {
            "schedule": spec.get("schedule", {}),
            "created_ms": created,
            "enabled": not spec.get("paused"),
        }
    if known is None:
        return None
    if op.kind == "pause":
        return {**known, "enabled": False}
    if op.kind == "resume":
        return {**known, "enabled": True}
    if op.kind == "delete":
        return None
    return known


# ---------------------------------------------------------------- 1. no lost fire


def check_no_lost_fire(history: History) -> Result:
    """Every slot of an enabled job ran, or has a committed skipped/missed record with a reason
    (or a record saying why it did not run: cancelled by a pause, an edit, a delete, `replace`);
    every slot of a job left paused at the end is a record (`paused_windows`)."""
    res = Result("1 no lost fire")
    executed = {(ex.job, ex.slot) for ex in history.executions if ex.slot is not None}
    records = _records(history)
    by_slot: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for recs in records.values():
        for r in recs:
            slot = _ms(r.get("scheduled_at"))
            if slot is not None and not r.get("manual"):
                by_slot[(r["job_id"], slot)].append(r)
    ranges = _ranges(history)
    due = unverifiable = 0
    judged = [(w, False) for w in enabled_windows(history)] + [(w, True) for w in paused_windows(history)]
    for w, paused in judged:
        slots = slots_in(w.schedule, w.created_ms, w.low_wall_ms, w.high_wall_ms)
        for slot in slots:
            if w.deleted_wall_ms is not None and slot > w.deleted_wall_ms - 10_000:
                continue  # the delete may have removed its record before it was due
            due += 1
            if not paused and (w.job, slot) in executed:
                continue  # a paused range's slots must be records: an execution is no record
            recs = by_slot.get((w.job, slot), [])
            covering = [
                r
                for r in ranges.get(w.job, ())
                if _ms(r["scheduled_at"]) <= slot <= (_ms(r.get("until")) or _ms(r["scheduled_at"]))
            ]
            why = recs + covering
            if any(
                r["state"] in ("skipped", "missed", "cancelled", "lost") and not r.get("reason") for r in why
            ):
                res.add("skipped/missed/cancelled record without a reason", job=w.job, slot=slot)
            if any(r["state"] not in ACTIVE for r in why) or any(r["state"] in ACTIVE for r in recs):
                continue
            if w.deleted_wall_ms is not None and not history.snapshots:
                unverifiable += 1
                continue
            later = [s for (j, s) in by_slot if j == w.job and s > slot] + [
                e.slot for e in history.executions if e.job == w.job and e.slot and e.slot > slot
            ]
            res.add(
                "a slot of the paused range is not a record" if paused else "slot neither run nor recorded",
                job=w.job,
                slot=slot,
                after=w.opened_by,
                window=[round(w.low_wall_ms), round(w.high_wall_ms)],
                hint="a later slot was fired: the job was planned past this one" if later else "",
            )
    res.counts = {"slots_due": due, "lost": len(res.violations), "unverifiable_deleted": unverifiable}
    return res


# ---------------------------------------------------------------- 2. no duplicate fire decision


def check_no_duplicate_fire(history: History) -> Result:
    """At most one committed fire per (job, slot) on every node; never a slot's first attempt
    executed on two nodes (two fire decisions); every node's records agree on a run's slot."""
    res = Result("2 no duplicate fire decision")
    dup_records = 0
    for node, items in history.records.items():
        seen: dict[tuple[str, int, int], str] = {}
        for r in items:
            slot = _ms(r.get("scheduled_at"))
            if r.get("manual") or slot is None or r["state"] in ("skipped", "missed"):
                continue
            key = (r["job_id"], slot, int(r.get("shard") or 0))
            if key in seen and seen[key] != r["run_id"]:
                dup_records += 1
                res.add(
                    "two runs for one slot", node=node, job=key[0], slot=slot, runs=[seen[key], r["run_id"]]
                )
            elif key in seen:
                dup_records += 1
                res.add("a run listed twice", node=node, run=r["run_id"])
            seen[key] = r["run_id"]
    first: dict[tuple[str, int | None, str], set[str]] = defaultdict(set)
    for ex in history.executions:
        if ex.attempt == 1 and ex.slot is not None:
            first[(ex.job, ex.slot, ex.run_id)].add(ex.node)
    for (job, slot, run), nodes in first.items():
        if len(nodes) > 1:
            res.add(
                "attempt 1 of a slot executed on two nodes", job=job, slot=slot, run=run, nodes=sorted(nodes)
            )
    for run_id, recs in _records(history).items():
        slots = {_ms(r.get("scheduled_at")) for r in recs}
        if len(slots) > 1:
            res.add("nodes disagree on a run's slot", run=run_id, slots=sorted(s for s in slots if s))
    res.counts = {"duplicate_decisions": len(res.violations), "duplicate_records": dup_records}
    return res


# ---------------------------------------------------------------- 3. duplicate executions


def check_duplicate_executions(history: History) -> Result:
    """Never two executions of one (run, attempt); none at all for at_most_once; for
    at_least_once a re-execution has a higher attempt that a committed record knows."""
    res = Result("3 duplicate executions as the delivery policy allows")
    specs = _job_specs(history)
    records = _records(history)
    deleted = _deleted_jobs(history)
    final = {r["run_id"] for items in history.records.values() for r in items}  # collected at the end
    unverifiable = 0
    by_run: dict[str, list[Execution]] = defaultdict(list)
    for ex in history.executions:
        by_run[ex.run_id].append(ex)
    extra = overlapped = 0
    for run_id, exs in by_run.items():
        exs.sort(key=lambda e: e.start_mono)
        attempts: dict[int, list[Execution]] = defaultdict(list)
        for ex in exs:
            attempts[ex.attempt].append(ex)
        for attempt, same in attempts.items():
            if len(same) > 1:
                res.add(
                    "one (run, attempt) executed twice",
                    run=run_id,
                    attempt=attempt,
                    nodes=[e.node for e in same],
                )
        if len(exs) < 2:
            continue
        extra += len(exs) - 1
        job = exs[0].job
        spec = specs.get(job, {})
        sleep = _task_sleep(spec)
        for a, b in zip(exs, exs[1:], strict=False):
            if b.start_mono < end_bound(history, a, sleep):
                overlapped += 1
        if spec.get("delivery") == "at_most_once":
            res.add(
                "an at_most_once run executed more than once",
                run=run_id,
                executions=[(e.node, e.attempt) for e in exs],
            )
            continue
        known = max((int(r.get("attempt") or 0) for r in records.get(run_id, ())), default=None)
        top = max(ex.attempt for ex in exs)
        if known is not None and top > known:
            if job in deleted and run_id not in final:
                # Only samples taken before the job was deleted know the run: the attempt may have
                # been committed after the last sample (seen: reassigned in a split, then deleted).
                unverifiable += 1
                continue
            res.add(
                "executed with an attempt no committed record knows", run=run_id, attempt=top, record=known
            )
    res.counts = {
        "duplicate_executions": extra,
        "duplicates_overlapping": overlapped,
        "unverifiable_deleted": unverifiable,
    }
    return res


# ---------------------------------------------------------------- 4. fencing


def check_fencing(history: History) -> Result:
    """No execution without a committed fire; no accepted result of an attempt that did not run
    on the node the record names (a stale attempt's result)."""
    res = Result("4 fencing")
    unverifiable = _unfired_executions(history, res)
    abandoned = _foreign_results(history, res)
    res.counts = {"unverifiable_deleted": unverifiable, "abandoned_results": abandoned}
    return res


def _unfired_executions(history: History, res: Result) -> int:
    records = _records(history)
    deleted = _deleted_jobs(history)
    unverifiable = 0
    for ex in history.executions:
        recs = records.get(ex.run_id)
        if not recs:
            if ex.job in deleted:
                unverifiable += 1
                continue
            res.add("executed without a committed fire", run=ex.run_id, attempt=ex.attempt, node=ex.node)
            continue
        if ex.slot is not None and all(_ms(r.get("scheduled_at")) != ex.slot for r in recs):
            res.add("executed a slot its run record does not have", run=ex.run_id, slot=ex.slot)
    return unverifiable


def _foreign_results(history: History, res: Result) -> int:
    seen = {(ex.run_id, ex.attempt, ex.node): ex for ex in history.executions}
    abandoned = 0
    for node, items in history.records.items():
        for r in items:
            if r["state"] not in ("succeeded", "failed", "timed_out") or r.get("attempt", 0) < 1:
                continue
            ex = seen.get((r["run_id"], r["attempt"], r["node"]))
            if ex is None:
                err = str(r.get("error") or "")
                if r["state"] == "failed" and ("in flight" in err or "restarted" in err or "refused" in err):
                    abandoned += 1
                    continue
                res.add(
                    "a result accepted for an attempt that did not run there",
                    node=node,
                    run=r["run_id"],
                    attempt=r["attempt"],
                    on=r["node"],
                    state=r["state"],
                )
                continue
            if ex.rc is not None and ex.source == "shell":
                if r["state"] == "succeeded" and ex.rc != 0:
                    res.add(
                        "succeeded, but the attempt exited non-zero", node=node, run=r["run_id"], rc=ex.rc
                    )
                if r["state"] == "failed" and ex.rc == 0 and r.get("exit_code") not in (None, 0):
                    res.add("the recorded exit code is not the attempt's", node=node, run=r["run_id"])
    return abandoned


# ---------------------------------------------------------------- 5. overlap


def check_overlap(history: History) -> Result:
    """forbid / queue: no two runs of a job execute at once; replace: only while the replaced one
    is being killed. Counted apart: a superseded attempt (a higher one exists) still running (the
    delivery policy's duplicate), and a run whose node was paused or cut off while the next one
    started, or whose replacement the leader committed just before it failed (its worker could not
    learn that it was replaced until a new leader told it: the fire-ahead price of §3)."""
    res = Result("5 overlap policy")
    specs = _job_specs(history)
    attempt_top: dict[str, int] = defaultdict(int)
    for ex in history.executions:
        attempt_top[ex.run_id] = max(attempt_top[ex.run_id], ex.attempt)
    for recs in _records(history).values():
        for r in recs:
            attempt_top[r["run_id"]] = max(attempt_top[r["run_id"]], int(r.get("attempt") or 0))
    by_job: dict[str, list[Execution]] = defaultdict(list)
    for ex in history.executions:
        if ex.slot is not None:
            by_job[ex.job].append(ex)
    counts = {"overlap_superseded": 0, "replace_kill_overlaps": 0, "overlap_cut_off": 0}
    for job, exs in by_job.items():
        policy = specs.get(job, {}).get("overlap", "forbid")
        if policy != "allow":
            exs.sort(key=lambda e: e.start_mono)
            _job_overlaps(history, res, job, policy, exs, _task_sleep(specs.get(job)), attempt_top, counts)
    res.counts = counts
    return res


def _job_overlaps(
    history: History,
    res: Result,
    job: str,
    policy: str,
    exs: list[Execution],
    sleep: float,
    attempt_top: dict[str, int],
    counts: dict[str, int],
) -> None:
    windows = {n: [w for w in ws if w[2] != "down"] for n, ws in fault_windows(history).items()}
    for i, a in enumerate(exs):
        a_end = end_bound(history, a, sleep)
        for b in exs[i + 1 :]:
            if b.start_mono >= a_end:
                break
            if b.run_id == a.run_id:
                continue  # two attempts of one run: invariant 3
            if a.attempt < attempt_top[a.run_id] or b.attempt < attempt_top[b.run_id]:
                counts["overlap_superseded"] += 1
                continue
            if _faulted(windows, a.node, b.start_mono, a_end):
                counts["overlap_cut_off"] += 1  # its node was paused or cut off: it could not kill it
                continue
            killed = a.end_mono is None or a.signal is not None
            if (
                policy == "replace"
                and a_end - b.start_mono <= history.lookahead_s + history.replace_epsilon_s
                and _leader_faulted(
                    history,
                    windows,
                    b.start_mono - history.ack_epsilon_s,
                    b.start_mono + history.ack_epsilon_s,
                )
            ):
                counts["overlap_cut_off"] += 1  # the leader failed before telling a's node it was replaced
                continue
            if policy == "replace" and killed and a_end - b.start_mono <= history.replace_epsilon_s:
                counts["replace_kill_overlaps"] += 1
                continue
            res.add(
                f"overlap under {policy}",
                job=job,
                first=(a.run_id, a.attempt, a.node),
                second=(b.run_id, b.attempt, b.node),
                overlap_s=round(a_end - b.start_mono, 3),
            )


# ---------------------------------------------------------------- 6. deleted or paused jobs


def check_no_run_after_stop(history: History) -> Result:
    """No start of a deleted or paused job later than the acknowledgement plus epsilon (until it is
    resumed or created again); a delete kills what runs. A worker cut off from the cluster may
    start what it was given up to `lookahead_s` ahead: counted apart."""
    res = Result("6 no run after pause/delete")
    windows = fault_windows(history)
    by_job: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        by_job[op.job].append(op)
    exs_by_job: dict[str, list[Execution]] = defaultdict(list)
    for ex in history.executions:
        exs_by_job[ex.job].append(ex)
    specs = _job_specs(history)
    cut_off = reruns = 0
    eps = history.ack_epsilon_s
    for job, ops in by_job.items():
        ops.sort(key=lambda o: o.invoke_mono)
        for i, op in enumerate(ops):
            if op.status != "ok" or op.kind not in ("pause", "delete"):
                continue
            if any(
                o.status != "failed" and o.invoke_mono < op.complete_mono and o.complete_mono > op.invoke_mono
                for o in ops
                if o is not op and o.kind in ("resume", "create", "update")
            ):
                continue  # a concurrent write may have re-enabled it
            enabling = [
                o for o in ops[i + 1 :] if o.kind in ("resume", "create", "update") and o.status != "failed"
            ]
            until = enabling[0].invoke_mono if enabling else ANY
            ack = op.complete_mono
            for ex in exs_by_job.get(job, ()):
                if ack + eps < ex.start_mono < until:
                    excuse = _start_excuse(history, windows, ex, exs_by_job[job], ack)
                    if excuse:
                        cut_off += excuse == "cut_off"
                        reruns += excuse == "rerun"
                        continue
                    res.add(
                        f"started after the {op.kind} was acknowledged",
                        job=job,
                        run=ex.run_id,
                        node=ex.node,
                        after_s=round(ex.start_mono - ack, 3),
                    )
                if op.kind == "delete" and ex.start_mono <= ack:
                    end = end_bound(history, ex, _task_sleep(specs.get(job)))
                    if end > ack + history.kill_epsilon_s and not _faulted(windows, ex.node, ack, end):
                        res.add(
                            "still running after the delete was acknowledged",
                            job=job,
                            run=ex.run_id,
                            node=ex.node,
                            ran_on_s=round(end - ack, 3),
                        )
    cut_off += _started_after_cancel(history, res, windows)
    res.counts = {"cut_off_starts": cut_off, "reruns_after_pause_tolerated": reruns}
    return res


def _start_excuse(
    history: History,
    windows: dict[str, list[tuple[float, float, str]]],
    ex: Execution,
    exs: list[Execution],
    ack: float,
) -> str | None:
    """Why a start after a stop was acknowledged is no violation: "cut_off" (its worker, or the
    leader, was cut off within a lookahead: it could not know), "rerun" (a later attempt of a run
    that started by the acknowledgement, where `tolerate_rerun_after_pause`), or None."""
    eps, ahead = history.ack_epsilon_s, history.lookahead_s + history.ack_epsilon_s
    if ex.start_mono <= ack + ahead and (
        _faulted(windows, ex.node, ack - ahead, ex.start_mono)
        or _leader_faulted(history, windows, ack - eps, ex.start_mono)
    ):
        return "cut_off"
    if history.tolerate_rerun_after_pause and any(
        e.run_id == ex.run_id and e.attempt < ex.attempt and e.start_mono <= ack for e in exs
    ):
        return "rerun"
    return None


def _started_after_cancel(
    history: History, res: Result, windows: dict[str, list[tuple[float, float, str]]]
) -> int:
    """A run the log cancelled (paused, edited, replaced, cancelled) never starts later, unless
    its node was cut off or paused then, or the leader that committed the cancel failed before
    telling it (within a lookahead: it could not know)."""
    wall_minus_mono = history.end_wall_ms / 1000 - history.end_mono
    cancelled = {}
    for recs in _records(history).values():
        for r in recs:
            if r["state"] == "cancelled" and r.get("finished_at"):
                cancelled[(r["run_id"], r.get("attempt"))] = _ms(r["finished_at"])
    excused = 0
    slack_ms = (history.ack_epsilon_s + history.max_clock_offset_s) * 1000
    ops_by_job: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        ops_by_job[op.job].append(op)
    for ex in history.executions:
        at = cancelled.get((ex.run_id, ex.attempt))
        if at is None or ex.start_wall_ms <= at + slack_ms:
            continue
        cancel_mono = _cancel_committed(
            ops_by_job[ex.job], at / 1000 - wall_minus_mono, history.ack_epsilon_s, history.max_clock_offset_s
        )
        if cancel_mono is None or ex.start_mono <= cancel_mono + history.ack_epsilon_s:
            continue
        ahead = history.lookahead_s + history.ack_epsilon_s
        if _faulted(windows, ex.node, ex.start_mono - history.catch_up_s, ex.start_mono) or (
            ex.start_mono <= cancel_mono + ahead
            and _leader_faulted(history, windows, cancel_mono - history.ack_epsilon_s, ex.start_mono)
        ):
            excused += 1
            continue
        res.add(
            "started after the log had cancelled it",
            run=ex.run_id,
            attempt=ex.attempt,
            node=ex.node,
            after_s=round(ex.start_mono - cancel_mono, 3),
        )
    return excused


def _cancel_committed(ops: list[Op], stamped: float, eps: float, offset_s: float = 0.0) -> float | None:
    """When a cancel committed, at the latest. Its record carries the proposer's clock, which may
    be `offset_s` off the harness's either way: the admin writes it may belong to are matched, and
    its time is taken, with that much slack. An admin write's time is read when the request
    arrives, and its commit may wait for a leader for seconds: then the acknowledgement bounds it
    (None when the write's outcome is unknown)."""
    slack = eps + offset_s
    during = [
        o for o in ops if o.invoke_mono - slack <= stamped <= o.complete_mono + slack and o.status != "failed"
    ]
    if any(o.status != "ok" for o in during):
        return None
    return max([stamped + offset_s, *(o.complete_mono for o in during)])


# ---------------------------------------------------------------- 7. acknowledged writes


def check_acknowledged_writes(history: History) -> Result:
    """No acknowledged job write is lost; job writes are linearizable (`_check_linearizable`:
    per-job versions behave as compare-and-set, a 2xx means applied); a read on the node that
    acknowledged a write sees it."""
    res = Result("7 no lost acknowledged write")
    by_job: dict[str, list[Op]] = defaultdict(list)
    for op in history.ops:
        by_job[op.job].append(op)
    lost = shown = 0
    for job, ops in by_job.items():
        ops.sort(key=lambda o: o.invoke_mono)
        for op in ops:
            racing = any(
                o is not op
                and o.status != "failed"
                and o.invoke_mono < op.complete_mono + 1.0
                and o.complete_mono > op.invoke_mono
                for o in ops
            )  # another client's write may come between the write and the read
            if op.status == "ok" and op.read_after is not None and op.result is not None and not racing:
                want, got = op.result.get("version", 0), op.read_after.get("version")
                if op.kind != "delete" and (got is None or got < want):
                    res.add(
                        "a read right after an acknowledged write did not see it",
                        job=job,
                        op=op.id,
                        version=want,
                        read=got,
                    )
        final = history.final_jobs.get(job)
        lost += len(_check_linearizable(res, job, ops, final) | _check_final(res, job, ops, final))
        shown += len(_observations(ops, final))
    counts: dict[str, int] = defaultdict(int)
    for op in history.ops:
        counts[op.status] += 1
    res.counts = {"lost_writes": lost, "admin_ops": dict(counts), "states_checked": shown}
    return res


@dataclass(frozen=True, slots=True)
class _Seen:
    """One observation of a job: the state at (incarnation, version), answered between `lo` and
    `hi` (monotonic). Invariant: that state holds every write acknowledged before `lo`."""

    inc: int
    version: int
    description: str
    lo: float
    hi: float
    source: str


@dataclass(frozen=True, slots=True)
class _Step:
    """A write that made version `version` of incarnation `inc` (None: unknown): a conditional
    update made its If-Match + 1 (the state applies it only at that version), a create made 1."""

    inc: int | None
    version: int
    description: str
    op: Op


def _observations(ops: list[Op], final: dict[str, Any] | None) -> list[_Seen]:
    """Every state of the job the history shows: the answer of each ok write (read after it
    applied, before it was answered), the read right after it (on the node that applied it: it
    holds every write acknowledged before this one began), and the job at the end (a consistent
    read after every write)."""
    out = []
    for op in ops:
        if op.status != "ok":
            continue
        if _is_view(op.result):
            out.append(_seen(op.result, op.invoke_mono, op.complete_mono, f"answer to op {op.id}"))
        if _is_view(op.read_after):
            out.append(_seen(op.read_after, op.invoke_mono, ANY, f"read after op {op.id}"))
    if _is_view(final):
        out.append(_seen(final, ANY, ANY, "the job at the end"))
    return out


def _is_view(view: dict[str, Any] | None) -> bool:
    """A job as the API shows it (a delete's answer, or a failed read's, is not one)."""
    return view is not None and all(isinstance(view.get(k), int) for k in ("version", "incarnation"))


def _seen(view: dict[str, Any], lo: float, hi: float, source: str) -> _Seen:
    return _Seen(view["incarnation"], view["version"], view.get("description") or "", lo, hi, source)


def _write_steps(ops: list[Op]) -> tuple[list[_Step], list[_Step]] | None:
    """(acknowledged, possible) steps of a job; None when a write cannot be placed in the version
    order (an update without If-Match). A write racing a create or delete of the job may have
    applied to another incarnation than its answer shows: only possible, at an unknown one."""
    acked: list[_Step] = []
    possible: list[_Step] = []
    lifecycle = [o for o in ops if o.kind in ("create", "delete") and o.status != "failed"]
    for op in ops:
        if op.status == "failed" or op.kind not in ("create", "update"):
            continue
        if op.kind == "update" and op.if_match is None:
            return None
        version = 1 if op.kind == "create" else (op.if_match or 0) + 1
        description = str((op.spec or {}).get("description") or "")
        certain = op.status == "ok" and _is_view(op.result) and not _overlapping(op, lifecycle)
        inc = op.result["incarnation"] if certain and op.result else None
        (acked if certain else possible).append(_Step(inc, version, description, op))
    return acked, possible


def _check_linearizable(res: Result, job: str, ops: list[Op], final: dict[str, Any] | None) -> set[int]:
    """Job writes are linearizable: two conditional updates never succeed from one version; no
    conditional update succeeds from a version older than one already shown; no state shown
    after another is older; every state shows the last acknowledged write at or below its
    version, or a write that may have applied after it (indeterminate: it may or may not have).
    Returns the ids of the acknowledged writes found lost."""
    seen = _observations(ops, final)
    lost = _went_back(res, job, seen, ops)
    steps = _write_steps(ops)
    if steps is None:
        return lost
    acked, possible = steps
    lost |= _double_cas(res, job, acked) | _stale_cas(res, job, acked, seen)
    for s in seen:
        lost |= _unexplained(res, job, s, acked, possible)
    return lost


def _double_cas(res: Result, job: str, acked: list[_Step]) -> set[int]:
    made: dict[tuple[int | None, int], _Step] = {}
    lost = set()
    for step in sorted(acked, key=lambda s: s.op.invoke_mono):
        key = (step.inc, step.version)
        if key in made and step.op.kind == made[key].op.kind == "update":
            lost.add(step.op.id)
            res.add(
                "two conditional updates succeeded from one version",
                job=job,
                version=step.version - 1,
                ops=[made[key].op.id, step.op.id],
            )
        made.setdefault(key, step)
    return lost


def _stale_cas(res: Result, job: str, acked: list[_Step], seen: list[_Seen]) -> set[int]:
    """A conditional update that began after a state of version v had been shown cannot have
    applied at v or below."""
    lost = set()
    for step in acked:
        before = [s for s in seen if s.inc == step.inc and s.hi < step.op.invoke_mono]
        newest = max(before, key=lambda s: s.version, default=None)
        if newest is not None and step.version <= newest.version:
            lost.add(step.op.id)
            res.add(
                "a conditional update succeeded from a version older than one already shown",
                job=job,
                op=step.op.id,
                if_match=step.version - 1,
                shown=newest.version,
                by=newest.source,
            )
    return lost


def _went_back(res: Result, job: str, seen: list[_Seen], ops: list[Op]) -> set[int]:
    """A state shown after another was answered is never older (incarnations only grow)."""
    lost = set()
    by_id = {f"answer to op {o.id}": o for o in ops}
    answered = sorted(seen, key=lambda s: s.hi)
    for later in seen:
        earlier = [a for a in answered if a.hi < later.lo]
        newest = max(earlier, key=lambda a: (a.inc, a.version), default=None)
        if newest is not None and (later.inc, later.version) < (newest.inc, newest.version):
            if newest.source in by_id:
                lost.add(by_id[newest.source].id)
            res.add(
                "a state shown after another is older: an acknowledged write went back",
                job=job,
                shown=[newest.inc, newest.version],
                by=newest.source,
                then=[later.inc, later.version],
                later=later.source,
            )
    return lost


def _unexplained(res: Result, job: str, seen: _Seen, acked: list[_Step], possible: list[_Step]) -> set[int]:
    """The state shown must hold the description of the last acknowledged create or update at or
    below its version, or of a write that may have applied between them at a version no
    acknowledged write made."""
    mine = [s for s in acked if s.inc == seen.inc]
    last = max((s for s in mine if s.version <= seen.version), key=lambda s: s.version, default=None)
    floor = last.version if last is not None else 0
    if last is not None and last.description == seen.description:
        return set()
    claimed = {s.version for s in mine}
    if any(
        p.inc in (None, seen.inc)
        and floor < p.version <= seen.version
        and p.version not in claimed
        and p.description == seen.description
        for p in possible
    ):
        return set()
    if last is None:
        res.add(
            "a state shows a description that no create or update made",
            job=job,
            version=[seen.inc, seen.version],
            description=seen.description,
            by=seen.source,
        )
        return set()
    res.add(
        f"an acknowledged {last.op.kind} is lost: a later state shows neither it nor a write after it",
        job=job,
        op=last.op.id,
        made=[last.inc, last.version],
        shown=[seen.inc, seen.version],
        description=seen.description,
        expected=last.description,
        by=seen.source,
    )
    return {last.op.id}


def _last_clean(ops: list[Op], kinds: tuple[str, ...]) -> Op | None:
    """The last non-failed op of these kinds, if it was ok and overlapped no other such op."""
    maybe = [o for o in ops if o.kind in kinds and o.status != "failed"]
    if not maybe:
        return None
    last = max(maybe, key=lambda o: o.invoke_mono)
    if last.status != "ok" or _overlapping(last, maybe):
        return None
    return last


def _check_final(res: Result, job: str, ops: list[Op], have: dict[str, Any] | None) -> set[int]:
    """The job at the end against the last acknowledged writes; returns the ids of those lost (a
    version that went back is `_went_back`'s)."""
    lost = set()
    last = _last_clean(ops, ("create", "update", "delete"))
    if last is not None and (last.kind == "delete") == (have is not None):
        lost.add(last.id)
        what = "an acknowledged delete is undone" if have else f"an acknowledged {last.kind} is lost: no job"
        res.add(what, job=job, op=last.id)
    if have is None:
        return lost
    if last is not None and last.kind != "delete" and last.spec is not None:
        if have.get("description", "") != last.spec.get("description", ""):
            lost.add(last.id)
            res.add(f"the job is not what the last acknowledged {last.kind} wrote", job=job, op=last.id)
    last = _last_clean(ops, ("pause", "resume", "create", "update", "delete"))
    if (
        last is not None
        and last.kind in ("pause", "resume")
        and bool(have.get("paused")) != (last.kind == "pause")
    ):
        lost.add(last.id)
        res.add(f"an acknowledged {last.kind} is undone", job=job, op=last.id)
    return lost


# ---------------------------------------------------------------- 8. convergence


def check_convergence(history: History) -> Result:
    """After healing, every node reports the same state digest and the same run records."""
    res = Result("8 convergence")
    values = set(history.digests.values())
    if not history.digests or None in values or len(values) != 1:
        res.add("digests differ", digests=dict(history.digests))
    # A paused job's records grow while the nodes are read one after the other (the leader keeps
    # recording its range up to the committed clock): invariant 1 judges those; here, the rest.
    paused = {job_id for job_id, job in history.final_jobs.items() if job.get("paused")}
    views = {
        node: sorted(
            (r["run_id"], r["state"], r.get("attempt"), r.get("node"))
            for r in items
            if not (r.get("job_id") in paused and r["state"] in ("skipped", "missed"))
        )
        for node, items in history.records.items()
    }
    if len({tuple(v) for v in views.values()}) > 1:
        base_node, base = next(iter(views.items()))
        for node, v in views.items():
            if v != base:
                diff = sorted(set(v) ^ set(base))[:5]
                res.add("run records differ", nodes=[base_node, node], sample=diff)
    return res


# ---------------------------------------------------------------- 9. liveness


RECOVERIES = ("heal", "resume", "start")


def leader_times(history: History) -> list[tuple[float, str, int]]:
    """(mono, node, term) of each sample where a node led and had begun its term as scheduler."""
    return sorted(
        (s["mono"], s["node"], s["term"])
        for s in history.samples
        if s.get("ok") and s.get("role") == "leader" and s.get("scheduler_term") == s.get("term")
    )


def check_liveness(history: History) -> Result:
    """A leader within `leader_within_s` of every recovery; no run stuck active past its timeout
    plus grace, or long after its execution ended."""
    res = Result("9 liveness")
    leaders = leader_times(history)
    recoveries = [f for f in history.faults if f["kind"] in RECOVERIES]
    worst = 0.0
    for f in recoveries:
        t = f["mono"]
        later = [m for m, _, _ in leaders if m >= t]
        if history.end_mono and t + history.leader_within_s > history.end_mono:
            continue
        wait = (later[0] - t) if later else ANY
        worst = max(worst, wait)
        if wait > history.leader_within_s:
            res.add("no leader after a recovery", fault=f["kind"], at=t, waited_s=wait)
    ended = {(ex.run_id, ex.attempt): ex.end_mono for ex in history.executions if ex.end_mono is not None}
    specs = _job_specs(history)
    for node, items in history.records.items():
        for r in items:
            if r["state"] not in ACTIVE:
                continue
            end = ended.get((r["run_id"], r.get("attempt")))
            if end is not None and history.end_mono - end > history.stuck_after_s:
                res.add(
                    "active in the log long after its execution ended",
                    node=node,
                    run=r["run_id"],
                    state=r["state"],
                    ended_s_ago=round(history.end_mono - end, 1),
                )
            timeout = specs.get(r["job_id"], {}).get("timeout")
            started = _ms(r.get("started_at"))
            # `started_at` is the worker's clock: up to the allowed offset off the harness's
            if (
                timeout
                and started
                and history.end_wall_ms - started
                > (timeout + history.stuck_after_s + history.max_clock_offset_s) * 1000
            ):
                res.add("running past its timeout plus grace", node=node, run=r["run_id"])
    res.counts = {"worst_leader_wait_s": round(worst, 3) if worst != ANY else None}
    return res


# ---------------------------------------------------------------- 10. bad input


def check_bad_input(history: History) -> Result:
    """Every malformed request got a 4xx naming the field, changed nothing, crashed nothing."""
    res = Result("10 bad input")
    n = 0
    for p in history.probes:
        if p.get("kind") != "bad_input":
            continue
        n += 1
        status = p.get("status")
        if not isinstance(status, int) or not 400 <= status < 500:
            res.add("not a 4xx", probe=p.get("name"), status=status)
        if p.get("expect_field") is not None and p.get("field") != p["expect_field"]:
            res.add(
                "the error does not name the field",
                probe=p.get("name"),
                field=p.get("field"),
                expected=p["expect_field"],
            )
        if p.get("changed"):
            res.add("the state changed", probe=p.get("name"))
        if not p.get("alive", True):
            res.add("the node died", probe=p.get("name"))
    res.counts = {"probes": n}
    return res


CHECKERS: tuple[Callable[[History], Result], ...] = (
    check_no_lost_fire,
    check_no_duplicate_fire,
    check_duplicate_executions,
    check_fencing,
    check_overlap,
    check_no_run_after_stop,
    check_acknowledged_writes,
    check_convergence,
    check_liveness,
    check_bad_input,
)


def check_all(history: History, only: Iterable[str] | None = None) -> list[Result]:
    wanted = set(only) if only is not None else None
    return [c(history) for c in CHECKERS if wanted is None or c.__name__ in wanted]
