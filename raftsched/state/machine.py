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

The data and its bookkeeping are in `data`; the commands, one `_apply_<command>` each, in
`nodes`, `jobs` (with `paused`: the slots no leader fires) and `runs`; this module holds the
entry point, the version gate, request de-duplication, the audit trail and snapshots.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from ..alerting import AlertRecord
from ..channels import ChannelSpec
from ..commands import Command, CommandType, DecodeError, decode
from ..model import NotifyRule
from ..records import (
    NO_RUNS,
    ZERO_STATS,
    JobRecord,
    NodeRecord,
    ReadOnlyDict,
    Run,
    new_stats,
    stats_from_dict,
    stats_to_dict,
)
from .alerts import AlertCommands
from .data import Result, reject
from .jobs import JobCommands
from .nodes import NodeCommands
from .runs import RunCommands

__all__ = ["SNAPSHOT_VERSION", "State"]

SNAPSHOT_VERSION = 2
_BULK = ("jobs", "runs", "stats", "requests")  # with "audit": one line per item in version 2
REQUEST_TTL_MS = 24 * 3600 * 1000
AUDIT_PER_JOB = 20
MAX_REQUESTS = 100_000


class State(AlertCommands, NodeCommands, JobCommands, RunCommands):
    """The replicated state machine. Mutated only by `apply`; see the module docstring."""

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
                result = self._apply_covered(cmd)
            except Exception as exc:  # noqa: BLE001 - a bug must not wedge the log (PYSYNCOBJ.md bug 1)
                result = reject("internal", f"{type(exc).__name__}: {exc}")
        for listener in self.listeners:
            listener(cmd, result)
        return result

    def _apply_covered(self, cmd: Command) -> Result:
        """A command of a version the cluster's version does not cover is refused on every node
        alike (a node whose code is older cannot decode it, and refuses it too): not applied."""
        if cmd.v > self.cluster_version and cmd.type is not CommandType.SET_CLUSTER_VERSION:
            return reject(
                "unavailable", f"command version {cmd.v} is above the cluster's {self.cluster_version}"
            )
        return self._apply_deduplicated(cmd)

    def _apply_deduplicated(self, cmd: Command) -> Result:
        now_ms = cmd.body.get("now_ms")
        if cmd.rid is not None:
            seen = self.requests.get(cmd.rid)
            fingerprint = str(cmd.body.get("fp", ""))
            # A key is remembered for REQUEST_TTL_MS of committed time (never a local clock), and
            # for the last MAX_REQUESTS requests (`_trim_requests`), whichever ends first: an entry
            # the trim has not reached yet is still past its time here.
            if seen is not None and isinstance(now_ms, int) and seen[2] < now_ms - REQUEST_TTL_MS:
                del self.requests[cmd.rid]  # re-entered at the end, keeping the dict in commit order
                seen = None
            if seen is not None:
                if seen[0] != fingerprint:
                    return reject("idempotency_mismatch", "request id reused with another body")
                return {**seen[1], "duplicate": True}
        result = self._dispatch(cmd)
        # Not applied, safe to retry (a stale view of the job): a retry with the same id must apply.
        if cmd.rid is not None and isinstance(now_ms, int) and result.get("code") != "unavailable":
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
        if result.get("ok"):
            if cmd.type in _CLOCKED and self.cluster_version > 1:
                self.clock_ms = max(self.clock_ms, body["now_ms"])
            if cmd.type in _AUDITED:
                self._audit(cmd, result)
            if cmd.type in _JOB_TABLE:
                self.generation += 1
                self.job_changes.append((self.generation, _changed_jobs(cmd)))
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

    # ------------------------------------------------------------------ snapshots

    def dump(self, *, locked: bool = True) -> bytes:
        """The whole state: `document()` framed as lines (SNAPSHOT_VERSION 2, see `load`).

        `locked=False` is for the forked compaction child only: it is single-threaded, and a
        lock copied while the loop thread held it would never be released there.
        """
        if locked:
            with self.lock:
                return self.dump(locked=False)
        doc = self.document()
        bulk = {key: doc.pop(key) for key in _BULK}
        bulk["stats"] = [[job, stats] for job, stats in bulk["stats"].items()]
        bulk["audit"] = [[job, trail] for job, trail in doc.pop("audit").items()]
        doc["v"], doc["lines"] = SNAPSHOT_VERSION, {key: len(items) for key, items in bulk.items()}
        return b"\n".join([orjson.dumps(doc), *(orjson.dumps(item) for key in bulk for item in bulk[key])])

    def document(self) -> dict[str, Any]:
        """The snapshot's content, as plain data (call under the lock). Version 1 snapshots were
        this document as one JSON text."""
        return {
            "v": 1,
            "applied": self.applied,
            "digest": self.digest.hex(),
            "term": self.term,
            "leader": self.leader,
            "settings": self.settings,
            "next_incarnation": self.next_incarnation,
            "jobs": [j.to_dict() for j in self.jobs.values()],
            "runs": [r.to_dict() for r in self.runs.values()],
            "nodes": [n.to_dict() for n in self.nodes.values()],
            "stats": {k: stats_to_dict(v) for k, v in self.stats.items()},
            "totals": stats_to_dict(self.totals),
            "requests": [[k, *v] for k, v in self.requests.items()],
            "audit": self.audit,
            "removed": self.removed,
            **self._versions_document(),
            **self._alerts_document(),
        }

    def _alerts_document(self) -> dict[str, Any]:
        """The alerts' data, absent while there is none (older snapshots stay as they were)."""
        if not (self.channels or self.alert_rules or self.alert_seq or self.alerts or self.alert_counts):
            return {}
        return {
            "alerting": {
                "channels": [c.to_dict() for c in self.channels.values()],
                "rules": [r.to_dict() for r in self.alert_rules],
                "cluster": self.alert_cluster,
                "events": list(self.alert_events),
                "seq": self.alert_seq,
                "cursor": self.alert_cursor,
                "dropped": self.alert_events_dropped,
                "alerts": [a.to_dict() for a in self.alerts.values()],
                "throttle": self.alert_throttle,
                "counts": self.alert_counts,
            }
        }

    def _load_alerts(self, raw: dict[str, Any]) -> None:
        self.channels = {c["name"]: ChannelSpec.from_wire(c) for c in raw["channels"]}
        self.alert_rules = tuple(NotifyRule.from_wire(r) for r in raw["rules"])
        self.alert_cluster = raw["cluster"]
        self.alert_events = deque(raw["events"])
        self.alert_seq, self.alert_cursor = raw["seq"], raw["cursor"]
        self.alert_events_dropped = raw["dropped"]
        self.alerts = {a["alert_id"]: AlertRecord.from_dict(a) for a in raw["alerts"]}
        self.alert_throttle, self.alert_counts = raw["throttle"], raw["counts"]

    def _versions_document(self) -> dict[str, Any]:
        """The command versions and the committed clock: absent while they hold their defaults,
        so that a state of version 1 commands has the snapshot it always had."""
        out: dict[str, Any] = {}
        if any(v != 1 for v in self.published.values()):
            out["published"] = self.published
        if self.cluster_version != 1:
            out["cluster_version"], out["clock_ms"] = self.cluster_version, self.clock_ms
        return out

    def load(self, data: bytes) -> None:
        """Replace the data with a snapshot's (version 1 or 2).

        Version 2 puts every job, run, request and audit trail on its own line, parsed one at a
        time: one `orjson.loads` of a 100,000-job snapshot (117 MB) held the GIL for 5 s, and
        the loop with it (a restarting node's API, a follower's runs). The new data is built
        aside and swapped in under the lock: readers see the old data or the new, never half."""
        end = data.find(b"\n")
        raw = orjson.loads(data if end == -1 else data[:end])  # version 1: the whole document
        if raw.get("v") == 1:
            raw["stats"] = list(raw["stats"].items())
            raw["audit"] = list(raw.get("audit", {}).items())
        elif raw.get("v") == 2:
            _frame_lines(raw, data.split(b"\n") if end != -1 else [data])
        else:
            raise ValueError(f"unsupported snapshot version {raw.get('v')!r}")
        fresh = State()
        fresh.__init_data(raw)
        with self.lock:
            keep = {"lock": self.lock, "listeners": self.listeners, "generation": self.generation + 1}
            self.__dict__.update(fresh.__dict__)
            self.__dict__.update(keep)

    def __init_data(self, raw: dict[str, Any]) -> None:
        """Fill a new State from a snapshot's data (each bulk list an iterable of items)."""
        self.applied, self.digest = raw["applied"], bytes.fromhex(raw["digest"])
        self.term, self.leader, self.settings = raw["term"], raw["leader"], raw["settings"]
        self.next_incarnation = raw["next_incarnation"]
        for d in raw["jobs"]:
            job = JobRecord.from_dict(d)
            self.jobs[job.spec.id] = job
            self.job_runs[job.spec.id] = self.job_active[job.spec.id] = NO_RUNS
        self.nodes = {n["id"]: NodeRecord.from_dict(n) for n in raw["nodes"]}
        for d in raw["runs"]:
            self._add_run(Run.from_dict(d))
        self.stats = {k: stats_from_dict(v) for k, v in raw["stats"]}
        self.totals = stats_from_dict(raw["totals"])
        if self.totals is ZERO_STATS:
            self.totals = new_stats()
        self.requests = {k: (fp, res, ms) for k, fp, res, ms in raw["requests"]}
        self.audit = _shared_entries(dict(raw["audit"]))
        self.removed = raw.get("removed", {})
        self.published = dict(raw.get("published", {}))
        self.cluster_version, self.clock_ms = raw.get("cluster_version", 1), raw.get("clock_ms", 0)
        if "alerting" in raw:
            self._load_alerts(raw["alerting"])

    _HANDLERS: dict[CommandType, Callable[[State, dict[str, Any]], Result]] = {}
    _LEADER_COMMANDS = frozenset(
        {
            CommandType.FIRE_RUNS,
            CommandType.REASSIGN_RUNS,
            CommandType.SET_NODE,
            CommandType.REMOVE_NODE,
            CommandType.NODE_CLOCKS,
            CommandType.EXPIRE_RUNS,
            CommandType.SET_CLUSTER_VERSION,
            CommandType.ACCOUNT_PAUSED,
            CommandType.RAISE_ALERTS,
        }
    )


# Leader commands whose `now_ms` advances the committed clock (`clock_ms`).
_CLOCKED = State._LEADER_COMMANDS | {CommandType.BEGIN_TERM}


# Commands that change a job's schedule position other than by firing it: the leader re-plans.
_JOB_TABLE = frozenset(
    {
        CommandType.PUT_JOB,
        CommandType.DELETE_JOB,
        CommandType.PAUSE_JOB,
        CommandType.RESUME_JOB,
        CommandType.RESTORE_JOBS,
    }
)


def _changed_jobs(cmd: Command) -> tuple[str, ...] | None:
    """The jobs a `_JOB_TABLE` command changed (None: it may have changed any)."""
    body = cmd.body
    if cmd.type is CommandType.PUT_JOB:
        return (str(body["spec"]["id"]),)
    if cmd.type is CommandType.RESTORE_JOBS:
        return None
    return (str(body["job_id"]),)


_AUDITED = {
    CommandType.PUT_JOB: "updated",
    CommandType.PAUSE_JOB: "paused",
    CommandType.RESUME_JOB: "resumed",
    CommandType.TRIGGER_JOB: "triggered",
    CommandType.CANCEL_RUN: "cancelled a run",
}

State._HANDLERS = {t: getattr(State, f"_apply_{t.value}") for t in CommandType}


def _frame_lines(raw: dict[str, Any], lines: list[bytes]) -> None:
    """A version 2 snapshot: each bulk list of the header `raw` becomes its items, parsed a line
    at a time as they are consumed (so the GIL changes hands between them)."""
    at = 1
    for key in (*_BULK, "audit"):
        count = raw["lines"][key]
        raw[key] = (orjson.loads(line) for line in lines[at : at + count])
        at += count
    if at != len(lines):
        raise ValueError(f"snapshot has {len(lines)} lines, its header accounts for {at}")


def _shared_entries(audit: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The loaded audit trails, equal entries shared (a restore writes one entry to every job)."""
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for trail in audit.values():
        for i, entry in enumerate(trail):
            key = tuple(entry.items())
            try:
                shared = seen.get(key)
            except TypeError:  # an unhashable value (not one this code writes): keep the entry
                continue
            trail[i] = shared if shared is not None else seen.setdefault(key, ReadOnlyDict(entry))
    return audit
