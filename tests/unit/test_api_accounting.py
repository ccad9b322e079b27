"""The API's side of the accounting: the cluster's version in /v1/status, version 2 writes, and
paused ranges in reads up to the committed clock (never the node's own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot
from test_api import Api

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.commands import CommandType, encode
from raftsched.state import State

JOB = {"id": "tick", "schedule": {"every": 1}, "task": {"type": "shell", "command": ["true"]}}


def upgrade(state: State, now_ms: int) -> None:
    node = state.nodes["n1"]
    body = {
        "node": "n1",
        "http": node.http,
        "raft": node.raft,
        "tags": node.tags,
        "commands": 2,
        "now_ms": now_ms,
    }
    assert state.apply(encode(CommandType.REGISTER_NODE, body))["ok"]
    result = state.apply(encode(CommandType.SET_CLUSTER_VERSION, {"term": 1, "now_ms": now_ms, "version": 2}))
    assert result["ok"], result


def leader_clock(state: State, now_ms: int) -> None:
    """The leader commits its clock (an accounting turn with nothing to record)."""
    body = {"term": 1, "now_ms": now_ms, "items": []}
    assert state.apply(encode(CommandType.ACCOUNT_PAUSED, body))["ok"]


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    raft = MemoryRaft(state)
    async with TestClient(
        TestServer(make_app(Services(node_id="n1", state=state, raft=raft, clock=clock)))
    ) as c:
        yield Api(c, raft, state, clock)


async def test_status_shows_the_cluster_version_and_what_each_member_publishes(api: Api) -> None:
    _, status = await api.call("GET", "/v1/status")
    assert status["cluster_version"] == 1 and status["commands"] == 2
    assert [m["commands"] for m in status["members"]] == [1]
    upgrade(api.state, T0)
    _, status = await api.call("GET", "/v1/status")
    assert status["cluster_version"] == 2 and [m["commands"] for m in status["members"]] == [2]
    _, nodes = await api.call("GET", "/v1/nodes")
    assert nodes["items"][0]["commands"] == 2


async def test_a_version_1_cluster_writes_version_1_commands(api: Api) -> None:
    proposed: list[bytes] = []
    apply = api.state.apply

    def spy(data: bytes) -> dict[str, Any]:
        proposed.append(data)
        return apply(data)

    api.state.apply = spy  # type: ignore[method-assign]
    assert (await api.call("POST", "/v1/jobs", {**JOB, "paused": True}))[0] == 201
    api.clock.advance(5)
    assert (await api.call("POST", "/v1/jobs/tick/resume"))[0] == 200
    assert all(b'"v":1,' in data for data in proposed)
    skipped = [r for r in api.state.runs.values() if r.state.value == "skipped"]
    assert [r.count for r in skipped] == [5]  # version 1's own record of the pause


async def test_reads_show_a_paused_range_up_to_the_committed_clock(api: Api) -> None:
    upgrade(api.state, T0)
    assert (await api.call("POST", "/v1/jobs", JOB))[0] == 201
    assert (await api.call("POST", "/v1/jobs/tick/pause"))[0] == 200
    api.clock.advance(60)  # this node's clock moves; the committed one does not
    _, runs = await api.call("GET", "/v1/jobs/tick/runs")
    assert runs["items"] == []
    leader_clock(api.state, T0 + 10_500)
    _, runs = await api.call("GET", "/v1/jobs/tick/runs")
    (record,) = runs["items"]
    assert (record["state"], record["reason"], record["count"]) == ("skipped", "job paused", 10)
    assert record["run_id"] == f"tick@{T0 + 1000}" and record["until"] == "2027-01-15T08:00:10.000Z"
    _, by_job = await api.call("GET", "/v1/runs?job=tick&state=skipped")
    assert by_job["items"] == runs["items"]
    _, stats = await api.call("GET", "/v1/stats")
    assert stats["jobs"]["tick"]["skipped"] == 10 and stats["cluster"]["skipped"] == 10
    _, job = await api.call("GET", "/v1/jobs/tick")
    assert job["last_slot_at"] == "2027-01-15T08:00:10.000Z" and job["next_slot_at"] is None
    assert job["stats"]["skipped"] == 10


async def test_resume_and_delete_record_the_range_and_a_put_may_send_the_new_fields_back(api: Api) -> None:
    upgrade(api.state, T0)
    await api.call("POST", "/v1/jobs", JOB)
    await api.call("POST", "/v1/jobs/tick/pause")
    api.clock.advance(4.5)
    status, job = await api.call(
        "PUT", "/v1/jobs/tick", {**job_fields(await api.call("GET", "/v1/jobs/tick")), "paused": False}
    )
    assert status == 200 and not job["paused"] and job["next_slot_at"] == "2027-01-15T08:00:05.000Z"
    _, runs = await api.call("GET", "/v1/jobs/tick/runs")
    assert [(r["state"], r["count"]) for r in runs["items"]] == [("skipped", 4)]
    await api.call("POST", "/v1/jobs/tick/pause")
    api.clock.advance(3)
    assert (await api.call("DELETE", "/v1/jobs/tick"))[0] == 204
    assert api.state.totals["skipped"] == 4 + 3


def job_fields(answer: tuple[int, Any]) -> dict[str, Any]:
    """A GET's job as a client sends it back, read-only fields included."""
    return dict(answer[1])
