"""JSON Schemas (draft 2020-12) of the admin API's bodies: one source for two readers.

The handlers validate request bodies with `validate(name, body)` before the semantic checks of
`model.JobSpec.from_dict` (cron syntax, time zones, ranges between fields), and `openapi.py`
publishes the very same dicts as `components.schemas` of `GET /v1/openapi.json`. References
between schemas are `{"$ref": "#/components/schemas/<Name>"}`, which resolve both inside the
OpenAPI document and in the validators here (whose root document carries the same
`components.schemas`).

Request schemas are strict (`additionalProperties: false`). Unions are `oneOf`s of complete
branches, so that client generators make a typed model of each: the task is discriminated on
`type` (an OpenAPI `discriminator`), a schedule by which of `cron`, `every`, `at` it has. A `oneOf`
error would stop at the union; `validate` goes down into the branch the instance chose (`_branch`)
so that the error still names the deepest field (`task.command.2`). "A string or a list of strings"
is one schema with both types, not a union. Response schemas list every field the views write and
require the ones that are always there; they allow more, since API.md lets answers gain fields.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any, Final

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError

from ..brokers import BROKER_NAME_RE
from ..errors import ValidationError, quoted
from ..model import (
    READ_ONLY_JOB_FIELDS,
    Delivery,
    MisfirePolicy,
    Overlap,
    RouteStrategy,
    RunState,
    TaskType,
)

__all__ = [
    "JOB_READ_ONLY",
    "SCHEMAS",
    "check_schemas",
    "error_field",
    "ref",
    "validate",
    "validator",
]

Schema = dict[str, Any]

DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
HTTP_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# Fields a job answer carries that a PUT may send back (as a GET returned them): they are ignored.
JOB_READ_ONLY: Final = READ_ONLY_JOB_FIELDS


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _values(enum: Iterable[Any]) -> list[str]:
    return [str(m.value) for m in enum]


def _nullable(schema: Schema) -> Schema:
    kind = schema["type"]
    kinds = kind if isinstance(kind, list) else [kind]
    return {**schema, "type": [*kinds, "null"]}


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


TIME: Final[Schema] = {
    "type": "string",
    "format": "date-time",
    "description": "ISO 8601 UTC with milliseconds: `2026-11-25T16:30:00.123Z`",
}
# Times in requests: the years are bounded so that every time, and the first slot of an `every`
# schedule (at most 1e8 s later), stays inside what `model.iso_ms` can render: outside, it raises
# (a 500, and a job whose next slot cannot be rendered breaks every GET /v1/jobs after it), and
# years < 1000 come out without their leading zeros, which the state then cannot parse back.
TIME_INPUT: Final[Schema] = {
    "type": "string",
    "format": "date-time",
    "pattern": "^(?:19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2})-",
    "description": "an ISO 8601 time with `Z` or an offset, in the years 1970 to 9899",
}
# A union tells `validate` which of its branches an instance meant (`_branch`). The task: its
# discriminator's value. A schedule: the one of its branches whose required key it has. When it
# chose none, the error is the union's `x-union-message`, at its `x-union-field` under the union.
_UNION_FIELD, _UNION_MESSAGE = "x-union-field", "x-union-message"

SECONDS: Final[Schema] = {"type": "number", "minimum": 0}
COUNT: Final[Schema] = {"type": "integer", "minimum": 0}

# ---------------------------------------------------------------- requests (and the spec part of answers)

_STRING_MAP: Schema = {
    "type": "object",
    "description": "string keys (at most 256 characters) to string values",
    "propertyNames": {"maxLength": 256},
    "additionalProperties": {"type": "string", "maxLength": 4096},
}

# A value of `task.headers` or `task.env`: a string, or a reference to a secret the executing node
# resolves. One schema with both types (not a oneOf), so that an error names the deepest field
# (`task.headers.Authorization.secret`); `_message` never echoes what was sent in its place.
_SECRET_NAME: Schema = {
    "type": "string",
    "maxLength": 256,
    "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
    "description": "a secret name: [A-Za-z_][A-Za-z0-9_]*",
}
_SECRET_VALUE: Schema = {
    "type": ["string", "object"],
    "description": 'a string (at most 4096 characters) or a secret reference {"secret": NAME}, resolved '
    "on the executing node when the run starts (its environment RAFTSCHED_SECRET_NAME, its "
    "secrets_file, or the cluster file's [secrets])",
    "maxLength": 4096,
    "additionalProperties": False,
    "required": ["secret"],
    "properties": {"secret": _SECRET_NAME},
}
_ENV_MAP: Schema = {
    "type": "object",
    "description": "environment variable names (not empty, no `=` or NUL, at most 256 characters) to "
    "strings (no NUL) or secret references",
    "propertyNames": {
        "maxLength": 256,
        "pattern": "^[^=\\u0000]+$",
        "description": "an environment variable name: not empty, no `=` or NUL",
    },
    "additionalProperties": ref("SecretValue"),
}
_HEADER_MAP: Schema = {
    "type": "object",
    "description": "header names (RFC 7230 tokens, at most 256 characters) to values (no CR, LF or other "
    "control characters) or secret references; answers show the inline values of Authorization, "
    'Proxy-Authorization, Cookie and *-Token, *-Key headers as "***", and a write that sends "***" '
    "back for a header the stored job has keeps its value",
    "propertyNames": {
        "maxLength": 256,
        "pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",
        "description": "a header name (an RFC 7230 token)",
    },
    "additionalProperties": ref("SecretValue"),
}
_KWARGS: Schema = {
    "type": "object",
    "description": "keyword arguments: names are Python identifiers",
    "propertyNames": {"pattern": "^(?!\\d)\\w+$", "description": "a Python identifier"},
}

_TIMEZONE: Schema = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "default": "UTC",
    "description": "IANA name; applies to cron (answers carry it on every schedule)",
}
_END_AT: Schema = {**TIME_INPUT, "description": "no slot after it; " + TIME_INPUT["description"]}


def _schedule(kind: str, value: Schema, description: str, **more: Schema) -> Schema:
    return {
        "type": "object",
        "title": f"{kind.capitalize()}Schedule",
        "description": description,
        "additionalProperties": False,
        "required": [kind],
        "properties": {kind: value, **more, "timezone": _TIMEZONE},
    }


_CRON_SCHEDULE = _schedule(
    "cron",
    {
        "type": "string",
        "minLength": 1,
        "maxLength": 256,
        "description": "5 fields, or 6 with seconds first, or @hourly/@daily/@weekly/@monthly/@yearly",
    },
    "each wall-clock time the expression names, in `timezone`",
    end_at=_END_AT,
)
_EVERY_SCHEDULE = _schedule(
    "every",
    {"type": "number", "minimum": 0.1, "maximum": 100_000_000, "description": "seconds"},
    "slots `start_at + k * every`, k >= 1",
    start_at={
        **TIME_INPUT,
        "description": "default: when the job was created; " + TIME_INPUT["description"],
    },
    end_at=_END_AT,
)
_AT_SCHEDULE = _schedule(
    "at",
    {
        **TIME_INPUT,
        "description": "the one slot; in the past only within `misfire.grace` (it then fires at once) or "
        "unchanged on a PUT; " + TIME_INPUT["description"],
    },
    "one slot; afterwards the job stays, with `next_fire_at: null`",
)
_SCHEDULE_BRANCHES = ("CronSchedule", "EverySchedule", "AtSchedule")
_SCHEDULE_MESSAGE = "exactly one of cron, every, at is required"
_SCHEDULE: Schema = {
    "description": "exactly one of `cron`, `every`, `at`",
    "oneOf": [ref(name) for name in _SCHEDULE_BRANCHES],
    _UNION_MESSAGE: _SCHEDULE_MESSAGE,
}

_STATUS_RANGE = r"^[1-5]\d\d-[1-5]\d\d$"
_EXPECT_ONE: Schema = {
    "type": ["integer", "string"],
    "minimum": 100,
    "maximum": 599,
    "pattern": _STATUS_RANGE,
}

_NO_NUL = "^[^\\u0000]*$"
_SHELL_TASK: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "command"],
    "properties": {
        "type": {"const": TaskType.SHELL.value},
        "command": {
            "type": ["array", "string"],
            "description": "an argv list, or a string run by `/bin/sh -c` where the node allows shell; "
            "no NUL characters",
            "minItems": 1,
            "items": {
                "type": "string",
                "maxLength": 65536,
                "pattern": _NO_NUL,
                "description": "a string without NUL characters",
            },
            "minLength": 1,
            "maxLength": 65536,
            "pattern": _NO_NUL,
        },
        "env": _ENV_MAP,
        "cwd": {
            "type": ["string", "null"],
            "maxLength": 4096,
            "pattern": "^/[^\\u0000]*$",
            "description": "an absolute path (no NUL); null: the node's own",
        },
    },
}

_HTTP_TASK: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "url"],
    "properties": {
        "type": {"const": TaskType.HTTP.value},
        "method": {
            "type": "string",
            "maxLength": 16,
            "default": "GET",
            "description": "any case of " + ", ".join(HTTP_METHODS),
            "pattern": "^(?:" + "|".join(_any_case(m) for m in HTTP_METHODS) + ")$",
        },
        "url": {
            "type": "string",
            "minLength": 1,
            "maxLength": 8192,
            "pattern": r"^https?://[^/\s]+[^\x00-\x20\x7f]*$",
            "description": "an http:// or https:// URL with a host; no spaces or control characters",
        },
        "headers": _HEADER_MAP,
        "body": {"description": "a string is sent as is; any other JSON value is sent as JSON"},
        "expect_status": {
            "type": ["array", "integer", "string"],
            "description": "status codes or ranges like `200-299` (default `200-299`)",
            "minItems": 1,
            "items": _EXPECT_ONE,
            "minimum": 100,
            "maximum": 599,
            "pattern": _STATUS_RANGE,
        },
    },
}

_PYTHON_TASK: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "callable"],
    "properties": {
        "type": {"const": TaskType.PYTHON.value},
        "callable": {"type": "string", "maxLength": 512, "pattern": r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"},
        "kwargs": _KWARGS,
        "env": _ENV_MAP,
        "in_process": {"type": "boolean", "default": False},
    },
}

_MESSAGE_TASK: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "broker", "to"],
    "properties": {
        "type": {"const": TaskType.MESSAGE.value},
        "broker": {
            "type": "string",
            "pattern": "^" + BROKER_NAME_RE.pattern + "$",
            "description": "a `[broker NAME]` of the nodes' config; runs go only to nodes that have it",
        },
        "to": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1024,
            "description": "Redis: a stream key, list or channel (options.mode); AMQP: "
            "`exchange:routing_key` (`:queue` for the default exchange); MQTT: a topic; NATS: a subject",
        },
        "body": {
            "description": "a string is sent as is, any other JSON value as JSON; in its strings "
            "`{run_id}`, `{job_id}`, `{attempt}`, `{scheduled_at}`, `{node}`, `{shard}`, `{shards}` are "
            "replaced, `{{` and `}}` are literal braces",
        },
        "content_type": {"type": ["string", "null"], "maxLength": 256},
        "headers": _HEADER_MAP,
        "options": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "mode": {"enum": ["stream", "list", "pubsub"], "description": "Redis (default stream)"},
                "require_receivers": {"type": "boolean", "description": "Redis pubsub"},
                "qos": {"enum": [0, 1, 2], "description": "MQTT (default 1)"},
            },
        },
    },
}

_TASK_BY_TYPE = {
    TaskType.SHELL: "ShellTask",
    TaskType.HTTP: "HttpTask",
    TaskType.PYTHON: "PythonTask",
    TaskType.MESSAGE: "MessageTask",
}
_TASK: Schema = {
    "description": "by `type`: " + ", ".join(f"{t.value} ({name})" for t, name in _TASK_BY_TYPE.items()),
    "oneOf": [ref(name) for name in _TASK_BY_TYPE.values()],
    _UNION_FIELD: "type",
    _UNION_MESSAGE: "must be one of: " + ", ".join(_values(TaskType)),
    "discriminator": {
        "propertyName": "type",
        "mapping": {t.value: ref(name)["$ref"] for t, name in _TASK_BY_TYPE.items()},
    },
}

_RETRIES: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "max": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 0},
        "initial_delay": {"type": "number", "minimum": 0, "maximum": 86400, "default": 1},
        "backoff": {"type": "number", "minimum": 1, "maximum": 100, "default": 2},
        "max_delay": {"type": "number", "minimum": 0, "maximum": 86400, "default": 60},
        "jitter": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.1},
    },
}

_MISFIRE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "policy": {"enum": _values(MisfirePolicy), "default": MisfirePolicy.FIRE_ONCE.value},
        "grace": {"type": "number", "minimum": 0, "maximum": 10_000_000, "default": 60},
        "max_catchup": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 10},
    },
}

_ROUTE: Schema = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "strategy": {"enum": _values(RouteStrategy), "default": RouteStrategy.LEAST_LOADED.value},
        "tags": _STRING_MAP,
        "shards": {"type": "integer", "minimum": 1, "maximum": 1024, "description": "strategy `shards` only"},
    },
}

_JOB_SPEC_PROPERTIES: Schema = {
    "id": {"type": "string", "maxLength": 128, "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"},
    "schedule": {
        "description": "exactly one of `cron`, `every`, `at`; null: run only by triggers",
        "oneOf": [*(ref(name) for name in _SCHEDULE_BRANCHES), {"type": "null"}],
        _UNION_MESSAGE: _SCHEDULE_MESSAGE,
    },
    "task": ref("Task"),
    "timeout": {
        "type": ["number", "null"],
        "minimum": 0.001,
        "maximum": 10_000_000,
        "description": "seconds",
    },
    "retries": ref("Retries"),
    "delivery": {"enum": _values(Delivery), "default": Delivery.AT_LEAST_ONCE.value},
    "overlap": {"enum": _values(Overlap), "default": Overlap.FORBID.value},
    "misfire": ref("Misfire"),
    "route": ref("Route"),
    "jitter": {"type": "number", "minimum": 0, "maximum": 86400, "default": 0},
    "paused": {"type": "boolean", "default": False},
    "description": {"type": "string", "maxLength": 4096, "default": ""},
    "labels": _STRING_MAP,
    "notify": {
        "type": "array",
        "maxItems": 64,
        "items": ref("NotifyRule"),
        "description": "alert rules of the job's runs; each names a channel (unknown: 422 "
        "`unknown_channel` unless `?force=true`)",
    },
}

_CHANNEL_NAME: Schema = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"}
_RUN_EVENTS = ("failed", "timed_out", "lost", "missed", "skipped", "late")
_ALL_EVENTS = (*_RUN_EVENTS, "node_down", "node_clock")


def _notify_rule(events: tuple[str, ...], description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": ["on", "channel"],
        "properties": {
            "on": {"type": "array", "minItems": 1, "items": {"enum": list(events)}},
            "channel": _CHANNEL_NAME,
            "threshold_s": {
                "type": "number",
                "minimum": 0,
                "maximum": 86400,
                "description": "with `late` (and only with it): a start later than this past due",
            },
        },
    }


_NOTIFY_RULE = _notify_rule(
    _RUN_EVENTS, "`failed`, `timed_out`, `lost`: the final attempt; `skipped`: overlap only"
)
_CLUSTER_RULE = _notify_rule(_ALL_EVENTS, "a cluster-wide rule: every job's runs, and the nodes")
_ALERT_RULES: Schema = {
    "type": "object",
    "additionalProperties": False,
    "required": ["rules"],
    "properties": {
        "rules": {"type": "array", "maxItems": 64, "items": ref("ClusterRule")},
        "cluster": {
            "type": "string",
            "minLength": 1,
            "maxLength": 128,
            "default": "raftsched",
            "description": "the `cluster` of every alert's payload",
        },
    },
}
_GROUP_WINDOW: Schema = {
    "type": "number",
    "minimum": 0,
    "maximum": 3600,
    "default": 10,
    "description": "at most one message per this many seconds; the first alert of a burst at once, "
    "the rest grouped into one alert with their `count` (0: no grouping)",
}
_EMAIL_ADDRESS: Schema = {
    "type": "string",
    "minLength": 3,
    "maxLength": 320,
    "pattern": "^[^\\s<>,;]+@[^\\s<>,;]+$",
}


def _channel(kind: str, required: list[str], properties: Schema, description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "required": ["type", *required],
        "properties": {"type": {"const": kind}, "group_window_s": _GROUP_WINDOW, **properties},
    }


_WEBHOOK_CHANNEL = _channel(
    "webhook",
    ["url"],
    {
        "url": {"type": "string", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"},
        "signing_secret": {
            **_SECRET_VALUE,
            "type": "object",
            "description": 'a secret reference {"secret": NAME}',
        },
        "format": {"enum": ["raw", "slack", "teams"], "default": "raw"},
    },
    "an HTTP POST of the alert (raw: API.md's payload; slack, teams: their webhook formats)",
)
_EMAIL_CHANNEL = _channel(
    "email",
    ["smtp", "from", "to"],
    {
        "smtp": {
            "type": "string",
            "maxLength": 300,
            "pattern": "^.+:[0-9]{1,5}$",
            "description": "host:port",
        },
        "from": _EMAIL_ADDRESS,
        "to": {"type": "array", "minItems": 1, "maxItems": 50, "items": _EMAIL_ADDRESS},
        "starttls": {"type": "boolean", "default": True},
        "username": {"type": "string", "maxLength": 256},
        "password_secret": _SECRET_NAME,
    },
    "an e-mail over SMTP (STARTTLS unless `starttls: false`)",
)
_MESSAGE_CHANNEL = _channel(
    "message",
    ["broker", "to"],
    {
        "broker": {"type": "string", "pattern": "^" + BROKER_NAME_RE.pattern + "$"},
        "to": {"type": "string", "minLength": 1, "maxLength": 1024},
    },
    "a message to a [broker NAME] (`to` as a message task's)",
)
_CHANNEL_BY_TYPE = {"webhook": "WebhookChannel", "email": "EmailChannel", "message": "MessageChannel"}
_CHANNEL_PUT: Schema = {
    "description": "by `type`: webhook, email, message",
    "oneOf": [ref(name) for name in _CHANNEL_BY_TYPE.values()],
    _UNION_FIELD: "type",
    _UNION_MESSAGE: "must be one of: webhook, email, message",
    "discriminator": {
        "propertyName": "type",
        "mapping": {t: ref(name)["$ref"] for t, name in _CHANNEL_BY_TYPE.items()},
    },
}


def _job_input(*, id_required: bool) -> Schema:
    ignored = {
        name: {"readOnly": True, "description": "read-only: ignored"} for name in sorted(JOB_READ_ONLY)
    }
    return {
        "type": "object",
        "description": "A job as users write it (API.md). "
        + ("`id` is required." if id_required else "`id` may be left out; if given it must match the URL."),
        "additionalProperties": False,
        "required": ["id", "schedule", "task"] if id_required else ["schedule", "task"],
        "properties": {**_JOB_SPEC_PROPERTIES, **ignored},
    }


_TRIGGER_BODY: Schema = {
    "type": "object",
    "description": "overrides of the task's `env` and `kwargs` for this run; the body may be empty",
    "additionalProperties": False,
    "properties": {
        "env": {**_ENV_MAP, "type": ["object", "null"]},
        "kwargs": {**_KWARGS, "type": ["object", "null"]},
    },
}

# ---------------------------------------------------------------- answers

_SUMMARY: Schema = {
    "type": "object",
    "description": "seconds; null while there is no sample",
    "required": ["count", "p50", "p99", "max", "mean"],
    "properties": {
        "count": COUNT,
        "p50": _nullable(SECONDS),
        "p99": _nullable(SECONDS),
        "max": _nullable(SECONDS),
        "mean": _nullable(SECONDS),
    },
}

_COUNTER_NAMES = (
    "fired",
    "succeeded",
    "failed",
    "timed_out",
    "retried",
    "skipped",
    "missed",
    "lost",
    "cancelled",
    "reassigned",
)
_COUNTERS: Schema = {
    "type": "object",
    "required": [*_COUNTER_NAMES, "lateness", "duration"],
    "properties": {
        **dict.fromkeys(_COUNTER_NAMES, COUNT),
        "fired": {
            **COUNT,
            "description": "scheduled slots fired: one per slot, also for broadcast and shards; "
            "retries, skipped and missed slots and manual triggers are not counted",
        },
        "lateness": ref("Summary"),
        "duration": ref("Summary"),
    },
}

_JOB: Schema = {
    "type": "object",
    "description": "A job with its read-only fields; `ETag` carries `version`.",
    "required": [
        *(name for name in _JOB_SPEC_PROPERTIES if name != "notify"),
        "version",
        "next_fire_at",
        "last_fire_at",
        "created_at",
        "updated_at",
    ],
    "properties": {
        **_JOB_SPEC_PROPERTIES,
        "version": {"type": "integer", "minimum": 1, "readOnly": True},
        "incarnation": {"type": "integer", "minimum": 0, "readOnly": True},
        "next_fire_at": {**_nullable(TIME), "readOnly": True, "description": "null when paused or done"},
        "last_fire_at": {**_nullable(TIME), "readOnly": True},
        "last_slot_at": {
            **_nullable(TIME),
            "readOnly": True,
            "description": "the newest slot that fell due by the committed clock: run, pending or recorded",
        },
        "next_slot_at": {
            **_nullable(TIME),
            "readOnly": True,
            "description": "the next slot after the committed clock, committed or not; "
            "null when paused or done",
        },
        "created_at": {**TIME, "readOnly": True},
        "updated_at": {**TIME, "readOnly": True},
        "updated_by": {"type": "string", "readOnly": True},
        "stats": {**ref("Counters"), "readOnly": True},
        "last_run": {
            "readOnly": True,
            "description": "the job's newest finished run (null before the first)",
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["run_id", "state", "finished_at"],
                    "properties": {
                        "run_id": {"type": "string"},
                        "state": {"type": "string"},
                        "finished_at": _nullable(TIME),
                    },
                },
            ],
        },
        "audit": {
            "type": "array",
            "readOnly": True,
            "description": "the job's last changes, newest first",
            "items": {
                "type": "object",
                "required": ["at", "actor", "action", "version"],
                "properties": {
                    "at": TIME,
                    "at_ms": {"type": "integer"},
                    "actor": {"type": "string"},
                    "action": {"type": "string"},
                    "version": {"type": "integer"},
                },
            },
        },
    },
}

_RUN: Schema = {
    "type": "object",
    "required": [
        "run_id",
        "job_id",
        "attempt",
        "scheduled_at",
        "due_at",
        "node",
        "state",
        "started_at",
        "finished_at",
        "duration",
        "lateness",
        "exit_code",
        "http_status",
        "error",
        "shard",
        "shards",
        "output_truncated",
    ],
    "properties": {
        "run_id": {"type": "string", "description": "`<job>@<nominal_ms>`, `~<shard>`, `<job>@manual-<ms>`"},
        "job_id": {"type": "string"},
        "attempt": {
            "type": "integer",
            "minimum": 0,
            "description": "from 1; 0 for a skipped or missed slot's record, which no attempt ran",
        },
        "scheduled_at": TIME,
        "due_at": TIME,
        "node": {"type": ["string", "null"]},
        "state": {"enum": _values(RunState)},
        "created_at": TIME,
        "started_at": _nullable(TIME),
        "finished_at": _nullable(TIME),
        "duration": _nullable(SECONDS),
        "lateness": {"type": ["number", "null"], "description": "started_at - due_at, seconds"},
        "exit_code": {"type": ["integer", "null"]},
        "http_status": {"type": ["integer", "null"]},
        "error": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"], "description": "why a run was skipped, missed or cancelled"},
        "shard": {"type": "integer", "minimum": 0},
        "shards": {"type": "integer", "minimum": 1},
        "manual": {"type": "boolean"},
        "until": {**TIME, "description": "skipped/missed records covering a range of slots: the last"},
        "count": {"type": "integer", "minimum": 1, "description": "how many slots the record covers"},
        "output": {"type": "string", "description": "the output tail (single-run answers only)"},
        "output_truncated": {
            "type": "boolean",
            "readOnly": True,
            "description": "the node that ran the attempt kept less than its whole output: the file "
            "stopped at the node's output_max_bytes and ends with a marker line; the tail is still "
            "the output's last bytes",
        },
    },
}

_TRIGGER_ANSWER: Schema = {
    "description": "the first run of a manual trigger, and in `runs` all of them: one per node for "
    "broadcast, one per shard for shards (`<job>@manual-<ms>~<shard>`), else the one run",
    "allOf": [ref("Run")],
    "required": ["runs"],
    "properties": {"runs": {"type": "array", "items": ref("Run"), "minItems": 1}},
}

_REPLAYED: Schema = {
    "type": "object",
    "description": "an Idempotency-Key replay whose resource changed (or went) since the first write",
    "required": ["id", "version", "replayed"],
    "properties": {
        "id": {"type": "string", "description": "the job's id, or the run's"},
        "version": {
            "type": ["integer", "null"],
            "description": "the job version the first write produced (null for a run)",
        },
        "replayed": {"type": "boolean", "const": True},
    },
}


def _or_replayed(name: str) -> Schema:
    return {
        "description": f"the {name.lower()}; for an Idempotency-Key replay after it changed, ReplayedWrite",
        "oneOf": [ref(name), ref("ReplayedWrite")],
    }


_NODE: Schema = {
    "type": "object",
    "required": ["id", "raft", "http", "tags", "capacity", "running", "alive", "draining", "voter"],
    "properties": {
        "id": {"type": "string"},
        "raft": {"type": "string"},
        "http": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "capacity": COUNT,
        "running": {**COUNT, "description": "runs executing on the node now: its load, against capacity"},
        "pending": {**COUNT, "description": "runs assigned to the node, waiting for their due time"},
        "alive": {"type": "boolean"},
        "connected": {"type": ["boolean", "null"]},
        "draining": {"type": "boolean"},
        "leaving": {"type": "boolean", "description": "being removed: it drains, then leaves"},
        "removed": {"type": "boolean", "description": "already drained and removed (DELETE only)"},
        "voter": {"type": "boolean"},
        "version": {"type": "string"},
        "commands": {
            "type": "integer",
            "minimum": 1,
            "description": "the highest command version it applies",
        },
        "leader": {"type": "boolean"},
        "clock_offset_ms": {"type": ["integer", "null"], "description": "its clock minus the cluster's"},
        "clock_ok": {"type": "boolean", "description": "false: its clock is off, it takes no new runs"},
        "policy": {
            "type": "object",
            "description": "what the node publishes about the tasks it runs, by which a job no live node "
            "may run is refused (422 `no_eligible_node`): `run_tasks`, `allow_shell`, `command_allow`, "
            "`python_allow`, `http_allow`, `secrets` (names only) and `brokers` (the names of its "
            "`[broker]` sections); a key left out is unknown",
            "properties": {
                "run_tasks": {"type": "boolean"},
                "allow_shell": {"type": "boolean"},
                "command_allow": {"type": "array", "items": {"type": "string"}},
                "python_allow": {"type": "array", "items": {"type": "string"}},
                "http_allow": {"type": "array", "items": {"type": "string"}},
                "secrets": {"type": "array", "items": {"type": "string"}},
                "brokers": {"type": "array", "items": {"type": "string"}},
            },
        },
        "down_reason": {
            "type": ["string", "null"],
            "description": "why the leader committed it down: 'refused connections' (certainly dead) "
            "or 'not heard from for N s'; null while alive",
        },
    },
}

_MEMBER: Schema = {
    "type": "object",
    "required": ["id", "raft", "http", "connected", "tags"],
    "properties": {
        "id": {"type": "string"},
        "raft": {"type": "string"},
        "http": {"type": "string"},
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "alive": {"type": "boolean"},
        "connected": {"type": "boolean"},
        "commands": {
            "type": "integer",
            "minimum": 1,
            "description": "the highest command version it applies",
        },
    },
}

_STATUS: Schema = {
    "type": "object",
    "required": [
        "node_id",
        "version",
        "role",
        "leader",
        "term",
        "commit_index",
        "applied_index",
        "digest",
        "members",
    ],
    "properties": {
        "node_id": {"type": "string"},
        "version": {"type": "string"},
        "role": {"enum": ["leader", "follower", "candidate"]},
        "leader": {"type": ["string", "null"], "description": "the leader's node id"},
        "leader_raft": {"type": ["string", "null"]},
        "term": COUNT,
        "scheduler_term": COUNT,
        "commit_index": {"type": "integer"},
        "applied_index": {"type": "integer"},
        "log_len": {"type": "integer"},
        "compactions": {**COUNT, "description": "snapshots this node started at its turns"},
        "compaction_turn": {**COUNT, "description": "the log index of its last turn by entries (0: none)"},
        "digest": {"type": "string"},
        "commands": {
            "type": "integer",
            "minimum": 1,
            "description": "the highest command version this node applies",
        },
        "cluster_version": {
            "type": "integer",
            "minimum": 1,
            "description": "the committed command version: the lowest the members publish; "
            "no node proposes above it",
        },
        "members": {"type": "array", "items": ref("Member")},
    },
}

_HEALTH: Schema = {
    "type": "object",
    "required": ["ok", "node_id", "leader", "lag"],
    "properties": {
        "ok": {"type": "boolean"},
        "node_id": {"type": "string"},
        "leader": {"type": ["string", "null"]},
        "lag": {"type": "integer", "description": "committed but not yet applied entries"},
        "time_ms": {
            "type": "integer",
            "description": "this node's wall clock (the leader's clock check reads it)",
        },
        "clock_offset_ms": {
            "type": ["integer", "null"],
            "description": "this node's clock minus the cluster's (the median of all clocks)",
        },
        "clock_ok": {"type": "boolean", "description": "false: the clock is off, the node takes no new runs"},
        "raft_tick_age_s": {
            "type": "number",
            "description": "seconds since the Raft tick thread ticked (over a few election timeouts: 503)",
        },
    },
}

_STATS: Schema = {
    "type": "object",
    "required": ["cluster", "jobs"],
    "properties": {
        "cluster": ref("Counters"),
        "jobs": {"type": "object", "additionalProperties": ref("Counters")},
    },
}

_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "field"],
            "properties": {
                "code": {
                    "type": "string",
                    "description": "validation_error, unauthorized, not_found, already_exists, "
                    "version_mismatch, body_too_large, idempotency_mismatch, unavailable, indeterminate, ...",
                },
                "message": {"type": "string"},
                "field": {
                    "type": ["string", "null"],
                    "description": "the dotted path of what is wrong, indices for arrays: `task.command.2`",
                },
            },
        }
    },
}


# ---------------------------------------------------------------- membership and backup (documented here;
# members.py and backup.py check their bodies themselves)

_NODE_ADD: Schema = {
    "type": "object",
    "description": "a node to add as a voter; it starts from a `[node]` section outside `members`",
    "additionalProperties": False,
    "required": ["id", "raft", "http"],
    "properties": {
        "id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "raft": {"type": "string", "description": "`host:port` of its Raft endpoint"},
        "http": {
            "type": "string",
            "description": "its API base URL, `http(s)://host:port`, or `host:port` as in the cluster file",
        },
        "tags": {"type": "object", "additionalProperties": {"type": "string"}},
        "capacity": {"type": "integer", "minimum": 1, "maximum": 100_000, "default": 8},
    },
}


def _backup_job(time: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": ref("JobCreate"),
            "created_at": _nullable(time),
            "last_slot_at": _nullable(time),
            "next_fire_at": _nullable(time),
            "version": {"type": "integer"},
        },
    }


_BACKUP: Schema = {
    "type": "object",
    "description": "the job table (and with `?runs=true` the run history) as one versioned document",
    "required": ["format", "version", "raftsched", "created_at", "node", "digest", "jobs"],
    "properties": {
        "format": {"const": "raftsched-backup"},
        "version": {"const": 1},
        "raftsched": {"type": "string", "description": "the version that wrote it"},
        "created_at": TIME,
        "node": {"type": "string"},
        "digest": {"type": "string"},
        "redacted": {
            "type": "boolean",
            "description": 'true unless asked with `?secrets=true`: sensitive inline header values are "***"',
        },
        "jobs": {"type": "array", "items": _backup_job(TIME)},
        "runs": {"type": "array", "items": ref("Run")},
    },
}

_RESTORE_BODY: Schema = {
    "type": "object",
    "description": "a backup document, or a chunk of it (any subset of its jobs)",
    "required": ["format", "version", "jobs"],
    "properties": {
        "format": {"const": "raftsched-backup"},
        "version": {"const": 1},
        "jobs": {"type": "array", "items": _backup_job(TIME_INPUT)},
    },
}

_RESTORE_RESULT: Schema = {
    "type": "object",
    "required": ["dry_run", "created", "updated", "unchanged"],
    "properties": {
        "dry_run": {"type": "boolean"},
        "created": {"type": "array", "items": {"type": "string"}},
        "updated": {"type": "array", "items": {"type": "string"}},
        "unchanged": {"type": "array", "items": {"type": "string"}},
    },
}


_CHANNEL: Schema = {
    "type": "object",
    "description": "a channel as stored: secret NAMES only, never a value",
    "required": ["name", "type", "group_window_s"],
    "properties": {
        "name": _CHANNEL_NAME,
        "type": {"enum": ["webhook", "email", "message"]},
        "group_window_s": SECONDS,
        "url": {"type": "string"},
        "signing_secret": {"type": "object", "properties": {"secret": {"type": "string"}}},
        "format": {"enum": ["raw", "slack", "teams"]},
        "smtp": {"type": "string"},
        "from": {"type": "string"},
        "to": {"type": ["string", "array"], "items": {"type": "string"}},
        "starttls": {"type": "boolean"},
        "username": {"type": "string"},
        "password_secret": {"type": "string"},
        "broker": {"type": "string"},
    },
}
_ALERT_RULES_ANSWER: Schema = {
    "type": "object",
    "required": ["cluster", "rules"],
    "properties": {"cluster": {"type": "string"}, "rules": {"type": "array", "items": ref("ClusterRule")}},
}
_ALERT: Schema = {
    "type": "object",
    "description": "a decided alert and its delivery (at least once; de-duplicate by `alert_id`)",
    "required": ["alert_id", "event", "channel", "at", "count", "delivery"],
    "properties": {
        "alert_id": {"type": "string"},
        "event": {
            "type": "string",
            "description": "run.failed, run.timed_out, ..., node.down, node.clock, alerts.grouped",
        },
        "channel": {"type": "string"},
        "job_id": {"type": ["string", "null"]},
        "run_id": {"type": ["string", "null"]},
        "attempt": {"type": ["integer", "null"]},
        "state": {"type": ["string", "null"]},
        "error": {"type": ["string", "null"]},
        "node": {"type": ["string", "null"], "description": "the node a node event is about"},
        "scheduled_at": _nullable(TIME),
        "at": TIME,
        "count": {"type": "integer", "minimum": 1},
        "summary": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
        "decided_at": TIME,
        "delivery": {
            "type": "object",
            "required": ["state", "attempts"],
            "properties": {
                "state": {"enum": ["pending", "delivered", "failed"]},
                "attempts": COUNT,
                "node": {"type": ["string", "null"]},
                "last_error": {"type": ["string", "null"]},
                "next_attempt_at": _nullable(TIME),
                "delivered_at": _nullable(TIME),
            },
        },
    },
}


def _list_of(item: str) -> Schema:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": ref(item)},
            "next_cursor": {"type": ["string", "null"], "description": "pass as `cursor` for the next page"},
        },
    }


SCHEMAS: Final[dict[str, Schema]] = {
    # requests
    "JobCreate": _job_input(id_required=True),
    "JobReplace": _job_input(id_required=False),
    "TriggerBody": _TRIGGER_BODY,
    "Schedule": _SCHEDULE,
    "CronSchedule": _CRON_SCHEDULE,
    "EverySchedule": _EVERY_SCHEDULE,
    "AtSchedule": _AT_SCHEDULE,
    "Task": _TASK,
    "ShellTask": _SHELL_TASK,
    "HttpTask": _HTTP_TASK,
    "PythonTask": _PYTHON_TASK,
    "MessageTask": _MESSAGE_TASK,
    "SecretValue": _SECRET_VALUE,
    "Retries": _RETRIES,
    "Misfire": _MISFIRE,
    "Route": _ROUTE,
    "NotifyRule": _NOTIFY_RULE,
    "ClusterRule": _CLUSTER_RULE,
    "AlertRules": _ALERT_RULES,
    "ChannelPut": _CHANNEL_PUT,
    "WebhookChannel": _WEBHOOK_CHANNEL,
    "EmailChannel": _EMAIL_CHANNEL,
    "MessageChannel": _MESSAGE_CHANNEL,
    # answers
    "Job": _JOB,
    "JobList": _list_of("Job"),
    "Run": _RUN,
    "RunList": _list_of("Run"),
    "TriggerAnswer": _TRIGGER_ANSWER,
    "ReplayedWrite": _REPLAYED,
    "JobWritten": _or_replayed("Job"),
    "RunWritten": _or_replayed("Run"),
    "TriggerWritten": _or_replayed("TriggerAnswer"),
    "Node": _NODE,
    "NodeList": _list_of("Node"),
    "Member": _MEMBER,
    "Status": _STATUS,
    "Health": _HEALTH,
    "Summary": _SUMMARY,
    "Counters": _COUNTERS,
    "Stats": _STATS,
    "Error": _ERROR,
    "Channel": _CHANNEL,
    "ChannelList": _list_of("Channel"),
    "AlertRulesAnswer": _ALERT_RULES_ANSWER,
    "Alert": _ALERT,
    "AlertList": _list_of("Alert"),
    # membership and backup
    "NodeAdd": _NODE_ADD,
    "Backup": _BACKUP,
    "RestoreBody": _RESTORE_BODY,
    "RestoreResult": _RESTORE_RESULT,
}


# ---------------------------------------------------------------- validation


@functools.cache
def validator(name: str) -> Draft202012Validator:
    """A validator for `SCHEMAS[name]` that resolves its references to the other schemas."""
    if name not in SCHEMAS:
        raise KeyError(name)
    root = {"$schema": DIALECT, **ref(name), "components": {"schemas": SCHEMAS}}
    return Draft202012Validator(root)


def check_schemas() -> None:
    """Raise if any schema here is not a valid 2020-12 schema (the unit tests call it)."""
    for name, schema in SCHEMAS.items():
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as exc:  # pragma: no cover - a bug in this module
            raise AssertionError(f"{name}: {exc.message}") from exc


def validate(name: str, body: Any) -> None:
    """Raise `errors.ValidationError` naming the field of the first thing wrong with `body`."""
    error = next(iter(validator(name).iter_errors(body)), None)
    if error is None:
        return
    error = _deepest(error)
    if error.validator == "oneOf" and _UNION_MESSAGE in _schema(error):
        message, field = _union_error(error)
        raise ValidationError(message, field=field)
    raise ValidationError(_message(error), field=error_field(error))


def _schema(error: SchemaError) -> Schema:
    return error.schema if isinstance(error.schema, dict) else {}


def _branches(error: SchemaError) -> list[Schema]:
    """The branches of a `oneOf` error, as written (references unresolved)."""
    value = error.validator_value
    return [b for b in value if isinstance(b, dict)] if isinstance(value, list) else []


def _union_error(error: SchemaError) -> tuple[str, str | None]:
    """A union whose branch the instance did not choose (`_branch`)."""
    field = error_field(error)
    if not isinstance(error.instance, dict):
        nullable = any(b.get("type") == "null" for b in _branches(error))
        return ("must be an object or null" if nullable else "must be an object"), field
    key = _schema(error).get(_UNION_FIELD)
    return str(_schema(error)[_UNION_MESSAGE]), _join(field, key) if key else field


def _deepest(error: SchemaError) -> SchemaError:
    """Down through each `oneOf` to the first error of the branch the instance chose, if it chose."""
    while error.validator == "oneOf" and error.context:
        chosen = _branch(error)
        errors = [e for e in error.context if e.relative_schema_path[0] == chosen]
        if chosen is None or not errors:
            return error
        error = errors[0]
    return error


def _branch(error: SchemaError) -> int | None:
    """The branch an object chose: by the discriminator's value, or else the one branch whose
    required keys it has (None: no such branch, or several)."""
    instance, branches = error.instance, _branches(error)
    if not isinstance(instance, dict):
        return None
    discriminator = _schema(error).get("discriminator")
    if discriminator is not None:
        target = discriminator["mapping"].get(instance.get(discriminator["propertyName"]))
        refs = [b.get("$ref") for b in branches]
        return refs.index(target) if target in refs else None
    required = [_resolve(b).get("required") or () for b in branches]
    having = [i for i, keys in enumerate(required) if keys and all(k in instance for k in keys)]
    return having[0] if len(having) == 1 else None


def _resolve(schema: Schema) -> Schema:
    target = schema.get("$ref")
    return SCHEMAS[target.rsplit("/", 1)[1]] if isinstance(target, str) else schema


def _join(path: str | None, key: str) -> str:
    return f"{path}.{key}" if path else key


def error_field(error: SchemaError) -> str | None:
    """The dotted path of a jsonschema error: `task.command.2`; unknown and missing keys by their own
    path, and so a key that is no valid name (`task.env.A=B`, from `propertyNames`)."""
    path = [str(p) for p in error.absolute_path]
    instance, value = error.instance, error.validator_value
    if "propertyNames" in error.absolute_schema_path:
        if instance:  # the key itself; an empty one is named by its object
            path.append(str(instance))
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        extra = _unknown_keys(error)
        if extra:
            path.append(extra[0])
    elif error.validator == "required" and isinstance(instance, dict) and isinstance(value, list):
        missing = [key for key in value if key not in instance]
        if missing:
            path.append(str(missing[0]))
    return ".".join(path) or None


def _unknown_keys(error: SchemaError) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    known = schema.get("properties", {})
    instance = error.instance if isinstance(error.instance, dict) else {}
    return [str(key) for key in instance if key not in known]


_SECRET_BEARING = frozenset({"headers", "env", "signing_secret", "password_secret"})  # values may be secrets


def _shown(error: SchemaError) -> str:
    """jsonschema's message, with the value it starts with quoted at most `errors.QUOTE_CHARS` long
    (a 1 MiB description came back as a 1 MiB error)."""
    message, value = str(error.message), repr(error.instance)
    if len(value) > 200 and message.startswith(value):
        return quoted(error.instance) + message[len(value) :]
    return message if len(message) <= 400 else message[:400] + "..."


def _quiet_message(error: SchemaError) -> str:
    """A message built from the schema alone: jsonschema's own messages quote the value sent."""
    schema = error.schema if isinstance(error.schema, dict) else {}
    value = error.validator_value
    if error.validator == "type":
        kinds = value if isinstance(value, list) else [value]
        return "must be of type " + " or ".join(str(kind) for kind in kinds)
    if error.validator == "maxLength":
        return f"longer than {value} characters"
    if "description" in schema:
        return f"must be {schema['description']}"
    return f"is not valid ({error.validator})"


def _message(error: SchemaError) -> str:
    """One line for `error`. Under `headers` or `env` it never shows the value sent there: it may
    be a secret (the field's path, and names, are shown)."""
    quiet = error.validator not in ("additionalProperties", "required")
    if quiet and _SECRET_BEARING.intersection(str(p) for p in error.absolute_path):
        return _quiet_message(error)
    if error.validator == "additionalProperties":
        extra = _unknown_keys(error)
        if extra:
            return f"unknown field {quoted(extra[0])}"
    if error.validator == "required":
        return "is required"
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "pattern" and error.validator_value == TIME_INPUT["pattern"]:
        return f"must be {TIME_INPUT['description']}"
    if error.validator in ("oneOf", "anyOf", "pattern") and "description" in schema:
        return f"must be {schema['description']}"
    return _shown(error)
