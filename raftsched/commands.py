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

import zlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

__all__ = [
    "GATED_TYPES",
    "VERSION",
    "Command",
    "CommandType",
    "DecodeError",
    "checked_payload",
    "decode",
    "encode",
]

VERSION = 1


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
    # Newer than the first release: propose these only once every member applies them (the
    # cluster command version gate). An older node rejects an unknown type as a bad command while
    # newer nodes apply it, so a mixed cluster would diverge.
    # node: {node, now_ms, actor, items: [{run_id, attempt}]}; a stopping node hands back the runs
    # it has not started and will not start (and stops taking runs, as DRAIN_NODE does)
    UNCLAIM_RUNS = "unclaim_runs"
    # leader: {term, now_ms, items: [{run_id, attempt, reason}]}; pending runs past their
    # misfire grace, recorded `missed` per the job's misfire policy
    EXPIRE_RUNS = "expire_runs"


# The command types added after the first release (see the note above): gate them on the
# cluster's command version.
GATED_TYPES = frozenset({CommandType.UNCLAIM_RUNS, CommandType.EXPIRE_RUNS})


class DecodeError(ValueError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    type: CommandType
    body: dict[str, Any]
    rid: str | None = None
    v: int = VERSION


def encode(cmd_type: CommandType, body: dict[str, Any], rid: str | None = None) -> bytes:
    """The envelope, behind an 8-hex-digit CRC-32 of it: `c0ffee12{"v":1,...}`."""
    payload = orjson.dumps({"v": VERSION, "t": cmd_type.value, "rid": rid, "body": body})
    return b"%08x" % zlib.crc32(payload) + payload


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
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise DecodeError(f"unsupported command version {version!r}")
    try:
        cmd_type = CommandType(str(name))
    except ValueError:
        raise DecodeError(f"unknown command type {name!r}") from None
    if not isinstance(body, dict) or (rid is not None and not isinstance(rid, str)):
        raise DecodeError("malformed envelope")
    return Command(type=cmd_type, body=upcast(version, cmd_type, body), rid=rid, v=VERSION)


def upcast(version: int, cmd_type: CommandType, body: dict[str, Any]) -> dict[str, Any]:
    """Bring an older body to the current version (version 1 is current: nothing to do)."""
    del version, cmd_type
    return body
