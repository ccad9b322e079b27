"""Strict input: what could never run is refused at creation, errors stay small and name their
field, and Idempotency-Key replays answer the first answer (API.md, "A stranger's first hour")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from apikit import T0, MemoryRaft
from test_api import JOB, Api, _api, error
from test_scheduler import Rig

from raftsched import planning
from raftsched.api import schemas
from raftsched.api.app import ApiRunner, Services, make_app, parse_json
from raftsched.clock import FakeClock
from raftsched.commands import CommandType, encode
from raftsched.errors import ValidationError
from raftsched.model import iso_ms
from raftsched.state import State, machine


@pytest.fixture
async def api() -> AsyncIterator[Api]:
    async for a in _api():
        yield a


def shell(**task: Any) -> dict[str, Any]:
    return {**JOB, "task": {"type": "shell", "command": ["true"], **task}}


def http(**task: Any) -> dict[str, Any]:
    return {**JOB, "task": {"type": "http", "url": "http://127.0.0.1:9/", **task}}


def python(**task: Any) -> dict[str, Any]:
    return {**JOB, "task": {"type": "python", "callable": "pkg.mod:f", **task}}


# ---------------------------------------------------------------- accepted, then failed at run time

NEVER_STARTS = [
    (shell(env={"A=B": "x"}), "task.env.A=B"),
    (shell(env={"": "x"}), "task.env"),
    (shell(env={"A\0B": "x"}), "task.env.A\0B"),
    (shell(env={"A": "x\0y"}), "task.env.A"),
    (python(env={"A=B": "x"}), "task.env.A=B"),
    (shell(command=["echo", "a\0b"]), "task.command.1"),
    (shell(command=["", "x"]), "task.command.0"),
    (shell(command="echo a\0b"), "task.command"),
    (shell(cwd="relative/dir"), "task.cwd"),
    (shell(cwd="/tmp/a\0b"), "task.cwd"),
    (shell(cwd=""), "task.cwd"),
    (http(headers={"X-A": "1\r\nX-Injected: 2"}), "task.headers.X-A"),
    (http(headers={"X-A": "line\nbreak"}), "task.headers.X-A"),
    (http(headers={"X-A": "nul\0"}), "task.headers.X-A"),
    (http(headers={"X-A": "bell\x07"}), "task.headers.X-A"),
    (http(headers={"X A": "1"}), "task.headers.X A"),
    (http(headers={"X-A:": "1"}), "task.headers.X-A:"),
    (http(headers={"X-A\n": "1"}), "task.headers.X-A\n"),
    (http(headers={"Ünicode": "1"}), "task.headers.Ünicode"),
    (http(url="http://example.com/a b"), "task.url"),
    (http(url="http://example.com/\r\nX: y"), "task.url"),
    (http(url="http://example.com:99999/"), "task.url"),
    (http(url="http://[::1/"), "task.url"),
    (http(method="GET\r\n"), "task.method"),
    (python(callable="pkg.mod:f\n"), "task.callable"),
    (python(kwargs={"not an identifier": 1}), "task.kwargs.not an identifier"),
    (python(kwargs={"1x": 1}), "task.kwargs.1x"),
]


@pytest.mark.parametrize(("body", "field"), NEVER_STARTS)
async def test_what_could_never_start_is_refused_at_creation(api: Api, body: Any, field: str) -> None:
    for method, path in (("POST", "/v1/jobs"), ("PUT", "/v1/jobs/nightly")):
        status, err = await api.call(method, path, body)
        assert status == 400 and error(err) == ("validation_error", field), (method, err)
    assert not api.state.jobs


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"env": {"A=B": "x"}}, "env.A=B"),
        ({"env": {"A": "x\0"}}, "env.A"),
        ({"env": {"": "x"}}, "env"),
        ({"kwargs": {"a-b": 1}}, "kwargs.a-b"),
    ],
)
async def test_trigger_overrides_are_checked_as_the_task_is(
    api: Api, override: dict[str, Any], field: str
) -> None:
    assert (await api.call("POST", "/v1/jobs", JOB))[0] == 201
    status, err = await api.call("POST", "/v1/jobs/nightly/trigger", override)
    assert status == 400 and error(err) == ("validation_error", field), err


async def test_good_names_and_values_are_still_accepted(api: Api) -> None:
    ok = [
        shell(env={"PATH_2": "/bin", "lower": "x y\tz"}, cwd="/tmp", command=["echo", ""]),
        http(headers={"X-Token_1.a": "v\tw", "Accept": "*/*"}, url="https://[::1]:8443/p?q=1#f"),
        python(kwargs={"n": 1, "_x": [1]}),
    ]
    for i, body in enumerate(ok):
        status, job = await api.call("POST", "/v1/jobs", {**body, "id": f"ok{i}"})
        assert status == 201, job


# ---------------------------------------------------------------- schedules: null, and a past `at`


async def test_a_null_schedule_is_a_manual_only_job(api: Api) -> None:
    status, job = await api.call("POST", "/v1/jobs", {**JOB, "schedule": None})
    assert status == 201 and job["schedule"] is None and job["next_fire_at"] is None, job
    status, job = await api.call("PUT", "/v1/jobs/nightly", job)  # as GET gave it
    assert status == 200 and job["schedule"] is None
    status, run = await api.call("POST", "/v1/jobs/nightly/trigger")
    assert status == 201 and run["run_id"] == f"nightly@manual-{T0}"
    status, job = await api.call("POST", "/v1/jobs/nightly/resume")
    assert status == 200 and job["next_fire_at"] is None
    record = api.state.jobs["nightly"]
    assert planning.next_key(record) is None
    status, err = await api.call("POST", "/v1/jobs", {**JOB, "id": "x", "schedule": {}})
    assert status == 400 and error(err) == ("validation_error", "schedule")


async def test_a_null_schedule_never_fires() -> None:
    rig = Rig()
    rig.add("manual", schedule=None)
    for _ in range(5):
        await rig.tick(10)
    assert rig.runs("manual") == {}


PAST = iso_ms(T0 - 30_000)  # 30 s ago: within the default grace (60 s)
LONG_AGO = iso_ms(T0 - 3600_000)


async def test_a_past_at_is_refused_unless_within_grace(api: Api) -> None:
    status, err = await api.call("POST", "/v1/jobs", {**JOB, "schedule": {"at": LONG_AGO}})
    assert status == 400 and error(err) == ("validation_error", "schedule.at"), err
    assert "None" not in err["error"]["message"]
    tight = {**JOB, "schedule": {"at": PAST}, "misfire": {"grace": 10}}
    status, err = await api.call("POST", "/v1/jobs", tight)
    assert status == 400 and error(err)[1] == "schedule.at"
    status, job = await api.call("POST", "/v1/jobs", {**JOB, "schedule": {"at": PAST}})
    assert status == 201 and job["next_fire_at"] == PAST, job


async def test_an_unchanged_past_at_is_kept_and_a_changed_one_checked(api: Api) -> None:
    future = iso_ms(T0 + 10_000)
    status, job = await api.call("POST", "/v1/jobs", {**JOB, "schedule": {"at": future}})
    assert status == 201
    api.clock.advance(3600)  # the slot is long past (nothing fires it here)
    status, again = await api.call("PUT", "/v1/jobs/nightly", {**job, "description": "edited"})
    assert status == 200 and again["next_fire_at"] is None, again  # never fires again
    status, err = await api.call("PUT", "/v1/jobs/nightly", {**job, "schedule": {"at": LONG_AGO}})
    assert status == 400 and error(err)[1] == "schedule.at"
    recent = iso_ms(api.clock.now_ms() - 5_000)
    status, moved = await api.call("PUT", "/v1/jobs/nightly", {**job, "schedule": {"at": recent}})
    assert status == 200 and moved["next_fire_at"] == recent


async def test_restore_is_exempt_from_the_past_at_rule(api: Api) -> None:
    spec = {**JOB, "id": "old", "schedule": {"at": LONG_AGO}}
    backup = {"format": "raftsched-backup", "version": 1, "jobs": [{"spec": spec}]}
    status, result = await api.call("POST", "/v1/restore", backup)
    assert status == 200 and result["created"] == ["old"], result


async def test_a_past_at_within_grace_fires_once_at_once() -> None:
    rig = Rig()
    at = T0 - 20_000
    spec = {"id": "once", "schedule": {"at": iso_ms(at)}, "task": {"type": "shell", "command": ["true"]}}
    result = rig.cmd(CommandType.PUT_JOB, spec=spec, now_ms=T0, mode="create", next_nominal_ms=at)
    assert result["ok"], result
    await rig.tick()
    assert rig.fired_slots("once") == [at]
    await rig.tick(120)
    assert rig.fired_slots("once") == [at]


# ---------------------------------------------------------------- error hygiene


@pytest.mark.parametrize(
    "body",
    [
        {**JOB, "description": "x" * 200_000},
        {**JOB, "y" * 200_000: 1},
        {**JOB, "labels": {"k": "v" * 200_000}},
        {**JOB, "task": {"type": "shell", "command": ["a"], "cwd": "r" * 5000}},
        {**JOB, "schedule": {"at": "z" * 200_000}},
        {**JOB, "delivery": "d" * 200_000},
        {**JOB, "task": {"type": "http", "url": "http://x/", "method": "M" * 200_000}},
    ],
)
async def test_an_error_quotes_little_of_the_value(api: Api, body: Any) -> None:
    status, err = await api.call("POST", "/v1/jobs", body)
    assert status == 400 and err["error"]["code"] == "validation_error"
    assert len(err["error"]["message"]) <= 500, len(err["error"]["message"])
    assert len(err["error"]["field"] or "") <= 200_001


TASK = b'"task": {"type": "shell", "command": ["x"]}'


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'{"id": "a", "id": "b", "schedule": null, ' + TASK + b"}", "id"),
        (
            b'{"id": "a", "schedule": null, "task": {"type": "shell", "type": "http", "command": []}}',
            "type",
        ),
        (b'{"id": "a", "schedule": {"every": 1, "every" : 2}, ' + TASK + b"}", "every"),
        (b'{"id": "a", "schedule": null, ' + TASK[:-1] + b', "env": {"A": "1", "\\u0041": "2"}}}', "A"),
    ],
)
async def test_duplicate_keys_are_refused_naming_the_key(api: Api, raw: bytes, field: str) -> None:
    resp = await api.client.post("/v1/jobs", data=raw, headers={"Content-Type": "application/json"})
    err = await resp.json()
    assert resp.status == 400 and error(err) == ("validation_error", field), err
    assert not api.state.jobs


@pytest.mark.parametrize(
    "value",
    [
        {"a": '":":"', "b": {"c": '\\":'}},
        {"a": [{"k": 1}, {"k": 2}], "t": "00:00:00"},
        {"x": "\u0022:", "y": "é"},
    ],
)
def test_a_body_without_duplicates_parses_as_orjson_parses_it(value: Any) -> None:
    for raw in (orjson.dumps(value), json.dumps(value).encode(), json.dumps(value, indent=2).encode()):
        assert parse_json(raw) == value


def test_duplicates_hidden_by_escapes_or_spaces_are_found() -> None:
    for raw in (
        b'{"a":1, "a" :2}',
        b'{"a":"\\u0022:","a":2}',
        b'{"k":"\\":","k":"\\":"}',
        b'[{"x": {"y": 1, "y": 1}}]',
    ):
        with pytest.raises(ValidationError, match="duplicate key"):
            parse_json(raw)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs?consistent=1",
        "/v1/jobs?consistent=yes",
        "/v1/jobs?paused=TRUE",
        "/v1/jobs/nightly?consistent=",
        "/v1/runs?consistent=0",
        "/v1/backup?runs=1",
        "/v1/backup?secrets=yes",
    ],
)
async def test_boolean_queries_take_true_or_false_only(api: Api, path: str) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    status, err = await api.call("GET", path)
    assert status == 400 and err["error"]["code"] == "validation_error"
    assert err["error"]["field"] == path.rsplit("?", 1)[1].split("=")[0]


async def test_a_restore_dry_run_flag_is_strict_too(api: Api) -> None:
    backup = {"format": "raftsched-backup", "version": 1, "jobs": []}
    status, err = await api.call("POST", "/v1/restore?dry_run=1", backup)
    assert status == 400 and error(err) == ("validation_error", "dry_run")


@pytest.mark.parametrize(
    ("value", "status"), [("1", 200), ('"1"', 200), ('W/"1"', 400), ('"1', 400), ("", 400)]
)
async def test_if_match_takes_a_version_or_a_quoted_one(api: Api, value: str, status: int) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    got, body = await api.call("PUT", "/v1/jobs/nightly", JOB, **{"If-Match": value})
    assert got == status, body
    if status == 400:
        assert error(body) == ("validation_error", "If-Match")


async def test_a_mismatch_on_a_missing_job_says_so_without_none(api: Api) -> None:
    status, err = await api.call("PUT", "/v1/jobs/nightly", JOB, **{"If-Match": "3"})
    assert status == 412 and error(err) == ("version_mismatch", "If-Match")
    assert "None" not in err["error"]["message"], err


async def test_a_tag_filter_needs_key_and_value(api: Api) -> None:
    await api.call("POST", "/v1/jobs", {**JOB, "labels": {"team": "a"}})
    for query in ("tag=team", "tag==a", "tag="):
        status, err = await api.call("GET", f"/v1/jobs?{query}")
        assert status == 400 and error(err) == ("validation_error", "tag"), query
    status, listed = await api.call("GET", "/v1/jobs?tag=team=a")
    assert status == 200 and [j["id"] for j in listed["items"]] == ["nightly"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/x"),
        ("PUT", "/v1/jobs/x"),
        ("DELETE", "/v1/jobs/x"),
        ("POST", "/v1/jobs/x/pause"),
        ("POST", "/v1/jobs/x/resume"),
        ("POST", "/v1/jobs/x/trigger"),
        ("GET", "/v1/jobs/x/runs"),
    ],
)
async def test_a_missing_job_is_field_id_everywhere(api: Api, method: str, path: str) -> None:
    headers = {"If-Match": "1"} if method == "PUT" else {}
    body = {**JOB, "id": "x"} if method == "PUT" else None
    status, err = await api.call(method, path, body, **headers)
    if method == "PUT":  # a conditional PUT of a missing job: 412, not 404
        assert status == 412
        return
    assert status == 404 and error(err) == ("not_found", "id"), err
    assert "None" not in err["error"]["message"]


async def test_a_node_http_may_be_host_port(api: Api) -> None:
    for i, (http, stored) in enumerate(
        [
            ("127.0.0.1:8104", "http://127.0.0.1:8104"),
            ("[::1]:8105", "http://[::1]:8105"),
            ("localhost:8106", "http://localhost:8106"),
        ]
    ):
        node = {"id": f"n{i + 4}", "raft": f"127.0.0.1:{7104 + i}", "http": http}
        status, added = await api.call("POST", "/v1/nodes", node)
        assert status == 200 and added["http"] == stored, added
    for bad in ("nope", "127.0.0.1", "ftp://x", "0.0.0.0:8107", "127.0.0.1:0"):
        node = {"id": "n9", "raft": "127.0.0.1:7109", "http": bad}
        status, err = await api.call("POST", "/v1/nodes", node)
        assert status == 400 and error(err) == ("validation_error", "http"), bad


class EnvelopeServer(TestServer):
    """A test server on `ApiRunner`, as nodes serve the API."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return ApiRunner(self.app, **kwargs)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/jobs?x=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        b"GE T /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    ],
)
async def test_requests_aiohttp_refuses_get_the_json_envelope(request_bytes: bytes) -> None:
    state, clock = State(), FakeClock(T0)
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock)
    server = EnvelopeServer(make_app(services))
    await server.start_server()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(request_bytes)
        await writer.drain()
        answer = await reader.read()
        writer.close()
    finally:
        await server.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 400 " in head.split(b"\r\n")[0], head
    assert b"Content-Type: application/json" in head
    err = orjson.loads(body)["error"]
    assert err["code"] == "validation_error" and err["field"] is None and len(err["message"]) <= 1100


# ---------------------------------------------------------------- Idempotency-Key replays

KEY = {"Idempotency-Key": "once"}


async def test_a_replay_of_an_unchanged_job_is_the_job_with_the_first_status(api: Api) -> None:
    status, first = await api.call("POST", "/v1/jobs", JOB, **KEY)
    resp = await api.client.post("/v1/jobs", json=JOB, headers=KEY)
    assert status == resp.status == 201 and await resp.json() == first
    assert resp.headers["Idempotent-Replayed"] == "true" and resp.headers["ETag"] == '"1"'


async def test_a_replay_after_a_change_answers_the_first_version(api: Api) -> None:
    await api.call("POST", "/v1/jobs", JOB, **KEY)
    await api.call("POST", "/v1/jobs/nightly/pause")
    status, body = await api.call("POST", "/v1/jobs", JOB, **KEY)
    assert (status, body) == (201, {"id": "nightly", "version": 1, "replayed": True})
    await api.call("DELETE", "/v1/jobs/nightly")
    status, body = await api.call("POST", "/v1/jobs", JOB, **KEY)
    assert (status, body) == (201, {"id": "nightly", "version": 1, "replayed": True})


@pytest.mark.parametrize(
    ("method", "path", "status", "version"),
    [
        ("PUT", "/v1/jobs/nightly", 200, 2),
        ("POST", "/v1/jobs/nightly/pause", 200, 2),
        ("DELETE", "/v1/jobs/nightly", 204, None),
    ],
)
async def test_each_job_write_replays_its_first_status(
    api: Api, method: str, path: str, status: int, version: int | None
) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    body = JOB if method == "PUT" else None
    first = await api.call(method, path, body, **KEY)
    assert first[0] == status
    await api.call("DELETE", "/v1/jobs/nightly")  # the resource is gone now
    await api.call("POST", "/v1/jobs", {**JOB, "description": "another"})
    replay = await api.call(method, path, body, **KEY)
    assert replay[0] == status, replay
    if version is not None:
        assert replay[1] == {"id": "nightly", "version": version, "replayed": True}


async def test_a_trigger_replay_answers_the_same_run(api: Api) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    status, run = await api.call("POST", "/v1/jobs/nightly/trigger", **KEY)
    api.clock.advance(1)
    again = await api.call("POST", "/v1/jobs/nightly/trigger", **KEY)
    assert status == again[0] == 201 and again[1]["run_id"] == run["run_id"]
    assert len([r for r in api.state.runs if "manual" in r]) == 1


async def test_a_refused_first_write_replays_its_error_and_another_body_is_422(api: Api) -> None:
    await api.call("POST", "/v1/jobs", JOB)
    first = await api.call("POST", "/v1/jobs", JOB, **KEY)
    assert first[0] == 409
    await api.call("DELETE", "/v1/jobs/nightly")
    assert await api.call("POST", "/v1/jobs", JOB, **KEY) == first
    status, err = await api.call("POST", "/v1/jobs", {**JOB, "description": "x"}, **KEY)
    assert status == 422 and error(err)[0] == "idempotency_mismatch"


def _keyed(rid: str, now_ms: int, fp: str = "f") -> bytes:
    return encode(CommandType.NOOP, {"now_ms": now_ms, "fp": fp}, rid=rid)


def test_the_state_forgets_a_key_after_24_hours_of_committed_time() -> None:
    state = machine.State()
    assert not state.apply(_keyed("idem:k", T0)).get("duplicate")
    assert state.apply(_keyed("idem:k", T0 + machine.REQUEST_TTL_MS)).get("duplicate")
    later = state.apply(_keyed("idem:k", T0 + machine.REQUEST_TTL_MS + 1, fp="other"))
    assert later["ok"] and not later.get("duplicate")  # a new request, not a mismatch
    assert list(state.requests) == ["idem:k"] and state.requests["idem:k"][0] == "other"


def test_the_state_keeps_the_last_max_requests_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(machine, "MAX_REQUESTS", 3)
    state = machine.State()
    for i in range(5):
        state.apply(_keyed(f"idem:{i}", T0 + i))
    assert list(state.requests) == ["idem:2", "idem:3", "idem:4"]
    assert not state.apply(_keyed("idem:0", T0 + 9)).get("duplicate")


# ---------------------------------------------------------------- the schemas, for generated clients


def _all_keys(schema: Any) -> set[str]:
    if isinstance(schema, dict):
        return set(schema) | {k for v in schema.values() for k in _all_keys(v)}
    if isinstance(schema, list):
        return {k for v in schema for k in _all_keys(v)}
    return set()


def test_unions_are_oneofs_of_complete_branches() -> None:
    assert not {"if", "then", "else"} & _all_keys(schemas.SCHEMAS)
    task = schemas.SCHEMAS["Task"]
    assert task["discriminator"]["propertyName"] == "type"
    assert set(task["discriminator"]["mapping"]) == {"shell", "http", "python", "message"}
    for name in (
        "ShellTask",
        "HttpTask",
        "PythonTask",
        "MessageTask",
        "CronSchedule",
        "EverySchedule",
        "AtSchedule",
    ):
        branch = schemas.SCHEMAS[name]
        assert branch["type"] == "object" and branch["properties"] and branch["required"], name
    schedule = schemas.SCHEMAS["JobCreate"]["properties"]["schedule"]
    assert {"type": "null"} in schedule["oneOf"] and len(schedule["oneOf"]) == 4


def test_skipped_and_missed_records_match_the_run_schema() -> None:
    run = {
        "run_id": "j@1",
        "job_id": "j",
        "attempt": 0,
        "scheduled_at": iso_ms(T0),
        "due_at": iso_ms(T0),
        "node": None,
        "state": "skipped",
        "started_at": None,
        "finished_at": iso_ms(T0),
        "duration": None,
        "lateness": None,
        "exit_code": None,
        "http_status": None,
        "error": None,
        "shard": 0,
        "shards": 1,
        "output_truncated": False,
    }
    schemas.validator("Run").validate(run)


def test_the_state_still_applies_jobs_logged_before_these_checks() -> None:
    """The checks are the API's: a log written before them may hold such jobs, and must replay as
    it did (the state parses with `JobSpec.from_dict`, which does not run them)."""
    state = State()
    for i, (body, _) in enumerate(NEVER_STARTS[:12]):
        spec = {**body, "id": f"old{i}"}
        result = state.apply(encode(CommandType.PUT_JOB, {"spec": spec, "now_ms": T0, "mode": "create"}))
        assert result["ok"], (spec, result)
