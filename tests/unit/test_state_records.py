"""The cheap paths of the state: copies, shared defaults, and the trusted snapshot constructor."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from pathlib import Path
from typing import Any

import orjson
import pytest

from raftsched.errors import ValidationError
from raftsched.model import JobSpec, RunState, spec_from_snapshot
from raftsched.records import (
    EMPTY,
    NO_RUNS,
    ZERO_STATS,
    JobRecord,
    ReadOnlyDict,
    Run,
    Summary,
    evolve,
    shared_parts,
)
from raftsched.state import State

from statekit import T0, Driver, job_spec

DATA = Path(__file__).resolve().parents[1] / "data"

RUN = Run(
    run_id="j@1",
    job_id="j",
    incarnation=1,
    attempt=1,
    nominal_ms=1,
    due_ms=1,
    node="n1",
    state=RunState.PENDING,
    created_ms=1,
    env={"K": "v"},
)


def test_evolve_is_replace() -> None:
    changed = evolve(RUN, state=RunState.RUNNING, started_ms=5, node=None)
    assert changed == dataclasses.replace(RUN, state=RunState.RUNNING, started_ms=5, node=None)
    assert RUN.state is RunState.PENDING and RUN.started_ms is None  # the original is untouched
    assert evolve(RUN) == RUN and evolve(RUN) is not RUN
    job = JobRecord(
        spec=JobSpec.from_dict(job_spec()),
        version=1,
        incarnation=1,
        created_ms=0,
        updated_ms=0,
        next_nominal_ms=1,
    )
    assert evolve(job, fired=3) == dataclasses.replace(job, fired=3)
    with pytest.raises(TypeError, match="no field 'colour'"):
        evolve(RUN, colour="red")
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.state = RunState.FAILED  # type: ignore[misc]


@pytest.mark.parametrize("value", [-5, 0, 1, 2, 3, 10, 11, 299_999, 300_000, 300_001, 10**9])
def test_summary_buckets_by_upper_bound(value: int) -> None:
    summary = Summary()
    summary.add(value)
    clamped = max(0, value)
    bounds = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000)
    expected = next((i for i, b in enumerate(bounds) if clamped <= b), len(bounds))
    assert summary.buckets[expected] == 1 and summary.count == 1
    assert summary.max_ms == summary.total_ms == clamped


SPECS: list[dict[str, Any]] = [
    job_spec(),
    job_spec(schedule={"cron": "*/5 * * * *", "timezone": "Europe/Berlin", "end_at": "2030-01-01T00:00:00Z"}),
    job_spec(schedule={"every": 2.5, "start_at": "2027-01-15T08:00:00.123Z"}),
    job_spec(schedule={"at": "2029-06-01T12:00:00+02:00"}),
    job_spec(task={"type": "shell", "command": "echo hi", "env": {"A": "b"}, "cwd": "/tmp"}),
    job_spec(
        task={
            "type": "http",
            "url": "https://example.org/x",
            "method": "post",
            "headers": {"H": "v"},
            "body": {"k": [1, 2]},
            "expect_status": [200, "300-302"],
        }
    ),
    job_spec(task={"type": "http", "url": "http://h/"}),
    job_spec(task={"type": "python", "callable": "m.n:f", "kwargs": {"a": [1]}, "in_process": True}),
    job_spec(
        timeout=3,
        retries={"max": 2, "initial_delay": 1, "backoff": 3, "max_delay": 10, "jitter": 0},
        delivery="at_most_once",
        overlap="queue",
        misfire={"policy": "fire_all", "grace": 5, "max_catchup": 3},
        route={"strategy": "shards", "shards": 3, "tags": {"zone": "a"}},
        jitter=1,
        paused=True,
        description="d",
        labels={"team": "x"},
    ),
    job_spec(route={"strategy": "hash"}, misfire={"policy": "skip"}),
]


@pytest.mark.parametrize("raw", SPECS)
def test_the_trusted_constructor_gives_what_the_strict_parser_gives(raw: dict[str, Any]) -> None:
    wire = JobSpec.from_dict(raw).to_dict()
    strict = JobSpec.from_dict(wire)
    trusted = spec_from_snapshot(wire)
    assert trusted == strict and repr(trusted) == repr(strict)  # repr tells 1 from 1.0
    assert shared_parts(trusted) == strict and shared_parts(trusted).to_dict() == wire


def test_a_spec_not_written_by_to_dict_goes_through_the_strict_parser() -> None:
    raw = {"version": 1, "incarnation": 1, "created_ms": 0, "updated_ms": 0, "next_nominal_ms": None}
    short = {"id": "j", "schedule": {"every": 1}, "task": {"type": "shell", "command": ["true"]}}
    assert JobRecord.from_dict({**raw, "spec": short}).spec == JobSpec.from_dict(short)
    with pytest.raises(ValidationError) as info:
        JobRecord.from_dict({**raw, "spec": {**short, "task": {"type": "shell"}}})
    assert info.value.field == "task.command"


def test_jobs_share_defaults_until_they_need_their_own() -> None:
    d = Driver()
    d.boot()
    d.add("a")
    d.add("b", labels={"x": "y"})
    a, b = d.state.jobs["a"].spec, d.state.jobs["b"].spec
    assert a.retries is b.retries and a.misfire is b.misfire and a.route is b.route
    assert a.labels is EMPTY and a.task.env is EMPTY and b.labels == {"x": "y"}
    assert d.state.stats["a"] is ZERO_STATS and d.state.job_runs["a"] is NO_RUNS
    d.fire("a", T0 + 1000)
    assert d.state.stats["a"] is not ZERO_STATS and d.state.stats["a"]["fired"] == 1
    assert d.state.stats["b"] is ZERO_STATS and ZERO_STATS["fired"] == 0
    assert list(d.state.job_runs["a"]) == ["a@1800000001000"] and d.state.job_runs["b"] is NO_RUNS
    d.start("a@1800000001000")
    assert d.state.stats["a"]["lateness"].count == 1 and ZERO_STATS["lateness"].count == 0


def test_shared_parts_refuse_to_change() -> None:
    for change in (
        lambda: EMPTY.__setitem__("k", "v"),
        lambda: EMPTY.update(k="v"),
        lambda: NO_RUNS.setdefault("r", None),
        lambda: ZERO_STATS.__setitem__("fired", 1),
        lambda: ZERO_STATS["lateness"].add(5),
    ):
        with pytest.raises(TypeError):
            change()
    mine = copy.copy(EMPTY)
    mine["k"] = "v"  # a copy is an ordinary dict
    assert EMPTY == {} and copy.deepcopy(ReadOnlyDict(a={"b": 1})) == {"a": {"b": 1}}
    assert pickle.loads(pickle.dumps(ReadOnlyDict(a=1))) == {"a": 1}


def test_a_version_1_snapshot_loads_to_the_same_content_and_comes_back_as_version_2() -> None:
    """Written by 7b47c9f from the golden log, as one JSON document (version 1). (The pins of
    test_state_replay show that this code has the same snapshot content as that one for the same
    state, all along a long stream.) Version 2 frames the same content as lines."""
    old = (DATA / "golden_v1_snapshot.json").read_bytes()
    state = State()
    state.load(old)
    assert orjson.dumps(state.document()) == old
    assert state.jobs["a"].spec.retries is state.jobs["q"].spec.retries  # loaded shared, too
    framed = state.dump()
    header = orjson.loads(framed.split(b"\n")[0])
    assert header["v"] == 2 and framed.count(b"\n") == sum(header["lines"].values())
    again = State()
    again.load(framed)
    assert orjson.dumps(again.document()) == old and again.dump() == framed
    assert again.jobs["a"].spec.retries is again.jobs["q"].spec.retries


def test_an_empty_state_and_bad_snapshots() -> None:
    empty = State()
    framed = empty.dump()
    assert b"\n" not in framed  # nothing but the header
    again = State()
    again.load(framed)
    assert again.dump() == framed
    with pytest.raises(ValueError, match="version 3"):
        State().load(orjson.dumps({"v": 3}))
    with pytest.raises(ValueError, match="lines"):
        State().load(framed + b"\n{}")
