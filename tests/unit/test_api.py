"""Every endpoint of the admin API: happy path and each error code, on a real State."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.commands import CommandType, encode
from raftsched.errors import Indeterminate, NoLeader
from raftsched.replication import RaftStatus
from raftsched.state import State

JOB = {"id": "nightly", "schedule": {"every": 60}, "task": {"type": "shell", "command": ["true"]}}


class Api:
    def __init__(self, client: TestClient, raft: MemoryRaft, state: State, clock: FakeClock) -> None:
        self.client, self.raft, self.state, self.clock = client, raft, state, clock

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        resp = await self.client.request(method, path, **kwargs)
        data = await resp.json() if resp.content_type == "application/json" else await resp.text()
        return resp.status, data


async def _api(
    token: str | None = None, max_body: int = 1 << 20, raft_type: type[MemoryRaft] = MemoryRaft
) -> AsyncIterator[Api]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    raft = raft_type(state)
    services = Services(
        node_id="n1", state=state, raft=raft, clock=clock, api_token=token, max_body_bytes=max_body
    )
    async with TestClient(TestServer(make_app(services))) as client:
        yield Api(client, raft, state, clock)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async for a in _api():
        yield a


def error(body: Any) -> tuple[str, str | None]:
    return body["error"]["code"], body["error"]["field"]


async def test_health_and_status(api: Api) -> None:
    assert await api.call("GET", "/v1/health") == (
        200,
        {
            "ok": True,
            "node_id": "n1",
            "leader": "n1",
            "lag": 0,
            "time_ms": api.clock.now_ms(),
            "clock_offset_ms": None,
            "clock_ok": True,
            "raft_tick_age_s": 0.0,
        },
    )
    status, body = await api.call("GET", "/v1/status")
    assert status == 200 and body["role"] == "leader" and body["leader"] == "n1"
    assert body["digest"] == api.state.digest_hex() and body["members"][0]["id"] == "n1"
    status, nodes = await api.call("GET", "/v1/nodes")
    assert status == 200 and nodes["items"][0]["capacity"] == 4


async def test_a_node_with_a_bad_clock_reports_itself_unhealthy(api: Api) -> None:
    clocks = [{"node": "n1", "offset_ms": 2500, "ok": False}]
    body = {"term": 1, "now_ms": api.clock.now_ms(), "clocks": clocks}
    assert api.state.apply(encode(CommandType.NODE_CLOCKS, body))["ok"]
    status, health = await api.call("GET", "/v1/health")
    assert status == 503 and not health["ok"] and health["clock_offset_ms"] == 2500 and not health["clock_ok"]
    status, nodes = await api.call("GET", "/v1/nodes")
    assert nodes["items"][0]["clock_offset_ms"] == 2500 and nodes["items"][0]["clock_ok"] is False


class StalledTickRaft(MemoryRaft):
    """A Raft node whose tick thread is alive but has not ticked for 30 s."""

    def status(self) -> RaftStatus:
        return dataclasses.replace(super().status(), tick_age_s=30.0)

    def tick_alive(self) -> bool:
        return False


async def test_a_node_whose_raft_tick_stalls_reports_its_age_and_is_unhealthy() -> None:
    async for api in _api(raft_type=StalledTickRaft):
        status, health = await api.call("GET", "/v1/health")
        assert status == 503 and not health["ok"] and health["raft_tick_age_s"] == 30.0


async def test_job_lifecycle(api: Api) -> None:
    status, job = await api.call("POST", "/v1/jobs", JOB)
    assert status == 201 and job["version"] == 1 and job["next_fire_at"] == "2027-01-15T08:01:00.000Z"
    assert job["created_at"] == "2027-01-15T08:00:00.000Z"
    resp = await api.client.get("/v1/jobs/nightly")
    assert resp.status == 200 and resp.headers["ETag"] == '"1"'
    status, listed = await api.call("GET", "/v1/jobs")
    assert (
        status == 200 and [j["id"] for j in listed["items"]] == ["nightly"] and listed["next_cursor"] is None
    )
    status, job = await api.call(
        "PUT", "/v1/jobs/nightly", {**job, "description": "d"}, **{"If-Match": '"1"'}
    )
    assert status == 200 and job["version"] == 2 and job["description"] == "d"
    status, job = await api.call("POST", "/v1/jobs/nightly/pause")
    assert status == 200 and job["paused"] and job["next_fire_at"] is None
    status, job = await api.call("POST", "/v1/jobs/nightly/resume")
    assert status == 200 and not job["paused"]
    status, run = await api.call("POST", "/v1/jobs/nightly/trigger", {"env": {"X": "1"}})
    assert status == 201 and run["run_id"] == f"nightly@manual-{T0}" and run["state"] == "pending"
    status, runs = await api.call("GET", "/v1/jobs/nightly/runs?state=pending")
    assert status == 200 and [r["run_id"] for r in runs["items"]] == [run["run_id"]]
    status, got = await api.call("GET", f"/v1/runs/{run['run_id']}")
    assert status == 200 and got["node"] == "n1" and got["output"] == ""
    status, all_runs = await api.call("GET", "/v1/runs?node=n1&job=nightly")
    assert status == 200 and len(all_runs["items"]) == 1
    status, cancelled = await api.call("POST", f"/v1/runs/{run['run_id']}/cancel")
    assert status == 202 and cancelled["state"] == "cancelled"
    status, stats = await api.call("GET", "/v1/stats")
    assert status == 200 and stats["jobs"]["nightly"]["cancelled"] == 1 and stats["cluster"]["cancelled"] == 1
    status, job = await api.call("GET", "/v1/jobs/nightly")
    last = {"run_id": run["run_id"], "state": "cancelled", "finished_at": job["updated_at"]}
    assert job["last_run"] == last
    actions = [entry["action"] for entry in job["audit"]]
    assert actions == [
        f"cancelled run {run['run_id']}",
        f"triggered run {run['run_id']}",
        "resumed",
        "paused",
        "updated",
        "created",
    ]
    assert job["audit"][-1]["actor"].startswith("api@") and job["audit"][-1]["version"] == 1
    assert job["audit"][0]["at"] == "2027-01-15T08:00:00.000Z"
    assert (await api.call("DELETE", "/v1/jobs/nightly"))[0] == 204
    assert error((await api.call("GET", "/v1/jobs/nightly"))[1]) == ("not_found", "id")


async def test_put_creates_and_read_only_fields_are_ignored(api: Api) -> None:
    status, job = await api.call("PUT", "/v1/jobs/nightly", JOB)
    assert status == 201
    status, again = await api.call("PUT", "/v1/jobs/nightly", job)  # as GET returned it
    assert status == 200 and again["version"] == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**JOB, "bogus": 1}, "bogus"),
        ({**JOB, "id": "-bad"}, "id"),
        ({**JOB, "schedule": {"cron": "61 * * * *"}}, "schedule.cron"),
        ({**JOB, "schedule": {"cron": "* * * * *", "timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({**JOB, "schedule": {"at": "2026-12-01T00:00:00"}}, "schedule.at"),
        ({**JOB, "task": {"type": "shell", "command": ["ok", 2]}}, "task.command.1"),
        ({**JOB, "task": {"type": "http", "url": "ftp://x"}}, "task.url"),
        ({**JOB, "retries": {"max": -1}}, "retries.max"),
        ({**JOB, "overlap": "sometimes"}, "overlap"),
        ({**JOB, "route": {"strategy": "shards", "shards": 0}}, "route.shards"),
    ],
)
async def test_validation_errors_name_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    status, err = await api.call("POST", "/v1/jobs", body)
    assert status == 400 and error(err) == ("validation_error", field)
    assert not api.state.jobs


async def test_malformed_bodies_and_queries(api: Api) -> None:
    resp = await api.client.post("/v1/jobs", data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "validation_error"
    for query, field in (
        ("limit=0", "limit"),
        ("limit=x", "limit"),
        ("cursor=%%%", "cursor"),
        ("state=weird", "state"),
    ):
        status, err = await api.call("GET", f"/v1/runs?{query}")
        assert status == 400 and error(err) == ("validation_error", field), query
    status, err = await api.call("GET", "/v1/jobs?paused=maybe")
    assert status == 400 and error(err)[1] == "paused"
    status, err = await api.call("POST", "/v1/jobs/x/trigger", {"nope": 1})
    assert status in (400, 404)


async def test_conflicts_and_compare_and_set(api: Api) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    status, err = await api.call("POST", "/v1/jobs", JOB)
    assert status == 409 and error(err) == ("already_exists", "id")
    status, err = await api.call("PUT", "/v1/jobs/nightly", JOB, **{"If-Match": '"7"'})
    assert status == 412 and error(err)[0] == "version_mismatch"
    status, err = await api.call("DELETE", "/v1/jobs/nightly", **{"If-Match": "7"})
    assert status == 412
    status, err = await api.call("PUT", "/v1/jobs/nightly", JOB, **{"If-Match": "abc"})
    assert status == 400 and error(err)[1] == "If-Match"
    status, err = await api.call("PUT", "/v1/jobs/other", JOB)
    assert status == 400 and error(err) == ("validation_error", "id")
    assert api.state.jobs["nightly"].version == 1


async def test_idempotency_key_applies_once_and_detects_mismatch(api: Api) -> None:
    key = {"Idempotency-Key": "k-1"}
    first = await api.call("POST", "/v1/jobs", JOB, **key)
    proposals = api.raft.proposals
    api.clock.advance(5)
    second = await api.call("POST", "/v1/jobs", JOB, **key)
    assert first[0] == second[0] == 201 and first[1]["version"] == second[1]["version"] == 1
    assert api.raft.proposals == proposals  # answered from this node's state: nothing proposed
    status, err = await api.call("POST", "/v1/jobs", {**JOB, "description": "other"}, **key)
    assert status == 422 and error(err)[0] == "idempotency_mismatch"


async def test_unavailable_and_indeterminate(api: Api) -> None:
    api.raft.fail_with = NoLeader("no leader")
    resp = await api.client.post("/v1/jobs", json=JOB)
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    assert (await resp.json())["error"]["code"] == "unavailable"
    api.raft.fail_with = Indeterminate("leader changed")
    status, err = await api.call("POST", "/v1/jobs", JOB, **{"Idempotency-Key": "k"})
    assert status == 504 and error(err)[0] == "indeterminate"


async def test_not_found_everywhere(api: Api) -> None:
    for method, path in (
        ("GET", "/v1/jobs/x"),
        ("POST", "/v1/jobs/x/pause"),
        ("POST", "/v1/jobs/x/resume"),
        ("POST", "/v1/jobs/x/trigger"),
        ("DELETE", "/v1/jobs/x"),
        ("GET", "/v1/jobs/x/runs"),
        ("GET", "/v1/runs/x@1"),
        ("POST", "/v1/runs/x@1/cancel"),
        ("GET", "/v1/nope"),
    ):
        status, err = await api.call(method, path)
        assert status == 404 and error(err)[0] == "not_found", path


async def test_pagination_walks_every_item_once(api: Api) -> None:
    for i in range(7):
        await api.call("POST", "/v1/jobs", {**JOB, "id": f"j{i}"})
    seen: list[str] = []
    cursor = None
    while True:
        status, page = await api.call("GET", "/v1/jobs?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert status == 200 and len(page["items"]) <= 3
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"j{i}" for i in range(7)]


async def test_body_too_large() -> None:
    async for api in _api(max_body=200):
        status, err = await api.call("POST", "/v1/jobs", {**JOB, "description": "x" * 500})
        assert status == 413 and error(err)[0] == "body_too_large"


async def test_token_required_except_health() -> None:
    async for api in _api(token="s3cret-token"):
        assert (await api.call("GET", "/v1/health"))[0] == 200
        status, err = await api.call("GET", "/v1/jobs")
        assert status == 401 and error(err)[0] == "unauthorized"
        assert (await api.call("GET", "/v1/jobs", Authorization="Bearer wrong"))[0] == 401
        assert (await api.call("GET", "/v1/jobs?token=s3cret-token"))[0] == 401  # never from a query string
        assert (await api.call("GET", "/v1/jobs", Authorization="Bearer s3cret-token"))[0] == 200
        status, _ = await api.call("POST", "/v1/jobs", JOB, Authorization="Bearer s3cret-token")
        assert status == 201 and api.state.jobs["nightly"].actor.endswith("(token)")


async def test_add_and_drain_nodes(api: Api) -> None:
    node = {"id": "n4", "raft": "127.0.0.1:7104", "http": "http://127.0.0.1:8104", "tags": {"zone": "d"}}
    status, added = await api.call("POST", "/v1/nodes", node)
    assert (
        status == 200 and added["id"] == "n4" and added["alive"] is False and added["tags"] == {"zone": "d"}
    )
    assert api.raft.membership == [("add", "127.0.0.1:7104")]
    status, again = await api.call("POST", "/v1/nodes", node)  # idempotent
    assert status == 200
    status, err = await api.call("POST", "/v1/nodes", {**node, "raft": "127.0.0.1:7105"})
    assert status == 409 and error(err) == ("already_exists", "id")
    status, err = await api.call("POST", "/v1/nodes", {**node, "id": "n5"})
    assert status == 409 and error(err) == ("already_exists", "raft")
    for bad, field in (
        ({**node, "raft": "nope"}, "raft"),
        ({**node, "http": "ftp://x"}, "http"),
        ({**node, "id": "-x"}, "id"),
        ({**node, "extra": 1}, "extra"),
        ({**node, "capacity": 0}, "capacity"),
    ):
        status, err = await api.call("POST", "/v1/nodes", bad)
        assert status == 400 and error(err) == ("validation_error", field)
    status, drained = await api.call("DELETE", "/v1/nodes/n4")
    assert status == 202 and drained["draining"] is True
    status, err = await api.call("DELETE", "/v1/nodes/n9")
    assert status == 404 and error(err)[0] == "not_found"


class RemovesIdleNodesAtOnce(MemoryRaft):
    """A leader quicker than the handler: an idle drained node is removed before the handler reads."""

    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]:
        result = await super().propose(data, timeout_s=timeout_s)
        for node in [n for n in self.state.nodes.values() if n.leaving]:
            self.state.apply(encode(CommandType.REMOVE_NODE, {"term": 1, "node": node.id, "now_ms": T0}))
        return result


async def test_a_drained_node_removed_before_the_answer_is_still_202() -> None:
    async for api in _api(raft_type=RemovesIdleNodesAtOnce):
        node = {"id": "n4", "raft": "127.0.0.1:7104", "http": "http://127.0.0.1:8104"}
        assert (await api.call("POST", "/v1/nodes", node))[0] == 200
        status, body = await api.call("DELETE", "/v1/nodes/n4")
        assert status == 202, body
        assert body["id"] == "n4" and body["draining"] and body["leaving"] and body["removed"] is True
        assert "n4" not in api.state.nodes and "n4" in api.state.removed
        status, err = await api.call("DELETE", "/v1/nodes/n4")  # gone: now it is unknown
        assert status == 404 and error(err) == ("not_found", "id")


async def test_times_beyond_what_iso_8601_can_write_are_refused_not_fatal(api: Api) -> None:
    far = {**JOB, "id": "far", "schedule": {"every": 1e8, "start_at": "9999-12-31T00:00:00Z"}}
    status, body = await api.call("POST", "/v1/jobs", far)
    assert status in (201, 400), body
    status, listed = await api.call("GET", "/v1/jobs")
    assert status == 200  # the listing always renders
    status, err = await api.call("POST", "/v1/jobs", {**JOB, "schedule": {"at": "0001-01-01T00:00:00+01:00"}})
    assert status == 400 and error(err)[1] == "schedule.at"


class LaggingRaft(MemoryRaft):
    """A node behind the log: `lag` holds entries committed elsewhere and not yet applied here;
    its own next proposal applies them first (as a commit barrier would)."""

    def __init__(self, state: State) -> None:
        super().__init__(state)
        self.lag: list[bytes] = []

    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]:
        while self.lag:
            self.state.apply(self.lag.pop(0))
        return await super().propose(data, timeout_s=timeout_s)


async def test_a_pause_on_a_node_behind_the_log_still_records_what_no_leader_fired() -> None:
    """A leader fired the first due slot; the node taking the pause has not applied that fire
    yet. Reading the job without a barrier, it offered the range from that slot, which the state
    then refused as stale: the later slots were neither run nor recorded."""
    async for api in _api(raft_type=LaggingRaft):
        state, clock, raft = api.state, api.clock, api.raft
        assert isinstance(raft, LaggingRaft)
        status, job = await api.call("POST", "/v1/jobs", {**JOB, "id": "tick", "schedule": {"every": 1}})
        assert status == 201, job
        clock.advance(5.5)  # slots T+1..T+5 fall due
        first = state.jobs["tick"].next_nominal_ms
        assert first is not None
        raft.lag.append(
            encode(
                CommandType.BEGIN_TERM,
                {
                    "term": 1,
                    "leader": "n1",
                    "now_ms": clock.now_ms(),
                    "history_per_job": 100,
                    "output_tail_bytes": 4096,
                },
            )
        )
        fire = {
            "job_id": "tick",
            "nominal_ms": first,
            "due_ms": first,
            "nodes": ["n1"],
            "next_nominal_ms": first + 1000,
        }
        fire["version"] = state.jobs["tick"].version
        fire["incarnation"] = state.jobs["tick"].incarnation
        raft.lag.append(
            encode(CommandType.FIRE_RUNS, {"term": 1, "now_ms": clock.now_ms(), "fires": [fire], "skips": []})
        )
        status, paused = await api.call("POST", "/v1/jobs/tick/pause")
        assert status == 200 and paused["paused"], paused
        status, runs = await api.call("GET", "/v1/jobs/tick/runs")
        by_state = {r["state"]: r for r in runs["items"]}
        assert by_state["cancelled"]["run_id"] == f"tick@{first}", runs  # the fired one
        assert by_state["missed"]["count"] == 4, runs  # T+2..T+5: recorded, not lost


async def test_a_pause_records_the_slots_no_leader_fired_before_it(api: Api) -> None:
    """Slots due while there was no leader, then a pause before one planned them: missed, with a
    record (they vanished without one)."""
    status, job = await api.call("POST", "/v1/jobs", {**JOB, "id": "tick", "schedule": {"every": 1}})
    assert status == 201, job
    api.clock.advance(5.5)  # five slots fall due, nothing fires them (no scheduler runs here)
    status, paused = await api.call("POST", "/v1/jobs/tick/pause")
    assert status == 200 and paused["paused"], paused
    status, runs = await api.call("GET", "/v1/jobs/tick/runs?state=missed")
    assert status == 200 and len(runs["items"]) == 1, runs
    missed = runs["items"][0]
    assert missed["count"] == 5 and "paused" in missed["reason"], missed
    status, stats = await api.call("GET", "/v1/stats")
    assert stats["jobs"]["tick"]["missed"] == 5
    status, again = await api.call("POST", "/v1/jobs/tick/pause")  # already paused: nothing more
    status, runs = await api.call("GET", "/v1/jobs/tick/runs?state=missed")
    assert len(runs["items"]) == 1 and again["version"] == paused["version"]
