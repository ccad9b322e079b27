"""Over the API: jobs no live node may run are 422 `no_eligible_node` (create, PUT, trigger) unless
`?force=true`; a manual trigger of broadcast and shards runs on every node / every shard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot, raise_cluster_version, register

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.state import State

STRICT = {"run_tasks": True, "allow_shell": False, "command_allow": [], "python_allow": [], "http_allow": []}
SHELL = {"id": "sh", "schedule": {"every": 60}, "task": {"type": "shell", "command": "echo hi"}}


class Api:
    def __init__(self, client: TestClient, state: State, clock: FakeClock) -> None:
        self.client, self.state, self.clock = client, state, clock

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        resp = await self.client.request(method, path, json=body)
        return resp.status, await resp.json() if resp.content_type == "application/json" else None

    def register(self, node_id: str, **policy: Any) -> None:
        register(self.state, self.clock, node_id, policy={**STRICT, **policy})


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)  # n1 publishes no policy: unknown, it refuses nothing
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    async with TestClient(TestServer(make_app(services))) as client:
        a = Api(client, state, clock)
        a.register("n1")  # from now on n1 publishes: no shell strings
        yield a


def refused(body: Any) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["field"]


async def test_create_is_refused_with_the_field_and_the_reason_unless_forced(api: Api) -> None:
    status, body = await api.call("POST", "/v1/jobs", SHELL)
    assert status == 422 and refused(body) == ("no_eligible_node", "task.command")
    assert body["error"]["message"] == "no node allows a shell string: allow_shell"
    assert "sh" not in api.state.jobs
    status, body = await api.call("POST", "/v1/jobs?force=true", SHELL)
    assert status == 201 and body["id"] == "sh"
    status, body = await api.call("POST", "/v1/jobs?force=maybe", {**SHELL, "id": "sh2"})
    assert status == 400 and refused(body) == ("validation_error", "force")


async def test_one_node_that_allows_it_is_enough(api: Api) -> None:
    api.register("n2", allow_shell=True)
    assert (await api.call("POST", "/v1/jobs", SHELL))[0] == 201


async def test_each_field_names_what_no_node_allows(api: Api) -> None:
    cases = [
        ({"type": "http", "url": "http://127.0.0.1:9/"}, "task.url", "no node allows 127.0.0.1: http_allow"),
        ({"type": "python", "callable": "os:system"}, "task.callable", "no node allows os: python_allow"),
    ]
    api.register("n1", command_allow=["/usr/bin"])
    cases.append(
        ({"type": "shell", "command": ["/opt/x"]}, "task.command.0", "no node allows /opt/x: command_allow")
    )
    for task, field, message in cases:
        status, body = await api.call(
            "POST", "/v1/jobs", {"id": "j", "schedule": {"every": 60}, "task": task}
        )
        assert (status, refused(body), body["error"]["message"]) == (
            422,
            ("no_eligible_node", field),
            message,
        )
    status, body = await api.call("POST", "/v1/jobs", {**SHELL, "route": {"tags": {"zone": "x"}}})
    assert (status, refused(body)) == (422, ("no_eligible_node", "route.tags"))
    assert body["error"]["message"] == "no live node has zone=x"


async def test_put_is_judged_when_it_changes_where_the_job_may_run(api: Api) -> None:
    status, body = await api.call("PUT", "/v1/jobs/sh", SHELL)
    assert status == 422 and refused(body) == ("no_eligible_node", "task.command")
    assert (await api.call("PUT", "/v1/jobs/sh?force=true", SHELL))[0] == 201
    # The same task and route: not judged again (a pause, a new schedule).
    status, body = await api.call("PUT", "/v1/jobs/sh", {**SHELL, "schedule": {"every": 30}, "paused": True})
    assert status == 200 and body["paused"] is True
    status, body = await api.call("PUT", "/v1/jobs/sh", {**SHELL, "task": {"type": "shell", "command": "ls"}})
    assert status == 422 and refused(body) == ("no_eligible_node", "task.command")


async def test_a_manual_trigger_is_judged_too(api: Api) -> None:
    assert (await api.call("POST", "/v1/jobs?force=true", SHELL))[0] == 201
    status, body = await api.call("POST", "/v1/jobs/sh/trigger")
    assert status == 422 and refused(body) == ("no_eligible_node", "task.command")
    status, run = await api.call("POST", "/v1/jobs/sh/trigger?force=true")
    assert (
        status == 201
        and run["run_id"] == f"sh@manual-{T0}"
        and [r["run_id"] for r in run["runs"]] == [run["run_id"]]
    )


async def test_a_manual_trigger_runs_on_a_node_that_may_run_it(api: Api) -> None:
    for node_id in ("n2", "n3"):
        api.register(node_id, allow_shell=node_id == "n3")
    assert (await api.call("POST", "/v1/jobs", SHELL))[0] == 201
    for _ in range(3):
        api.clock.advance(1)
        status, run = await api.call("POST", "/v1/jobs/sh/trigger")
        assert status == 201 and run["node"] == "n3"
    broadcast = {**SHELL, "id": "all", "route": {"strategy": "broadcast"}}
    assert (await api.call("POST", "/v1/jobs", broadcast))[0] == 201
    status, run = await api.call("POST", "/v1/jobs/all/trigger")
    assert status == 201 and [r["node"] for r in run["runs"]] == ["n3"]


async def test_nodes_show_what_they_publish(api: Api) -> None:
    api.register("n2", allow_shell=True, secrets=["B", "A"])
    status, body = await api.call("GET", "/v1/nodes")
    policies = {n["id"]: n["policy"] for n in body["items"]}
    assert policies["n1"] == {**STRICT}
    assert policies["n2"] == {**STRICT, "allow_shell": True, "secrets": ["A", "B"]}


async def test_a_version_1_cluster_triggers_one_run_even_for_broadcast(api: Api) -> None:
    """Until every member applies a trigger's `nodes`, a manual trigger is one run, as it was:
    an older node would make one run where newer ones made several."""
    for node_id in ("n2", "n3"):
        api.register(node_id)
    job = {"id": "b", "schedule": {"every": 60}, "task": {"type": "shell", "command": ["true"]}}
    job["route"] = {"strategy": "broadcast"}
    assert (await api.call("POST", "/v1/jobs", job))[0] == 201
    status, first = await api.call("POST", "/v1/jobs/b/trigger")
    assert status == 201 and len(first["runs"]) == 1 and first["run_id"] == f"b@manual-{T0}"


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"strategy": "broadcast"}, 3),
        ({"strategy": "shards", "shards": 5}, 5),
        ({"strategy": "least_loaded"}, 1),
    ],
)
async def test_a_manual_trigger_of_broadcast_and_shards_runs_each(
    api: Api, route: dict[str, Any], expected: int
) -> None:
    for node_id in ("n2", "n3"):
        api.register(node_id)
    raise_cluster_version(api.state, api.clock)  # one run per node or shard: version 2's trigger
    job = {
        "id": "b",
        "schedule": {"every": 60},
        "task": {"type": "shell", "command": ["true"]},
        "route": route,
    }
    assert (await api.call("POST", "/v1/jobs", job))[0] == 201
    status, first = await api.call("POST", "/v1/jobs/b/trigger")
    assert status == 201
    runs = first.pop("runs")
    assert runs[0] == first and len(runs) == expected
    if expected == 1:
        assert first["run_id"] == f"b@manual-{T0}" and (first["shard"], first["shards"]) == (0, 1)
        return
    assert [r["run_id"] for r in runs] == [f"b@manual-{T0}~{i}" for i in range(expected)]
    assert [(r["shard"], r["shards"], r["manual"]) for r in runs] == [
        (i, expected, True) for i in range(expected)
    ]
    if route["strategy"] == "broadcast":
        assert sorted(r["node"] for r in runs) == ["n1", "n2", "n3"]
    stats = (await api.call("GET", "/v1/stats"))[1]
    assert stats["jobs"]["b"]["fired"] == 0  # manual triggers are not fired slots
