"""Every JSON example in docs/jobs.md is a job that POST /v1/jobs accepts, as the page promises."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot

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
    assert {j["task"]["type"] for j in jobs} == {"shell", "http", "python"} and command_kinds == {
        "list",
        "str",
    }
    for field in ("retries", "timeout", "overlap", "misfire", "delivery", "route", "jitter"):
        assert any(j.get(field) not in (None, 0) for j in jobs), field
    strategies = {j.get("route", {}).get("strategy") for j in jobs}
    assert {"shards", "broadcast"} <= strategies
    assert any("secret" in str(j["task"].get("headers", {})) for j in jobs)


@pytest.mark.parametrize("job", examples(), ids=lambda j: j["id"])
async def test_each_example_is_accepted_by_the_api(client: TestClient, job: dict[str, Any]) -> None:
    # Forced: the page's tags (zone=eu, role=web) are not this test cluster's, and whether a node
    # may run a job is not what the page's examples show.
    resp = await client.post("/v1/jobs?force=true", json=job)
    assert resp.status == 201, await resp.text()
    shown = await resp.json()
    assert shown["id"] == job["id"] and shown["task"]["type"] == job["task"]["type"]
