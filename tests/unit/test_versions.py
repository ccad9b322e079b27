"""Command versions (DESIGN.md §3): nodes publish the highest they apply, the leader commits the
cluster's, and a command the cluster's version does not cover is neither proposed nor applied."""

from __future__ import annotations

import asyncio
import zlib

import orjson
import pytest

from raftsched import commands
from raftsched.commands import CommandType, decode, encode, envelope_version, usable_version
from raftsched.errors import Unavailable
from raftsched.replication import Replicator
from raftsched.state import State

from statekit import T0, Driver, upgrade


def test_a_command_is_written_in_its_first_version_unless_asked() -> None:
    assert decode(encode(CommandType.PUT_JOB, {})).v == 1
    assert decode(encode(CommandType.PUT_JOB, {}, v=2)).v == 2
    assert decode(encode(CommandType.ACCOUNT_PAUSED, {})).v == 2
    with pytest.raises(ValueError, match="no version 1"):
        encode(CommandType.SET_CLUSTER_VERSION, {}, v=1)
    with pytest.raises(ValueError, match="no version 2"):
        encode(CommandType.FIRE_RUNS, {}, v=2)


def test_usable_version_is_the_newest_the_cluster_covers() -> None:
    assert commands.VERSION == 2
    assert usable_version(CommandType.RESUME_JOB, 1) == 1
    assert usable_version(CommandType.RESUME_JOB, 2) == 2
    assert usable_version(CommandType.RESUME_JOB, 7) == 2
    assert usable_version(CommandType.ACCOUNT_PAUSED, 1) is None
    assert usable_version(CommandType.NOOP, 2) == 1


def test_envelope_version_is_read_from_the_first_bytes() -> None:
    data = encode(CommandType.DELETE_JOB, {"job_id": "x" * 10_000}, v=2)
    assert envelope_version(data) == 2
    assert envelope_version(orjson.dumps({"v": 1, "t": "noop", "body": {}})) == 1  # before the CRC
    other_order = orjson.dumps({"t": "account_paused", "v": 2, "body": {}})
    assert envelope_version(b"%08x" % zlib.crc32(other_order) + other_order) == 2  # decoded whole


def test_a_version_1_body_never_carries_what_version_2_added() -> None:
    """Old commands keep their meaning: `accounted` in a version 1 body is dropped on decode."""
    old = orjson.dumps({"v": 1, "t": "resume_job", "body": {"job_id": "j", "accounted": [{"x": 1}]}})
    assert "accounted" not in decode(old).body
    assert decode(encode(CommandType.RESUME_JOB, {"accounted": []}, v=2)).body == {"accounted": []}
    with pytest.raises(commands.DecodeError, match="unsupported command version 3"):
        decode(orjson.dumps({"v": 3, "t": "resume_job", "body": {}}))
    with pytest.raises(commands.DecodeError, match="unsupported command version 1"):
        decode(orjson.dumps({"v": 1, "t": "account_paused", "body": {}}))


def test_registration_publishes_the_command_version_absent_means_1() -> None:
    d = Driver()
    d.boot()
    assert d.state.published == {"n1": 1, "n2": 1, "n3": 1} and d.state.cluster_version == 1
    assert "published" not in d.state.document() and "cluster_version" not in d.state.document()


def test_the_cluster_version_rises_only_once_every_member_publishes_it() -> None:
    d = Driver()
    d.boot()
    refused = d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0, version=2)
    assert refused["ok"] is False and "up to 1" in refused["message"]
    for node in ("n1", "n2"):
        d.cmd(CommandType.REGISTER_NODE, node=node, http="h", raft=f"{node}:1", commands=2, now_ms=T0)
    assert d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0, version=2)["ok"] is False
    d.cmd(CommandType.REGISTER_NODE, node="n3", http="h", raft="n3:1", commands=2, now_ms=T0)
    stale = d.cmd(CommandType.SET_CLUSTER_VERSION, term=0, now_ms=T0, version=2)
    assert stale["code"] == "stale_term"  # leader-only, term-fenced
    assert d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0, version=2)["ok"]
    assert d.state.cluster_version == 2 and d.state.clock_ms == T0
    lower = d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0, version=1)
    assert lower["ok"] is False and d.state.cluster_version == 2  # never lowered
    # A member added later counts as version 1 until it registers: no higher version meanwhile.
    d.cmd(CommandType.ADD_NODE, node="n4", raft="n4:1", http="h", tags={}, now_ms=T0)
    assert min(d.state.published.get(n, 1) for n in d.state.nodes) == 1


def test_a_command_the_cluster_version_does_not_cover_is_not_applied_and_not_remembered() -> None:
    d = Driver()
    d.boot()
    d.add("j", paused=True)
    body = {"job_id": "j", "now_ms": T0 + 5000, "next_nominal_ms": T0 + 6000, "accounted": []}
    data = encode(CommandType.RESUME_JOB, body, rid="idem:k", v=2)
    refused = d.state.apply(data)
    assert refused["code"] == "unavailable" and d.state.jobs["j"].spec.paused
    assert "idem:k" not in d.state.requests  # a retry once the cluster is upgraded applies
    upgrade(d)
    assert d.state.apply(data)["ok"] and not d.state.jobs["j"].spec.paused


def test_the_versions_survive_a_snapshot() -> None:
    d = Driver()
    d.boot()
    upgrade(d, now_ms=T0 + 42)
    again = State()
    again.load(d.state.dump())
    assert (again.cluster_version, again.clock_ms, again.published) == (2, T0 + 42, d.state.published)
    assert again.dump() == d.state.dump()


class _Gated(Replicator):
    """Only the gate of `propose` (no Raft behind it)."""

    def __init__(self, state: State) -> None:  # noqa: D107 - no PySyncObj here
        self.state = state


def test_a_node_refuses_to_propose_what_the_cluster_version_does_not_cover() -> None:
    d = Driver()
    d.boot()
    gate = _Gated(d.state)
    with pytest.raises(Unavailable, match="above the cluster's version 1"):
        asyncio.run(gate.propose(encode(CommandType.RESUME_JOB, {"accounted": []}, v=2)))
    with pytest.raises(Unavailable, match="above the cluster's version 1"):
        asyncio.run(gate.propose(encode(CommandType.ACCOUNT_PAUSED, {"term": 1, "now_ms": T0, "items": []})))
    gate._check_version(encode(CommandType.SET_CLUSTER_VERSION, {"term": 1, "version": 2, "now_ms": T0}))
    gate._check_version(encode(CommandType.RESUME_JOB, {}))  # version 1: covered
