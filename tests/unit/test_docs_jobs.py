"""Every JSON example in docs/jobs.md is a job that POST /v1/jobs accepts, as the page promises."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot, register

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.state import State

DOC = Path(__file__).resolve().parents[2] / "docs" / "jobs.md"
BLOCK = re.compile(r"^```json\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples() -> list[Any]:
    return [orjson.loads(block) for block in BLOCK.findall(DOC.read_text())]


@pytest.fixture
async def client() -> AsyncIterator[TestClient]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    async with TestClient(TestServer(make_app(services))) as c:
        yield c


def test_the_page_has_an_example_of_each_task_type_and_policy() -> None:
    jobs = examples()
    assert len(jobs) >= 15
    command_kinds = {type(j["task"].get("command")).__name__ for j in jobs if j["task"]["type"] == "shell"}
    assert {j["task"]["type"] for j in jobs} == {"shell", "http", "python", "message"} and command_kinds == {
        "list",
        "str",
    }
    for field in ("retries", "timeout", "overlap", "misfire", "delivery", "route", "jitter"):
        assert any(j.get(field) not in (None, 0) for j in jobs), field
    strategies = {j.get("route", {}).get("strategy") for j in jobs}
    assert {"shards", "broadcast"} <= strategies
    assert any("secret" in str(j["task"].get("headers", {})) for j in jobs)


def test_the_page_has_a_message_example_per_broker_kind_and_redis_mode() -> None:
    """One per broker the page names (events: Redis, rabbit, iot: MQTT, nats), each with its options."""
    tasks = [j["task"] for j in examples() if j["task"]["type"] == "message"]
    assert {t["broker"] for t in tasks} == {"events", "rabbit", "iot", "nats"}
    assert {t.get("options", {}).get("mode", "stream") for t in tasks if t["broker"] == "events"} == {
        "stream",
        "list",
    }
    assert any(":" in t["to"] for t in tasks if t["broker"] == "rabbit")
    assert any(t.get("options", {}).get("qos") == 2 for t in tasks if t["broker"] == "iot")
    assert any(isinstance(t["body"], str) for t in tasks) and any("{{" in str(t["body"]) for t in tasks)


async def test_message_examples_need_a_node_with_their_broker() -> None:
    """Without `force`, a broker that no live node publishes is refused, naming the field; once the
    node publishes the page's brokers (as a node does from its [broker NAME] sections), every
    message example is accepted as it is."""
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    policy = {
        "run_tasks": True,
        "allow_shell": False,
        "command_allow": [],
        "python_allow": [],
        "http_allow": [],
    }
    register(state, clock, "n1", policy={**policy, "brokers": []})
    jobs = [j for j in examples() if j["task"]["type"] == "message"]
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    async with TestClient(TestServer(make_app(services))) as client:
        resp = await client.post("/v1/jobs", json=jobs[0])
        assert resp.status == 422, await resp.text()
        assert (await resp.json())["error"]["field"] == "task.broker"
        brokers = sorted({j["task"]["broker"] for j in jobs})
        for job in jobs:
            # The RabbitMQ example's header names a secret: the node has it, by name only.
            secrets = [h["secret"] for h in job["task"].get("headers", {}).values() if isinstance(h, dict)]
            register(state, clock, "n1", policy={**policy, "brokers": brokers, "secrets": secrets})
            resp = await client.post("/v1/jobs", json=job)
            assert resp.status == 201, await resp.text()


@pytest.mark.parametrize("job", examples(), ids=lambda j: j["id"])
async def test_each_example_is_accepted_by_the_api(client: TestClient, job: dict[str, Any]) -> None:
    # Forced: the page's tags (zone=eu, role=web) are not this test cluster's, and whether a node
    # may run a job is not what the page's examples show.
    resp = await client.post("/v1/jobs?force=true", json=job)
    assert resp.status == 201, await resp.text()
    shown = await resp.json()
    assert shown["id"] == job["id"] and shown["task"]["type"] == job["task"]["type"]
