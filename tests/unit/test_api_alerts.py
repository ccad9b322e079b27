"""The alert API: channels (secret names only, refused when no live node can deliver), the
cluster's rules, a job's notify rules (unknown channel: 422 unless forced), the version gate."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot, raise_cluster_version, register

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.state import State

HOOK = {"type": "webhook", "url": "http://10.0.0.5/hook", "signing_secret": {"secret": "HOOK_KEY"}}
POLICY = {"http_allow": ["10.0.0.0/8"], "secrets": ["HOOK_KEY"], "brokers": []}


async def client_for(version: int) -> TestClient:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    if version > 1:
        raise_cluster_version(state, clock)
    register(state, clock, "n1", policy=POLICY)  # after: raising the version registers again
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    client = TestClient(TestServer(make_app(services)))
    await client.start_server()
    return client


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    c = await client_for(2)
    yield c
    await c.close()


async def test_channels_are_created_listed_and_deleted(client: TestClient) -> None:
    resp = await client.put("/v1/channels/ops", json=HOOK)
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["signing_secret"] == {"secret": "HOOK_KEY"}
    assert (await client.put("/v1/channels/ops", json={**HOOK, "format": "slack"})).status == 200
    listed = await (await client.get("/v1/channels")).json()
    assert [(c["name"], c["format"]) for c in listed["items"]] == [("ops", "slack")]
    assert (await client.delete("/v1/channels/ops")).status == 204
    assert (await client.get("/v1/channels/ops")).status == 404


async def test_a_channel_no_node_can_deliver_is_refused_unless_forced(client: TestClient) -> None:
    for body, field in (
        ({**HOOK, "url": "http://127.0.0.1:9/x"}, "url"),
        ({**HOOK, "signing_secret": {"secret": "OTHER"}}, "signing_secret"),
        ({"type": "message", "broker": "events", "to": "alerts"}, "broker"),
    ):
        resp = await client.put("/v1/channels/x", json=body)
        error = (await resp.json())["error"]
        assert (resp.status, error["code"], error["field"]) == (422, "no_eligible_node", field)
    assert (
        await client.put("/v1/channels/x?force=true", json={**HOOK, "url": "http://127.0.0.1:9/x"})
    ).status == 201


async def test_a_secret_value_is_never_accepted(client: TestClient) -> None:
    resp = await client.put("/v1/channels/ops", json={**HOOK, "signing_secret": "plain-value"})
    assert resp.status == 400 and "plain-value" not in await resp.text()


async def test_rules_and_job_notify_name_existing_channels(client: TestClient) -> None:
    rules = {"rules": [{"on": ["node_down"], "channel": "ops"}], "cluster": "prod"}
    resp = await client.put("/v1/alerts/rules", json=rules)
    assert resp.status == 422 and (await resp.json())["error"]["field"] == "rules.0.channel"
    assert (await client.put("/v1/channels/ops", json=HOOK)).status == 201
    assert await (await client.put("/v1/alerts/rules", json=rules)).json() == {
        "cluster": "prod",
        "rules": [{"on": ["node_down"], "channel": "ops"}],
    }
    job = {
        "id": "j",
        "schedule": {"every": 60},
        "task": {"type": "shell", "command": ["true"]},
        "notify": [{"on": ["failed"], "channel": "nope"}],
    }
    resp = await client.post("/v1/jobs", json=job)
    assert (resp.status, (await resp.json())["error"]["code"]) == (422, "unknown_channel")
    resp = await client.post("/v1/jobs", json={**job, "notify": [{"on": ["failed"], "channel": "ops"}]})
    assert resp.status == 201 and (await resp.json())["notify"] == [{"on": ["failed"], "channel": "ops"}]
    assert (await client.post("/v1/jobs?force=true", json={**job, "id": "k"})).status == 201
    assert (await (await client.get("/v1/alerts")).json()) == {"items": [], "next_cursor": None}


async def test_alert_writes_wait_for_the_clusters_version_2() -> None:
    client = await client_for(1)
    try:
        resp = await client.put("/v1/channels/ops", json=HOOK)
        assert (resp.status, (await resp.json())["error"]["code"]) == (503, "unavailable")
    finally:
        await client.close()
