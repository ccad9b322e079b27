"""Replicated commands: versioned plain data in one orjson envelope.

    c0ffee12{"v": 1, "t": "fire_runs", "rid": "...", "body": {...}}

prefixed by the CRC-32 of the JSON in 8 hex digits, so that a damaged journal entry is found
(at start, before it is applied; see `journalcheck`), not applied as a different command.

`t` names the command (imperative); `rid` is an optional request id that the state uses
to apply a retried write once; `body` is the command's data. Time and ids are always in the
body: the state never reads a clock. Old versions must keep decoding forever (the golden
log in tests/data guards this); `upcast` turns an older body into the current one.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "VERSION",
    "Command",
    "CommandType",
    "DecodeError",
    "checked_payload",
    "decode",
    "encode",
    "envelope_version",
    "usable_version",
]

VERSION = 2


class CommandType(StrEnum):
    BEGIN_TERM = "begin_term"  # leader: {term, leader, now_ms}
    # node: {node, http, raft, tags, capacity, version, now_ms, policy?: {run_tasks, allow_shell,
    # command_allow, python_allow, http_allow, secrets (names)}}; older entries lack `policy`
    REGISTER_NODE = "register_node"
    SET_NODE = "set_node"  # leader: {term, node, up, now_ms}
    ADD_NODE = "add_node"  # api:    {node, raft, http, tags, now_ms, actor}
    DRAIN_NODE = "drain_node"  # api:    {node, draining, now_ms, actor}
    REMOVE_NODE = "remove_node"  # leader: {term, node, now_ms}
    NODE_CLOCKS = "node_clocks"  # leader: {term, now_ms, clocks: [{node, offset_ms, ok}]}
    PUT_JOB = "put_job"  # api:    {spec, now_ms, next_nominal_ms, mode, if_version, actor}
    DELETE_JOB = "delete_job"  # api:    {job_id, now_ms, if_version, actor}
    PAUSE_JOB = "pause_job"  # api:    {job_id, now_ms, actor, missed?: {from_ms, until_ms, count}}
    RESUME_JOB = "resume_job"  # api:    {job_id, now_ms, next_nominal_ms, actor}
    # api: {job_id, now_ms, node, env, kwargs, actor, nodes?}; `nodes` (newer entries, broadcast and
    # shards) lists one node per run, `node` being its first; older entries have `node` only
    TRIGGER_JOB = "trigger_job"
    RESTORE_JOBS = (
        "restore_jobs"  # api: {now_ms, actor, jobs: [{spec, created_ms, last_slot_ms, next_nominal_ms}]}
    )
    CANCEL_RUN = "cancel_run"  # api:    {run_id, now_ms, actor}
    FIRE_RUNS = "fire_runs"  # leader: {term, now_ms, fires: [...], skips: [...]}
    REASSIGN_RUNS = "reassign_runs"  # leader: {term, now_ms, moves: [{run_id, attempt, node}]}
    CLAIM_RUNS = "claim_runs"  # worker: {node, now_ms, items: [{run_id, attempt}]}
    START_RUNS = "start_runs"  # worker: {node, now_ms, items: [{run_id, attempt, started_ms}]}
    # worker: {node, now_ms, items: [{run_id, attempt, outcome, ...}]}; an item's `output_truncated`
    # is present (true) only when the node kept less than the whole output: older items lack it.
    FINISH_RUNS = "finish_runs"
    NOOP = "noop"  # anyone: {now_ms}; a barrier for consistent reads
    # leader: {term, now_ms, version}; raises the cluster's version to what every member publishes
    SET_CLUSTER_VERSION = "set_cluster_version"
    # leader: {term, now_ms, items: [{job_id, incarnation, after_ms, from_ms, until_ms, count}]}:
    # a paused job's due slots recorded; also the leader's committed clock when nothing else commits
    ACCOUNT_PAUSED = "account_paused"
    # node: {node, now_ms, actor, items: [{run_id, attempt}]}; a stopping node hands back the runs
    # it has not started and will not start (and stops taking runs, as DRAIN_NODE does)
    UNCLAIM_RUNS = "unclaim_runs"
    # leader: {term, now_ms, items: [{run_id, attempt, reason}]}; pending runs past their
    # misfire grace, recorded `missed` per the job's misfire policy
    EXPIRE_RUNS = "expire_runs"
    # Alerts (state/alerts.py, alerting.py). api: {name, channel: {...}, now_ms, actor}
    PUT_CHANNEL = "put_channel"
    DELETE_CHANNEL = "delete_channel"  # api: {name, now_ms, actor}
    SET_ALERT_RULES = "set_alert_rules"  # api: {rules: [...], cluster, now_ms, actor}
    # leader: {term, now_ms, after_seq, through_seq, alerts: [...], throttle: {channel: {...}},
    # moves: [{alert_id, attempt, node}]}; compare-and-set on the event cursor (`after_seq`)
    RAISE_ALERTS = "raise_alerts"
    # worker: {node, now_ms, items: [{alert_id, attempt, ok, error}]}; fenced by node and attempt
    REPORT_ALERTS = "report_alerts"


# (first, current) version of each command type that is not (1, 1). A type or form newer than the
# cluster's committed version is never proposed (`usable_version`): an older node would reject or
# misread it while newer nodes apply it, and a mixed cluster would diverge.
_VERSIONS: dict[CommandType, tuple[int, int]] = {
    CommandType.PUT_JOB: (1, 2),
    CommandType.RESUME_JOB: (1, 2),
    CommandType.DELETE_JOB: (1, 2),
    CommandType.TRIGGER_JOB: (1, 2),
    CommandType.SET_CLUSTER_VERSION: (2, 2),
    CommandType.ACCOUNT_PAUSED: (2, 2),
    CommandType.UNCLAIM_RUNS: (2, 2),
    CommandType.EXPIRE_RUNS: (2, 2),
    CommandType.PUT_CHANNEL: (2, 2),
    CommandType.DELETE_CHANNEL: (2, 2),
    CommandType.SET_ALERT_RULES: (2, 2),
    CommandType.RAISE_ALERTS: (2, 2),
    CommandType.REPORT_ALERTS: (2, 2),
}
_HEAD = re.compile(rb'\{"v":(\d{1,9}),')
# Body fields that only a later version carries: an older body never has them (upcast drops them).
_ADDED = {
    (CommandType.PUT_JOB, 2): "accounted",
    (CommandType.RESUME_JOB, 2): "accounted",
    (CommandType.DELETE_JOB, 2): "accounted",
    (CommandType.TRIGGER_JOB, 2): "nodes",  # one node per run, for broadcast and shards
}


class DecodeError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    type: CommandType
    body: dict[str, Any]
    rid: str | None = None
    v: int = 1  # the version the command was written in (its body is upcast to the current form)


def encode(
    cmd_type: CommandType, body: dict[str, Any], rid: str | None = None, *, v: int | None = None
) -> bytes:
    """The envelope, behind an 8-hex-digit CRC-32 of it: `c0ffee12{"v":1,...}`. `v` defaults to
    the command's first version: a later form is written only by a proposer that asked for it
    (`usable_version`: the newest the cluster's version covers)."""
    first, current = _VERSIONS.get(cmd_type, (1, 1))
    version = first if v is None else v
    if not first <= version <= current:
        raise ValueError(f"{cmd_type.value} has no version {version}")
    payload = orjson.dumps({"v": version, "t": cmd_type.value, "rid": rid, "body": body})
    return b"%08x" % zlib.crc32(payload) + payload


def usable_version(cmd_type: CommandType, cluster_version: int) -> int | None:
    """The newest version of `cmd_type` that `cluster_version` covers (None: no version is)."""
    first, current = _VERSIONS.get(cmd_type, (1, 1))
    version = min(current, cluster_version)
    return version if version >= first else None


def envelope_version(data: bytes) -> int:
    """The `v` of an encoded command, read from its first bytes (`encode` writes it first), so
    that a proposer checks it without parsing the body; a command in another shape is decoded
    whole. DecodeError for what is not a command."""
    match = _HEAD.match(data, 0 if data[:1] == b"{" else 8)
    return int(match.group(1)) if match else decode(data).v


def checked_payload(data: bytes) -> bytes:
    """The JSON of a command after checking its CRC (entries from before the CRC have none)."""
    if data[:1] == b"{":
        return data
    if len(data) < 9 or data[8:9] != b"{":
        raise DecodeError("not a command")
    try:
        expected = int(data[:8], 16)
    except ValueError:
        raise DecodeError("not a command") from None
    payload = data[8:]
    if zlib.crc32(payload) != expected:
        raise DecodeError("checksum mismatch: the entry is damaged")
    return payload


def decode(data: bytes) -> Command:
    """Bytes from the log -> Command; DecodeError for anything malformed (never other errors)."""
    payload = checked_payload(data)
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise DecodeError("envelope is not an object")
    version, name, body, rid = raw.get("v"), raw.get("t"), raw.get("body"), raw.get("rid")
    try:
        cmd_type = CommandType(str(name))
    except ValueError:
        raise DecodeError(f"unknown command type {name!r}") from None
    first, current = _VERSIONS.get(cmd_type, (1, 1))
    if not isinstance(version, int) or isinstance(version, bool) or not first <= version <= current:
        raise DecodeError(f"unsupported command version {version!r}")
    if not isinstance(body, dict) or (rid is not None and not isinstance(rid, str)):
        raise DecodeError("malformed envelope")
    return Command(type=cmd_type, body=upcast(version, cmd_type, body), rid=rid, v=version)


def upcast(version: int, cmd_type: CommandType, body: dict[str, Any]) -> dict[str, Any]:
    """Bring an older body to the current form. A body of an older version keeps its meaning:
    a field that only a later version carries is dropped (no such body was ever written)."""
    for (added_to, since), name in _ADDED.items():
        if added_to is cmd_type and version < since and name in body:
            body = {k: v for k, v in body.items() if k != name}
    return body
