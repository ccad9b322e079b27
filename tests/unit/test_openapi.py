"""The OpenAPI description: valid, complete against the app's routes both ways, built from the schemas
the handlers validate with, and matched by what the handlers answer (on a real State)."""

from __future__ import annotations

import copy
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi

from raftsched.api import schemas
from raftsched.api.app import Services, make_app
from raftsched.api.openapi import OPERATIONS, build_openapi, registered_operations
from raftsched.clock import FakeClock
from raftsched.errors import ValidationError
from raftsched.model import JobSpec
from raftsched.state import State
from raftsched.triggers import check_schedule

# API.md's example job, verbatim.
EXAMPLE_JOB: dict[str, Any] = {
    "id": "nightly-report",
    "schedule": {"cron": "*/5 * * * * *", "timezone": "Europe/Berlin"},
    "task": {"type": "shell", "command": ["python3", "report.py"], "env": {}, "cwd": None},
    "timeout": 60,
    "retries": {"max": 3, "initial_delay": 1, "backoff": 2.0, "max_delay": 60, "jitter": 0.1},
    "delivery": "at_least_once",
    "overlap": "forbid",
    "misfire": {"policy": "fire_once", "grace": 60, "max_catchup": 10},
    "route": {"strategy": "least_loaded", "tags": {"zone": "a"}},
    "jitter": 0,
    "paused": False,
    "description": "",
    "labels": {},
}


def _services(state: State | None = None, clock: FakeClock | None = None) -> Services:
    state, clock = state or State(), clock or FakeClock(T0)
    return Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)


def _documented() -> set[tuple[str, str]]:
    return {(op.method, op.path) for op in OPERATIONS}


# ---------------------------------------------------------------- the document


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = build_openapi()
    validate_openapi(doc)
    assert doc["openapi"].startswith("3.1.")
    assert doc["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": doc["components"]["securitySchemes"]["bearer"]["description"],
    }
    # A document for part of the routes (as a node serves it) is valid too: no dangling links.
    validate_openapi(build_openapi({("POST", "/v1/jobs"), ("GET", "/v1/jobs/{id}")}))


def test_the_schemas_are_valid_json_schemas() -> None:
    schemas.check_schemas()
    for name in schemas.SCHEMAS:
        Draft202012Validator.check_schema(schemas.SCHEMAS[name])


def test_the_document_publishes_the_validators_schemas() -> None:
    doc = build_openapi()
    assert doc["components"]["schemas"] is schemas.SCHEMAS
    post = doc["paths"]["/v1/jobs"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == schemas.ref("JobCreate")
    put = doc["paths"]["/v1/jobs/{id}"]["put"]
    assert put["requestBody"]["content"]["application/json"]["schema"] == schemas.ref("JobReplace")
    trigger = doc["paths"]["/v1/jobs/{id}/trigger"]["post"]
    assert trigger["requestBody"]["required"] is False
    assert trigger["requestBody"]["content"]["application/json"]["schema"] == schemas.ref("TriggerBody")


def test_operations_are_unique() -> None:
    assert len(_documented()) == len(OPERATIONS)
    assert len({op.operation_id for op in OPERATIONS}) == len(OPERATIONS)


def test_parameters_headers_and_security() -> None:
    doc = build_openapi()
    params = doc["components"]["parameters"]

    def names(method: str, path: str) -> set[str]:
        refs = doc["paths"][path][method].get("parameters", [])
        return {params[r["$ref"].rsplit("/", 1)[1]]["name"] for r in refs}

    assert names("get", "/v1/jobs") == {"consistent", "tag", "paused", "limit", "cursor"}
    assert names("get", "/v1/runs") == {"consistent", "state", "node", "job", "limit", "cursor"}
    assert names("get", "/v1/jobs/{id}/runs") == {"id", "consistent", "state", "limit", "cursor"}
    assert names("put", "/v1/jobs/{id}") == {"id", "If-Match", "force", "Idempotency-Key"}
    assert names("post", "/v1/jobs") == {"force", "Idempotency-Key"}
    assert names("post", "/v1/jobs/{id}/trigger") == {"id", "force", "Idempotency-Key"}
    assert params["Limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert set(params["RunStateFilter"]["schema"]["enum"]) >= {"pending", "skipped", "missed"}
    for op in OPERATIONS:
        entry = doc["paths"][op.path][op.method.lower()]
        writes = op.method != "GET" and op.path not in ("/v1/health",)
        if writes:
            assert "Idempotency-Key" in names(op.method.lower(), op.path), op
        if op.public:
            assert entry["security"] == [] and "401" not in entry["responses"], op
        else:
            assert "security" not in entry and "401" in entry["responses"], op
    assert doc["security"] == [{"bearer": []}]
    health = doc["paths"]["/v1/health"]["get"]["responses"]
    assert set(health) == {"200", "503"}
    assert doc["paths"]["/v1/jobs"]["post"]["responses"]["503"]["headers"]["Retry-After"]
    non_json = {
        ("GET", "/metrics"): "text/plain",
        ("GET", "/"): "text/html",
        ("GET", "/v1/runs/{run_id}/output"): "text/plain",
    }
    for (method, path), media in non_json.items():
        responses = doc["paths"][path][method.lower()]["responses"]
        assert list(responses["200"]["content"]) == [media]
    output = doc["paths"]["/v1/runs/{run_id}/output"]["get"]["responses"]
    assert set(output) == {"200", "400", "401", "404", "503"}


# ---------------------------------------------------------------- the document against the routes


def test_every_route_of_the_app_is_documented() -> None:
    registered = registered_operations(make_app(_services()))
    assert registered, "no routes?"
    assert registered - _documented() == set(), "routes missing from openapi.OPERATIONS"


@pytest.mark.parametrize("module", sorted({op.module for op in OPERATIONS}))
def test_each_route_module_registers_what_the_table_says(module: str) -> None:
    app = web.Application()
    importlib.import_module(f"raftsched.api.{module}").add_routes(app)
    registered = registered_operations(app)
    if not registered:
        pytest.skip(f"raftsched.api.{module} registers no routes yet")
    assert registered == {(op.method, op.path) for op in OPERATIONS if op.module == module}


async def test_the_served_document_lists_exactly_the_registered_routes() -> None:
    app = make_app(_services())
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/v1/openapi.json")
        assert resp.status == 200 and resp.content_type == "application/json"
        doc = await resp.json()
    validate_openapi(doc)
    served = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}
    assert served == registered_operations(app) & _documented()


# ---------------------------------------------------------------- the job schema


def test_the_example_job_is_accepted_by_the_schema_and_the_model() -> None:
    schemas.validate("JobCreate", EXAMPLE_JOB)
    spec = JobSpec.from_dict(EXAMPLE_JOB)
    check_schedule(spec.schedule)
    without_id = {k: v for k, v in EXAMPLE_JOB.items() if k != "id"}
    schemas.validate("JobReplace", without_id)
    with pytest.raises(ValidationError) as err:
        schemas.validate("JobCreate", without_id)
    assert err.value.field == "id"


Mutation = Callable[[dict[str, Any]], None]


def _reject(mutate: Mutation, schema: str = "JobCreate") -> ValidationError:
    body = copy.deepcopy(EXAMPLE_JOB)
    mutate(body)
    with pytest.raises(ValidationError) as err:
        schemas.validate(schema, body)
    return err.value


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b.update(bogus=1), "bogus"),
        (lambda b: b["task"].update(bogus=1), "task.bogus"),
        (lambda b: b["schedule"].update(bogus=1), "schedule.bogus"),
        (lambda b: b["retries"].update(bogus=1), "retries.bogus"),
        (lambda b: b["misfire"].update(bogus=1), "misfire.bogus"),
        (lambda b: b["route"].update(bogus=1), "route.bogus"),
        # a field of another task type is unknown to this one
        (lambda b: b["task"].update(url="http://x"), "task.url"),
    ],
)
def test_unknown_fields_are_named_by_their_own_path(mutate: Mutation, field: str) -> None:
    err = _reject(mutate)
    assert err.field == field and err.code == "validation_error"
    assert err.message == f"unknown field {field.rsplit('.', 1)[-1]!r}"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda b: b["task"].update(command=["python3", "report.py", 3]), "task.command.2"),
        (lambda b: b["task"].update(command=[]), "task.command"),
        (lambda b: b["task"].update(env={"A": 1}), "task.env.A"),
        (
            lambda b: b.update(task={"type": "http", "url": "http://x", "expect_status": [200, "2xx"]}),
            "task.expect_status.1",
        ),
        (lambda b: b.update(task={"type": "http", "url": "ftp://x"}), "task.url"),
        (lambda b: b.update(task={"type": "http"}), "task.url"),
        (lambda b: b.update(task={"type": "python", "callable": "no colon"}), "task.callable"),
        (lambda b: b.update(task={"command": ["x"]}), "task.type"),
        (lambda b: b["task"].update(type="cobol"), "task.type"),
        (lambda b: b["labels"].update(team=["a"]), "labels.team"),
        (lambda b: b["route"]["tags"].update(zone=None), "route.tags.zone"),
        (lambda b: b.pop("schedule"), "schedule"),
        (lambda b: b.update(schedule={"cron": "* * * * *", "every": 5}), "schedule"),
        (lambda b: b.update(schedule={"every": 0.01}), "schedule.every"),
        (lambda b: b.update(id="-bad"), "id"),
        (lambda b: b.update(timeout=-1), "timeout"),
        (lambda b: b["retries"].update(max=1001), "retries.max"),
        (lambda b: b.update(delivery="exactly_once"), "delivery"),
        (lambda b: b.update(paused="yes"), "paused"),
    ],
)
def test_errors_name_the_dotted_field(mutate: Mutation, field: str) -> None:
    assert _reject(mutate).field == field


def test_a_non_object_body_is_an_error_without_a_field() -> None:
    for body in ([], "job", 3, None):
        with pytest.raises(ValidationError) as err:
            schemas.validate("JobCreate", body)
        assert err.value.field is None
    with pytest.raises(ValidationError):
        schemas.validate("TriggerBody", [])


def test_read_only_fields_are_allowed_and_the_rest_is_not() -> None:
    body = {**EXAMPLE_JOB, **dict.fromkeys(schemas.JOB_READ_ONLY, "anything")}
    schemas.validate("JobReplace", body)
    assert _reject(lambda b: b.update(updated_by_me=1), "JobReplace").field == "updated_by_me"


# ---------------------------------------------------------------- the handlers: validation, then answers


class Api:
    def __init__(self, client: TestClient, doc: dict[str, Any]) -> None:
        self.client, self.doc = client, doc
        self.seen: set[tuple[str, str, int]] = set()

    async def call(self, method: str, path: str, template: str, body: Any = None, **headers: str) -> Any:
        """Call, then check the answer against the document: status, media type, body schema."""
        kwargs: dict[str, Any] = {"headers": headers}
        if body is not None:
            kwargs["json"] = body
        resp = await self.client.request(method, path, **kwargs)
        responses = self.doc["paths"][template][method.lower()]["responses"]
        assert str(resp.status) in responses, (method, path, resp.status, await resp.text())
        documented = responses[str(resp.status)]
        self.seen.add((method, template, resp.status))
        if "content" not in documented:
            assert not await resp.read()
            return None
        assert resp.content_type in documented["content"], (method, path, resp.content_type)
        if resp.content_type != "application/json":
            return await resp.text()
        data = await resp.json()
        schema = documented["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schemas.validator(schema["$ref"].rsplit("/", 1)[1]).validate(data)
        for header in documented.get("headers", {}):
            assert header in resp.headers, (method, path, header)
        return data


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    async with TestClient(TestServer(make_app(_services(state, clock)))) as client:
        yield Api(client, build_openapi())


async def test_handlers_validate_bodies_with_the_schema(api: Api) -> None:
    bad = {**EXAMPLE_JOB, "task": {"type": "shell", "command": ["a", "b", 3]}}
    err = await api.call("POST", "/v1/jobs", "/v1/jobs", bad)
    assert err["error"] == {
        "code": "validation_error",
        "message": "3 is not of type 'string'",
        "field": "task.command.2",
    }
    err = await api.call("PUT", "/v1/jobs/j", "/v1/jobs/{id}", {**EXAMPLE_JOB, "id": "j", "nope": {}})
    assert err["error"]["field"] == "nope"
    await api.call("POST", "/v1/jobs", "/v1/jobs", {**EXAMPLE_JOB, "id": "j"})
    err = await api.call("POST", "/v1/jobs/j/trigger", "/v1/jobs/{id}/trigger", {"env": {"A": 1}})
    assert err["error"]["field"] == "env.A"
    err = await api.call("POST", "/v1/jobs/j/trigger", "/v1/jobs/{id}/trigger", {"bogus": 1})
    assert err["error"]["field"] == "bogus"
    err = await api.call("POST", "/v1/jobs/j/trigger", "/v1/jobs/{id}/trigger", ["x"])
    assert err["error"]["code"] == "validation_error" and err["error"]["field"] is None
    # The semantic checks still run after the schema: a cron that croniter refuses.
    err = await api.call("POST", "/v1/jobs", "/v1/jobs", {**EXAMPLE_JOB, "schedule": {"cron": "61 * * * *"}})
    assert err["error"]["field"] == "schedule.cron"


async def test_every_answer_matches_its_documented_schema(api: Api) -> None:
    job_path = "/v1/jobs/{id}"
    await api.call("GET", "/v1/health", "/v1/health")
    await api.call("GET", "/v1/status", "/v1/status")
    await api.call("GET", "/v1/nodes", "/v1/nodes")
    for job in (
        EXAMPLE_JOB,
        {
            "id": "every",
            "schedule": {"every": 0.5, "start_at": "2027-01-01T00:00:00+01:00"},
            "task": {"type": "python", "callable": "pkg.mod:f", "kwargs": {"a": [1]}},
        },
        {
            "id": "once",
            "schedule": {"at": "2027-06-01T00:00:00Z"},
            "task": {
                "type": "http",
                "url": "http://127.0.0.1:9/x",
                "expect_status": [200, "300-399"],
                "body": {"k": 1},
            },
            "route": {"strategy": "shards", "shards": 3},
            "timeout": None,
        },
    ):
        created = await api.call("POST", "/v1/jobs", "/v1/jobs", job, **{"Idempotency-Key": job["id"]})
        assert created["version"] == 1
        # The same key again answers the same; the same key with another body is 422.
        again = await api.call("POST", "/v1/jobs", "/v1/jobs", job, **{"Idempotency-Key": job["id"]})
        assert again["id"] == created["id"]
        await api.call(
            "POST", "/v1/jobs", "/v1/jobs", {**job, "description": "x"}, **{"Idempotency-Key": job["id"]}
        )
    await api.call("POST", "/v1/jobs", "/v1/jobs", EXAMPLE_JOB)  # 409
    got = await api.call("GET", "/v1/jobs/nightly-report?consistent=true", job_path)
    replaced = await api.call("PUT", "/v1/jobs/nightly-report", job_path, got, **{"If-Match": '"1"'})
    assert replaced["version"] == 2
    await api.call("PUT", "/v1/jobs/nightly-report", job_path, got, **{"If-Match": "1"})  # 412
    await api.call(
        "PUT", "/v1/jobs/new", job_path, {k: v for k, v in EXAMPLE_JOB.items() if k != "id"}
    )  # 201
    await api.call("GET", "/v1/jobs?limit=2", "/v1/jobs")
    await api.call("GET", "/v1/jobs?tag=zone=a&paused=false", "/v1/jobs")
    await api.call("GET", "/v1/jobs?limit=0", "/v1/jobs")  # 400
    await api.call("POST", "/v1/jobs/every/pause", job_path + "/pause")
    await api.call("POST", "/v1/jobs/every/resume", job_path + "/resume")
    run = await api.call("POST", "/v1/jobs/once/trigger", job_path + "/trigger", {"env": {"A": "1"}})
    await api.call("POST", "/v1/jobs/every/trigger", job_path + "/trigger")  # no body
    await api.call("GET", "/v1/jobs/once/runs?state=pending", job_path + "/runs")
    await api.call("GET", "/v1/runs?job=once&node=n1", "/v1/runs")
    await api.call("GET", f"/v1/runs/{run['run_id']}", "/v1/runs/{run_id}")
    cancelled = await api.call("POST", f"/v1/runs/{run['run_id']}/cancel", "/v1/runs/{run_id}/cancel")
    assert cancelled["state"] == "cancelled"
    await api.call("GET", "/v1/stats", "/v1/stats")
    await api.call("GET", "/v1/runs/nope@1", "/v1/runs/{run_id}")  # 404
    await api.call("DELETE", "/v1/jobs/once", job_path)
    await api.call("DELETE", "/v1/jobs/once", job_path)  # 404
    await api.call("GET", "/v1/openapi.json", "/v1/openapi.json")
    # Membership and backup.
    backup = await api.call("GET", "/v1/backup?runs=true", "/v1/backup")
    assert {j["spec"]["id"] for j in backup["jobs"]} == {"nightly-report", "every", "new"}
    await api.call("DELETE", "/v1/jobs/every", job_path)
    plan = await api.call("POST", "/v1/restore?dry_run=true", "/v1/restore", backup)
    assert plan["created"] == ["every"] and plan["dry_run"]
    assert (await api.call("POST", "/v1/restore", "/v1/restore", backup))["created"] == ["every"]
    await api.call("POST", "/v1/restore", "/v1/restore", {"format": "zip"})  # 400
    node = {"id": "n2", "raft": "127.0.0.1:7102", "http": "http://127.0.0.1:8102", "tags": {"zone": "b"}}
    added = await api.call("POST", "/v1/nodes", "/v1/nodes", node)
    assert added["id"] == "n2" and not added["alive"]
    await api.call("POST", "/v1/nodes", "/v1/nodes", {**node, "id": "n3"})  # 409: the raft address is taken
    await api.call("POST", "/v1/nodes", "/v1/nodes", {**node, "bogus": 1})  # 400
    removing = await api.call("DELETE", "/v1/nodes/n2", "/v1/nodes/{id}")
    assert removing["draining"] and removing["leaving"]
    await api.call("DELETE", "/v1/nodes/nope", "/v1/nodes/{id}")  # 404
    statuses = {status for _, _, status in api.seen}
    assert statuses >= {200, 201, 202, 204, 400, 404, 409, 412, 422}


# ---------------------------------------------------------------- bugs found while fuzzing


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        # Rendering the first slot (year 10002) raised in the view: a 500 on the create, and on
        # every later GET /v1/jobs while the job existed.
        ({"every": 100_000_000, "start_at": "9999-12-31T23:59:59Z"}, "schedule.start_at"),
        # In UTC these are in the years 0 and 10000, which model.iso_ms cannot render: a 500.
        ({"at": "0001-01-01T00:00:00+01:00"}, "schedule.at"),
        ({"at": "9999-12-31T23:59:59-01:00"}, "schedule.at"),
        # Rendered as '1-01-01T00:00:00.000Z', which the state then refused to parse back.
        ({"every": 1, "end_at": "0001-01-01T00:00:00Z"}, "schedule.end_at"),
    ],
)
async def test_times_outside_the_renderable_years_are_a_400(
    api: Api, schedule: dict[str, Any], field: str
) -> None:
    err = await api.call("POST", "/v1/jobs", "/v1/jobs", {**EXAMPLE_JOB, "schedule": schedule})
    assert err["error"]["field"] == field
    assert (
        err["error"]["message"] == "must be an ISO 8601 time with `Z` or an offset, in the years 1970 to 9899"
    )
    assert (await api.call("GET", "/v1/jobs", "/v1/jobs"))["items"] == []


async def test_the_latest_allowed_start_still_renders_its_first_slot(api: Api) -> None:
    schedule = {"every": 100_000_000, "start_at": "9899-12-31T23:59:59Z"}
    job = await api.call("POST", "/v1/jobs", "/v1/jobs", {**EXAMPLE_JOB, "schedule": schedule})
    assert job["next_fire_at"].startswith("9903-")
    assert len((await api.call("GET", "/v1/jobs", "/v1/jobs"))["items"]) == 1


async def test_an_if_match_that_is_no_version_is_a_400(api: Api) -> None:
    await api.call("POST", "/v1/jobs", "/v1/jobs", EXAMPLE_JOB)
    # Each was a 500: '²'.isdigit() is true but int('²') raises; a version over 64 bits made the
    # command unencodable (found by schemathesis); over 4300 digits int() itself refuses.
    for value in ("²", '"²"', "١", "W/17761248553328670524586660", "9" * 19, "1" * 5000):
        resp = await api.client.delete("/v1/jobs/nightly-report", headers={"If-Match": value})
        assert resp.status == 400, value
        assert (await resp.json())["error"]["field"] == "If-Match"


async def test_a_replay_after_a_delete_answers_the_first_status_and_the_version_it_made(api: Api) -> None:
    """Found by the stateful schemathesis run: an Idempotency-Key replay rendered the job as it was
    now, so after a delete the replay answered 404. API.md: the first answer's status, and the
    resource only if it has not changed since."""
    key = {"Idempotency-Key": "create-once"}
    await api.call("POST", "/v1/jobs", "/v1/jobs", EXAMPLE_JOB, **key)
    await api.call("DELETE", "/v1/jobs/nightly-report", "/v1/jobs/{id}")
    again = await api.call("POST", "/v1/jobs", "/v1/jobs", EXAMPLE_JOB, **key)
    assert again == {"id": "nightly-report", "version": 1, "replayed": True}
    put = {"Idempotency-Key": "p"}
    await api.call("PUT", "/v1/jobs/j", "/v1/jobs/{id}", EXAMPLE_JOB | {"id": "j"}, **put)
    await api.call("DELETE", "/v1/jobs/j", "/v1/jobs/{id}")
    again = await api.call("PUT", "/v1/jobs/j", "/v1/jobs/{id}", EXAMPLE_JOB | {"id": "j"}, **put)
    assert again == {"id": "j", "version": 1, "replayed": True}
    assert ("POST", "/v1/jobs", 201) in api.seen and ("PUT", "/v1/jobs/{id}", 201) in api.seen
