"""Secrets over the API: references accepted and shown, inline credentials answered as "***",
"***" written back keeps the stored value, and backups redacted unless asked otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot

from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.model import REDACTED, SecretRef
from raftsched.state import State

VALUE = "Bearer s3cr3t-value-Zq81"
HEADERS = {
    "Authorization": VALUE,
    "proxy-authorization": VALUE + "-proxy",
    "Cookie": "sid=" + VALUE,
    "X-Auth-Token": VALUE + "-token",
    "X-API-KEY": VALUE + "-key",
    "X-Ref-Token": {"secret": "TOKEN"},
    "Accept": "application/json",
    "X-Keyboard": "not-sensitive",
}
SHOWN = {
    **dict.fromkeys(
        ("Authorization", "proxy-authorization", "Cookie", "X-Auth-Token", "X-API-KEY"), REDACTED
    ),
    "X-Ref-Token": {"secret": "TOKEN"},
    "Accept": "application/json",
    "X-Keyboard": "not-sensitive",
}


def job(job_id: str = "hook", headers: Any = None, env: Any = None) -> dict[str, Any]:
    task: dict[str, Any] = {"type": "http", "url": "http://127.0.0.1:9/x", "headers": headers or HEADERS}
    if env is not None:
        task = {"type": "shell", "command": ["true"], "env": env}
    return {"id": job_id, "schedule": {"every": 60}, "task": task}


class Api:
    def __init__(self, client: TestClient, state: State) -> None:
        self.client, self.state = client, state

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, bytes]:
        resp = await self.client.request(method, path, json=body)
        raw = await resp.read()
        return resp.status, orjson.loads(raw) if raw else None, raw

    def stored_headers(self, job_id: str = "hook") -> dict[str, Any]:
        return dict(self.state.jobs[job_id].spec.task.headers)


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    async with TestClient(TestServer(make_app(services))) as client:
        yield Api(client, state)


def assert_no_value(raw: bytes) -> None:
    assert b"s3cr3t-value" not in raw


async def test_every_answer_that_shows_a_job_redacts_inline_credentials(api: Api) -> None:
    status, body, raw = await api.call("POST", "/v1/jobs", job())
    assert status == 201 and body["task"]["headers"] == SHOWN
    assert_no_value(raw)
    assert api.stored_headers()["Authorization"] == VALUE  # the state keeps what was written
    assert api.stored_headers()["X-Ref-Token"] == SecretRef("TOKEN")
    for method, path in (
        ("GET", "/v1/jobs/hook"),
        ("GET", "/v1/jobs"),
        ("GET", "/v1/jobs?consistent=true"),
        ("POST", "/v1/jobs/hook/pause"),
        ("POST", "/v1/jobs/hook/resume"),
    ):
        status, body, raw = await api.call(method, path)
        assert status == 200, (method, path, body)
        shown = body["items"][0] if "items" in body else body
        assert shown["task"]["headers"] == SHOWN, (method, path)
        assert_no_value(raw)


async def test_a_put_of_what_get_answered_keeps_the_stored_values(api: Api) -> None:
    await api.call("POST", "/v1/jobs", job())
    _, shown, _ = await api.call("GET", "/v1/jobs/hook")
    shown["description"] = "edited"
    status, body, raw = await api.call("PUT", "/v1/jobs/hook", shown)
    assert status == 200 and body["description"] == "edited" and body["version"] == 2
    assert_no_value(raw)
    assert api.stored_headers() == {**HEADERS, "X-Ref-Token": SecretRef("TOKEN")}
    # A new value replaces the stored one; "***" for one header keeps only that one.
    shown["task"]["headers"]["Authorization"] = "Bearer new"
    assert (await api.call("PUT", "/v1/jobs/hook", shown))[0] == 200
    assert api.stored_headers()["Authorization"] == "Bearer new"
    assert api.stored_headers()["Cookie"] == "sid=" + VALUE


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PUT", "/v1/jobs/hook", job(headers={"X-New-Token": REDACTED}), "task.headers.X-New-Token"),
        # the exact name: a header stored as "Authorization" is not kept for "authorization"
        ("PUT", "/v1/jobs/hook", job(headers={"authorization": REDACTED}), "task.headers.authorization"),
        ("PUT", "/v1/jobs/hook", job(env={"PW": REDACTED}), "task.env.PW"),
        ("POST", "/v1/jobs", job("fresh", headers={"Authorization": REDACTED}), "task.headers.Authorization"),
        (
            "PUT",
            "/v1/jobs/fresh",
            job("fresh", headers={"Authorization": REDACTED}),
            "task.headers.Authorization",
        ),
        ("POST", "/v1/jobs/hook/trigger", {"env": {"PW": REDACTED}}, "env.PW"),
    ],
)
async def test_redacted_value_with_nothing_to_keep_is_400(
    api: Api, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    await api.call("POST", "/v1/jobs", job())
    status, answer, _ = await api.call(method, path, body)
    assert status == 400 and answer["error"]["field"] == field, answer
    assert api.stored_headers()["Authorization"] == VALUE


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"Authorization": {"secret": "not a name"}}, "task.headers.Authorization.secret"),
        ({"Authorization": {"secret": "1X"}}, "task.headers.Authorization.secret"),
        ({"Authorization": {"name": "X"}}, "task.headers.Authorization.name"),
        ({"Authorization": {}}, "task.headers.Authorization.secret"),
        ({"Authorization": ["Bearer s3cr3t-value"]}, "task.headers.Authorization"),
        ({"Authorization": "Bearer s3cr3t-value" + "x" * 5000}, "task.headers.Authorization"),
    ],
)
async def test_references_are_validated_at_creation_and_errors_show_no_value(
    api: Api, headers: dict[str, Any], field: str
) -> None:
    status, answer, raw = await api.call("POST", "/v1/jobs", job(headers=headers))
    assert status == 400 and answer["error"] == {
        **answer["error"],
        "code": "validation_error",
        "field": field,
    }
    assert_no_value(raw)


async def test_env_references_and_trigger_overrides(api: Api) -> None:
    status, body, _ = await api.call("POST", "/v1/jobs", job("sh", env={"PW": {"secret": "DB_PW"}, "A": "1"}))
    assert status == 201 and body["task"]["env"] == {"PW": {"secret": "DB_PW"}, "A": "1"}
    status, run, _ = await api.call("POST", "/v1/jobs/sh/trigger", {"env": {"PW": {"secret": "OTHER"}}})
    assert status == 201
    assert api.state.runs[run["run_id"]].env == {"PW": {"secret": "OTHER"}}
    status, err, _ = await api.call("POST", "/v1/jobs/sh/trigger", {"env": {"PW": {"secret": "1"}}})
    assert status == 400 and err["error"]["field"] == "env.PW.secret"


async def test_backups_are_redacted_unless_asked_and_restore_keeps_stored_values(api: Api) -> None:
    await api.call("POST", "/v1/jobs", job())
    status, doc, raw = await api.call("GET", "/v1/backup")
    assert status == 200 and doc["redacted"] is True
    assert doc["jobs"][0]["spec"]["task"]["headers"] == SHOWN
    assert_no_value(raw)
    status, full, raw = await api.call("GET", "/v1/backup?secrets=true")
    assert full["redacted"] is False and full["jobs"][0]["spec"]["task"]["headers"]["Authorization"] == VALUE
    # The redacted backup restores onto the cluster that has the job: "***" keeps its values.
    status, plan, _ = await api.call("POST", "/v1/restore", doc)
    assert status == 200 and plan["unchanged"] == ["hook"], plan
    # A restore that must create the job cannot: "***" stands for nothing there.
    assert (await api.call("DELETE", "/v1/jobs/hook"))[0] == 204
    status, err, _ = await api.call("POST", "/v1/restore?dry_run=true", doc)
    assert status == 400 and err["error"]["field"] == "jobs.0.spec.task.headers.Authorization"
    status, plan, _ = await api.call("POST", "/v1/restore", full)
    assert status == 200 and plan["created"] == ["hook"]
    assert api.stored_headers()["Authorization"] == VALUE


async def test_openapi_documents_secret_values_and_the_backup_flag(api: Api) -> None:
    _, doc, _ = await api.call("GET", "/v1/openapi.json")
    schemas = doc["components"]["schemas"]
    assert schemas["SecretValue"]["properties"]["secret"]["pattern"] == "^[A-Za-z_][A-Za-z0-9_]*$"
    assert schemas["HttpTask"]["properties"]["headers"]["additionalProperties"] == {
        "$ref": "#/components/schemas/SecretValue"
    }
    params = doc["paths"]["/v1/backup"]["get"]["parameters"]
    assert any(p.get("$ref", "").endswith("/WithSecrets") or p.get("name") == "secrets" for p in params)
