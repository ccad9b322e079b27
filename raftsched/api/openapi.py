"""`GET /v1/openapi.json`: the OpenAPI 3.1 description, built from a route table and `schemas.py`.

The request and answer schemas in the document are the dicts the handlers validate with
(`schemas.SCHEMAS`), not a copy. `OPERATIONS` below lists every route of every route module
(`module` names which one registers it) with its parameters, body and every status it can answer;
`tests/unit/test_openapi.py` checks it against what `make_app` registers, both ways.

The served document lists only the operations the running app has registered (aiohttp's automatic
HEAD twins of GET routes are left out), so a route module still being built never shows up as a
documented route that answers 404.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from .. import __version__
from ..model import RunState
from .schemas import SCHEMAS, Schema, ref

__all__ = ["OPERATIONS", "Operation", "add_routes", "build_openapi", "registered_operations"]

OPENAPI_VERSION: Final = "3.1.0"
PATH: Final = "/v1/openapi.json"

# ---------------------------------------------------------------- shared pieces

PARAMETERS: Final[dict[str, Schema]] = {
    "JobId": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "the job id",
        "schema": {"type": "string"},
    },
    "RunId": {
        "name": "run_id",
        "in": "path",
        "required": True,
        "description": "`<job>@<nominal_ms>`, `<job>@<nominal_ms>~<shard>` or `<job>@manual-<ms>`",
        "schema": {"type": "string"},
    },
    "NodeId": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "the node id",
        "schema": {"type": "string"},
    },
    "Attempt": {
        "name": "attempt",
        "in": "query",
        "description": "which attempt (default: the run's current one)",
        "schema": {"type": "integer", "minimum": 1},
    },
    "WithRuns": {
        "name": "runs",
        "in": "query",
        "description": "include the run history",
        "schema": {"type": "boolean", "default": False},
    },
    "WithSecrets": {
        "name": "secrets",
        "in": "query",
        "description": "include the inline values of sensitive headers (Authorization, Cookie, "
        '*-Token, ...); without it they are "***", which a restore can only resolve against jobs the '
        "cluster still has",
        "schema": {"type": "boolean", "default": False},
    },
    "DryRun": {
        "name": "dry_run",
        "in": "query",
        "description": "only report which jobs would be created, updated or left unchanged",
        "schema": {"type": "boolean", "default": False},
    },
    "StaticName": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "a file of the dashboard",
        "schema": {"type": "string"},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "description": "page size",
        "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
    },
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "description": "`next_cursor` of the previous page",
        "schema": {"type": "string"},
    },
    "Consistent": {
        "name": "consistent",
        "in": "query",
        "description": "first wait until this node has applied everything committed at the time of the call",
        "schema": {"type": "boolean", "default": False},
    },
    "RunStateFilter": {
        "name": "state",
        "in": "query",
        "description": "only runs in this state",
        "schema": {"enum": [s.value for s in RunState]},
    },
    "NodeFilter": {
        "name": "node",
        "in": "query",
        "description": "only runs on this node",
        "schema": {"type": "string"},
    },
    "JobFilter": {
        "name": "job",
        "in": "query",
        "description": "only runs of this job",
        "schema": {"type": "string"},
    },
    "TagFilter": {
        "name": "tag",
        "in": "query",
        "description": "`key=value`: only jobs whose route tags or labels have it",
        "schema": {"type": "string", "pattern": "^[^=]+="},
    },
    "PausedFilter": {
        "name": "paused",
        "in": "query",
        "description": "only paused (true) or only active (false) jobs",
        "schema": {"type": "boolean"},
    },
    "Force": {
        "name": "force",
        "in": "query",
        "description": "accept the job even if no live node may run it (else 422 `no_eligible_node`)",
        "schema": {"type": "boolean", "default": False},
    },
    "ChannelName": {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "the channel's name",
        "schema": {"type": "string"},
    },
    "ForceChannel": {
        "name": "force",
        "in": "query",
        "description": "accept it even if no live node may deliver to it, or a rule names a channel "
        "that does not exist (else 422)",
        "schema": {"type": "boolean", "default": False},
    },
    "ChannelFilter": {
        "name": "channel",
        "in": "query",
        "description": "only alerts to this channel",
        "schema": {"type": "string"},
    },
    "DeliveryFilter": {
        "name": "state",
        "in": "query",
        "description": "only alerts whose delivery is in this state",
        "schema": {"enum": ["pending", "delivered", "failed"]},
    },
    "IdempotencyKey": {
        "name": "Idempotency-Key",
        "in": "header",
        "description": "a retry with the same key within 24 h applies once and answers the first "
        "answer's status, with the resource if it has not changed since, else ReplayedWrite "
        '`{"id", "version", "replayed": true}` (the version the first write produced); the same key '
        "with another body is 422. A replay's answer has the header `Idempotent-Replayed: true`",
        "schema": {"type": "string"},
    },
    "IfMatch": {
        "name": "If-Match",
        "in": "header",
        "description": '`<version>` or `"<version>"`: apply only if the job has this version (else 412)',
        "schema": {"type": "string", "pattern": '^(?:[0-9]{1,18}|"[0-9]{1,18}")$'},
    },
}

HEADERS: Final[dict[str, Schema]] = {
    "ETag": {"description": 'the job\'s version, quoted: `"3"`', "schema": {"type": "string"}},
    "Retry-After": {"description": "seconds", "schema": {"type": "string"}},
}

ERRORS: Final[dict[int, str]] = {
    400: "`validation_error`: the request is malformed; `field` names what",
    401: "`unauthorized`: missing or wrong bearer token",
    403: "`forbidden_origin`: a browser's request from another origin; `forbidden_host`: a `Host` "
    "that is not a loopback name on a loopback bind (DNS rebinding)",
    404: "`not_found`: no such job, run or node",
    409: "`already_exists`: create of an id that exists",
    412: "`version_mismatch`: `If-Match` does not match the job's version",
    413: "`body_too_large`: over `max_body_bytes`",
    415: "`unsupported_media_type`: a request body not sent as `application/json`",
    422: "`idempotency_mismatch`: a reused `Idempotency-Key` with another body; `no_eligible_node`: "
    "no live node may run the job (route tags, the nodes' fences, secrets), `field` names what "
    "(create, replace and trigger; `?force=true` accepts it)",
    503: "`unavailable`: no leader or no quorum; not applied, safe to retry",
    504: "`indeterminate`: the leader changed while the write was in flight; it may have applied: "
    "retry with the same `Idempotency-Key` to learn which",
}

# Answer statuses of a read that may first propose a no-op (`consistent=true`), and of a write.
READ: Final = (401, 403, 503, 504)
WRITE: Final = (401, 403, 413, 415, 422, 503, 504)


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    description: str
    schema: str | None = None  # a name in SCHEMAS, answered as application/json
    media: Mapping[str, Schema] | None = None  # other media types
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Operation:
    method: str
    path: str
    module: str  # the route module that registers it (raftsched.api.<module>)
    operation_id: str
    summary: str
    tag: str
    parameters: tuple[str, ...] = ()  # names in PARAMETERS
    body: str | None = None  # a name in SCHEMAS
    body_required: bool = True
    responses: Mapping[int, Response] = field(default_factory=dict)
    errors: tuple[int, ...] = ()  # statuses answered with the Error envelope
    public: bool = False  # no bearer token needed


def _ok(schema: str, description: str = "OK", headers: tuple[str, ...] = ()) -> Mapping[int, Response]:
    return {200: Response(description=description, schema=schema, headers=headers)}


TEXT: Final = {"text/plain": {"schema": {"type": "string"}}}
JOB_HEADERS: Final = ("ETag",)
LIST: Final = ("Limit", "Cursor")

OPERATIONS: Final[tuple[Operation, ...]] = (
    # ------------------------------------------------------------ cluster
    Operation(
        method="GET",
        path="/v1/health",
        module="routes",
        operation_id="getHealth",
        summary="200 when this node knows a leader and has applied what is committed; 503 otherwise",
        tag="cluster",
        public=True,
        responses={
            200: Response(description="healthy", schema="Health"),
            503: Response(description="not healthy", schema="Health"),
        },
    ),
    Operation(
        method="GET",
        path="/v1/status",
        module="routes",
        operation_id="getStatus",
        summary="this node's view: role, leader, term, indexes, digest, members",
        tag="cluster",
        responses=_ok("Status"),
        errors=(401,),
    ),
    Operation(
        method="GET",
        path="/v1/nodes",
        module="routes",
        operation_id="listNodes",
        summary="members with load, liveness, tags",
        tag="cluster",
        responses=_ok("NodeList"),
        errors=(401,),
    ),
    Operation(
        method="POST",
        path="/v1/nodes",
        module="members",
        operation_id="addNode",
        summary="add a voter: recorded (down until it registers), then the Raft membership change",
        tag="cluster",
        parameters=("IdempotencyKey",),
        body="NodeAdd",
        responses={200: Response(description="the node, once the change is committed", schema="Node")},
        errors=(400, 409, *WRITE),
    ),
    Operation(
        method="DELETE",
        path="/v1/nodes/{id}",
        module="members",
        operation_id="removeNode",
        summary="the node drains (no new runs, pending ones move, running ones finish), then is removed",
        tag="cluster",
        parameters=("NodeId", "IdempotencyKey"),
        responses={202: Response(description="draining", schema="Node")},
        errors=(404, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/backup",
        module="backup",
        operation_id="getBackup",
        summary="a consistent, versioned export of the job table (sensitive header values redacted)",
        tag="cluster",
        parameters=("WithRuns", "WithSecrets"),
        responses=_ok("Backup"),
        errors=(400, *READ),
    ),
    Operation(
        method="POST",
        path="/v1/restore",
        module="backup",
        operation_id="restoreBackup",
        summary="recreate absent jobs with their creation time and schedule position, replace changed ones",
        tag="cluster",
        parameters=("DryRun", "IdempotencyKey"),
        body="RestoreBody",
        responses=_ok("RestoreResult"),
        errors=(400, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/stats",
        module="routes",
        operation_id="getStats",
        summary="cluster and per-job counters, lateness and duration summaries; `fired` counts the "
        "scheduled slots that were fired (one per slot, also for broadcast and shards; retries, skipped "
        "and missed slots and manual triggers are not in it)",
        tag="cluster",
        responses=_ok("Stats"),
        errors=(401,),
    ),
    # ------------------------------------------------------------ jobs
    Operation(
        method="GET",
        path="/v1/jobs",
        module="routes",
        operation_id="listJobs",
        summary="jobs, by id",
        tag="jobs",
        parameters=("Consistent", "TagFilter", "PausedFilter", *LIST),
        responses=_ok("JobList"),
        errors=(400, *READ),
    ),
    Operation(
        method="POST",
        path="/v1/jobs",
        module="routes",
        operation_id="createJob",
        summary="create a job; 409 if the id exists",
        tag="jobs",
        parameters=("Force", "IdempotencyKey"),
        body="JobCreate",
        responses={201: Response(description="created", schema="JobWritten", headers=JOB_HEADERS)},
        errors=(400, 409, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{id}",
        module="routes",
        operation_id="getJob",
        summary="the job with its read-only fields",
        tag="jobs",
        parameters=("JobId", "Consistent"),
        responses=_ok("Job", headers=JOB_HEADERS),
        errors=(400, 404, *READ),
    ),
    Operation(
        method="PUT",
        path="/v1/jobs/{id}",
        module="routes",
        operation_id="putJob",
        summary="create (201) or replace (200); read-only fields sent back are ignored",
        tag="jobs",
        parameters=("JobId", "IfMatch", "Force", "IdempotencyKey"),
        body="JobReplace",
        responses={
            200: Response(description="replaced", schema="JobWritten", headers=JOB_HEADERS),
            201: Response(description="created", schema="JobWritten", headers=JOB_HEADERS),
        },
        errors=(400, 412, *WRITE),
    ),
    Operation(
        method="DELETE",
        path="/v1/jobs/{id}",
        module="routes",
        operation_id="deleteJob",
        summary="delete; pending runs are cancelled, running runs killed",
        tag="jobs",
        parameters=("JobId", "IfMatch", "IdempotencyKey"),
        responses={204: Response(description="deleted")},
        errors=(400, 404, 412, *WRITE),
    ),
    Operation(
        method="POST",
        path="/v1/jobs/{id}/pause",
        module="routes",
        operation_id="pauseJob",
        summary="pause: slots falling due while paused are skipped",
        tag="jobs",
        parameters=("JobId", "IfMatch", "IdempotencyKey"),
        responses=_ok("JobWritten", headers=JOB_HEADERS),
        errors=(400, 404, 412, *WRITE),
    ),
    Operation(
        method="POST",
        path="/v1/jobs/{id}/resume",
        module="routes",
        operation_id="resumeJob",
        summary="resume, planning from the moment of resuming",
        tag="jobs",
        parameters=("JobId", "IfMatch", "IdempotencyKey"),
        responses=_ok("JobWritten", headers=JOB_HEADERS),
        errors=(400, 404, 412, *WRITE),
    ),
    Operation(
        method="POST",
        path="/v1/jobs/{id}/trigger",
        module="routes",
        operation_id="triggerJob",
        summary="run now (never moves the schedule); the body may override the task's env and kwargs",
        tag="jobs",
        parameters=("JobId", "Force", "IdempotencyKey"),
        body="TriggerBody",
        body_required=False,
        responses={201: Response(description="the first run; `runs`: all of them", schema="TriggerWritten")},
        errors=(400, 404, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/jobs/{id}/runs",
        module="routes",
        operation_id="listJobRuns",
        summary="the job's runs and skipped/missed records, newest first",
        tag="runs",
        parameters=("JobId", "Consistent", "RunStateFilter", *LIST),
        responses=_ok("RunList"),
        errors=(400, 404, *READ),
    ),
    # ------------------------------------------------------------ runs
    Operation(
        method="GET",
        path="/v1/runs",
        module="routes",
        operation_id="listRuns",
        summary="runs of all jobs, newest first",
        tag="runs",
        parameters=("Consistent", "RunStateFilter", "NodeFilter", "JobFilter", *LIST),
        responses=_ok("RunList"),
        errors=(400, *READ),
    ),
    Operation(
        method="GET",
        path="/v1/runs/{run_id}",
        module="routes",
        operation_id="getRun",
        summary="one run, with its output tail",
        tag="runs",
        parameters=("RunId", "Consistent"),
        responses=_ok("Run"),
        errors=(400, 404, *READ),
    ),
    Operation(
        method="POST",
        path="/v1/runs/{run_id}/cancel",
        module="routes",
        operation_id="cancelRun",
        summary="a pending run never starts, a running one is killed",
        tag="runs",
        parameters=("RunId", "IdempotencyKey"),
        responses={202: Response(description="accepted", schema="RunWritten")},
        errors=(404, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/runs/{run_id}/output",
        module="outputs",
        operation_id="getRunOutput",
        summary="the full output, from the node that ran it (proxied)",
        tag="runs",
        parameters=("RunId", "Attempt"),
        responses={200: Response(description="the output", media=TEXT)},
        errors=(400, 401, 404, 503),
    ),
    # ------------------------------------------------------------ alerts
    Operation(
        method="GET",
        path="/v1/channels",
        module="alerts",
        operation_id="listChannels",
        summary="the alert channels",
        tag="alerts",
        responses=_ok("ChannelList"),
        errors=(401, 403),
    ),
    Operation(
        method="GET",
        path="/v1/channels/{name}",
        module="alerts",
        operation_id="getChannel",
        summary="one alert channel",
        tag="alerts",
        parameters=("ChannelName",),
        responses=_ok("Channel"),
        errors=(401, 403, 404),
    ),
    Operation(
        method="PUT",
        path="/v1/channels/{name}",
        module="alerts",
        operation_id="putChannel",
        summary="create (201) or replace (200) a channel; 422 `no_eligible_node` if no live node can "
        "deliver to it (its secret, broker, http_allow)",
        tag="alerts",
        parameters=("ChannelName", "ForceChannel", "IdempotencyKey"),
        body="ChannelPut",
        responses={
            200: Response(description="replaced", schema="Channel"),
            201: Response(description="created", schema="Channel"),
        },
        errors=(400, *WRITE),
    ),
    Operation(
        method="DELETE",
        path="/v1/channels/{name}",
        module="alerts",
        operation_id="deleteChannel",
        summary="delete a channel; alerts still to deliver to it fail",
        tag="alerts",
        parameters=("ChannelName", "IdempotencyKey"),
        responses={204: Response(description="deleted")},
        errors=(400, 404, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/alerts/rules",
        module="alerts",
        operation_id="getAlertRules",
        summary="the cluster-wide alert rules",
        tag="alerts",
        responses=_ok("AlertRulesAnswer"),
        errors=(401, 403),
    ),
    Operation(
        method="PUT",
        path="/v1/alerts/rules",
        module="alerts",
        operation_id="putAlertRules",
        summary="replace the cluster-wide alert rules; 422 `unknown_channel` for a rule naming no channel",
        tag="alerts",
        parameters=("ForceChannel", "IdempotencyKey"),
        body="AlertRules",
        responses=_ok("AlertRulesAnswer"),
        errors=(400, *WRITE),
    ),
    Operation(
        method="GET",
        path="/v1/alerts",
        module="alerts",
        operation_id="listAlerts",
        summary="the latest alerts, newest first, with their delivery state",
        tag="alerts",
        parameters=("ChannelFilter", "DeliveryFilter", "Limit"),
        responses=_ok("AlertList"),
        errors=(400, 401, 403),
    ),
    # ------------------------------------------------------------ other modules
    Operation(
        method="GET",
        path="/metrics",
        module="metrics",
        operation_id="getMetrics",
        summary="Prometheus text format",
        tag="cluster",
        responses={200: Response(description="metrics", media=TEXT)},
        errors=(401,),
    ),
    Operation(
        method="GET",
        path="/",
        module="dashboard",
        operation_id="getDashboard",
        summary="the web dashboard",
        tag="dashboard",
        public=True,
        responses={
            200: Response(description="the page", media={"text/html": {"schema": {"type": "string"}}})
        },
    ),
    Operation(
        method="GET",
        path="/static/{name}",
        module="dashboard",
        operation_id="getDashboardFile",
        summary="a file of the dashboard",
        tag="dashboard",
        public=True,
        parameters=("StaticName",),
        responses={200: Response(description="the file", media={"*/*": {"schema": {}}})},
        errors=(404,),
    ),
    Operation(
        method="GET",
        path=PATH,
        module="openapi",
        operation_id="getOpenAPI",
        summary="this description",
        tag="meta",
        responses={
            200: Response(
                description="OpenAPI 3.1", media={"application/json": {"schema": {"type": "object"}}}
            )
        },
        errors=(401,),
    ),
)

# ---------------------------------------------------------------- the document


def _parameter_ref(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


# An answer with one of these schemas carries the id that these path parameters take.
LINKED_BY: Final = {
    "Job": ("JobId", "id"),
    "JobWritten": ("JobId", "id"),
    "Run": ("RunId", "run_id"),
    "RunWritten": ("RunId", "run_id"),
    "Node": ("NodeId", "id"),
}


def _links(schema: str | None, present: Collection[Operation]) -> Schema:
    """OpenAPI links from an answer to every operation that takes the id it carries."""
    if schema not in LINKED_BY:
        return {}
    parameter, field_name = LINKED_BY[schema]
    links: Schema = {}
    for op in present:
        if parameter not in op.parameters:
            continue
        values = {f"path.{PARAMETERS[parameter]['name']}": f"$response.body#/{field_name}"}
        links[op.operation_id] = {"operationId": op.operation_id, "parameters": values}
    return links


def _response(response: Response, present: Collection[Operation]) -> Schema:
    out: Schema = {"description": response.description}
    if response.schema is not None:
        out["content"] = {"application/json": {"schema": ref(response.schema)}}
    elif response.media is not None:
        out["content"] = dict(response.media)
    if response.headers:
        out["headers"] = {name: {"$ref": f"#/components/headers/{name}"} for name in response.headers}
    if links := _links(response.schema, present):
        out["links"] = links
    return out


def _error_response(status: int) -> Schema:
    out: Schema = {
        "description": ERRORS[status],
        "content": {"application/json": {"schema": ref("Error")}},
    }
    if status == 503:
        out["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return out


def _operation(op: Operation, present: Collection[Operation]) -> Schema:
    responses = {str(s): _response(r, present) for s, r in op.responses.items()}
    responses.update({str(s): _error_response(s) for s in op.errors})
    out: Schema = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "responses": dict(sorted(responses.items())),
    }
    if op.parameters:
        out["parameters"] = [_parameter_ref(p) for p in op.parameters]
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": ref(op.body)}},
        }
    if op.public:
        out["security"] = []
    return out


def build_openapi(registered: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document; with `registered` ((METHOD, path) pairs), only those operations."""
    present = [op for op in OPERATIONS if registered is None or (op.method, op.path) in registered]
    paths: dict[str, dict[str, Schema]] = {}
    for op in present:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, present)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "raftsched admin API",
            "version": __version__,
            "description": "Every node serves it. Writes may go to any node; a 2xx means committed on a "
            "majority and applied on the node that answered. Errors are "
            '`{"error": {"code", "message", "field"}}`. With `api_token` set, every request but '
            "the health check and the dashboard's files needs `Authorization: Bearer <token>`.",
        },
        "tags": [{"name": name} for name in ("cluster", "jobs", "runs", "dashboard", "meta")],
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "parameters": PARAMETERS,
            "headers": HEADERS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the cluster's `api_token`; required when one is set",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def registered_operations(app: web.Application) -> frozenset[tuple[str, str]]:
    """(METHOD, path template) of every route of `app`, without the HEAD twins aiohttp adds to GETs."""
    return frozenset(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    )


@functools.cache
def _document(registered: frozenset[tuple[str, str]]) -> bytes:
    return orjson.dumps(build_openapi(registered))


async def openapi(request: web.Request) -> web.Response:
    body = _document(registered_operations(request.app))
    return web.Response(body=body, content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Register `GET /v1/openapi.json`."""
    app.router.add_get(PATH, openapi)
