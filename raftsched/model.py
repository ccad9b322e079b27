"""Plain data: the job spec as users write it, runs and nodes as the state keeps them.

`JobSpec.from_dict` is the one strict parser of the job contract (API.md): unknown fields
are rejected and every error names its dotted field. `to_dict` gives the wire form back.
Time fields are epoch milliseconds inside (`*_ms`) and ISO 8601 strings on the wire.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

from yarl import URL

from . import templates
from .brokers import BROKER_NAME_RE
from .errors import ValidationError, quoted
from .ids import JOB_ID_RE
from .secretstore import SECRET_NAME_RE

__all__ = [
    "AlertOn",
    "Delivery",
    "JobSpec",
    "Misfire",
    "MisfirePolicy",
    "NotifyRule",
    "Overlap",
    "Retries",
    "Route",
    "RouteStrategy",
    "REDACTED",
    "RunState",
    "Schedule",
    "SecretRef",
    "TaskSpec",
    "TaskType",
    "TextOrSecret",
    "check_env",
    "check_kwargs",
    "check_startable",
    "is_sensitive_header",
    "iso_ms",
    "notify_rules",
    "parse_iso_ms",
    "spec_from_snapshot",
    "values_from_wire",
    "values_to_wire",
]

E = TypeVar("E", bound=StrEnum)

READ_ONLY_JOB_FIELDS = frozenset(
    {
        "version",
        "next_fire_at",
        "last_fire_at",
        "next_slot_at",
        "last_slot_at",
        "created_at",
        "updated_at",
        "stats",
        "incarnation",
        "updated_by",
        "audit",
        "last_run",
    }
)


class TaskType(StrEnum):
    SHELL = "shell"
    HTTP = "http"
    PYTHON = "python"
    MESSAGE = "message"


class Overlap(StrEnum):
    FORBID = "forbid"
    ALLOW = "allow"
    REPLACE = "replace"
    QUEUE = "queue"


class MisfirePolicy(StrEnum):
    FIRE_ONCE = "fire_once"
    FIRE_ALL = "fire_all"
    SKIP = "skip"


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    AT_MOST_ONCE = "at_most_once"


class RouteStrategy(StrEnum):
    LEAST_LOADED = "least_loaded"
    ROUND_ROBIN = "round_robin"
    RANDOM = "random"
    HASH = "hash"
    BROADCAST = "broadcast"
    SHARDS = "shards"


class RunState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    LOST = "lost"
    SKIPPED = "skipped"
    MISSED = "missed"

    @property
    def active(self) -> bool:
        return self in (RunState.PENDING, RunState.RUNNING)


# ---------------------------------------------------------------- time on the wire


MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z: the last time ISO 8601 can write


def iso_ms(ms: int | None) -> str | None:
    """Epoch ms -> `2026-11-25T16:30:00.123Z`."""
    if ms is None:
        return None
    dt = datetime.fromtimestamp(min(max(ms, 0), MAX_TIME_MS) // 1000, tz=UTC)
    return f"{dt.year:04d}-{dt:%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


def parse_iso_ms(value: object, path: str) -> int:
    """An ISO 8601 time with `Z` or an offset -> epoch ms; naive times are refused."""
    if not isinstance(value, str):
        raise ValidationError("must be an ISO 8601 time string", field=path)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValidationError(f"not an ISO 8601 time: {quoted(value)}", field=path) from None
    if dt.tzinfo is None:
        raise ValidationError("time must carry 'Z' or an offset", field=path)
    ms = int(round(dt.timestamp() * 1000))
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValidationError("must be between 1970 and 9999 (UTC)", field=path)
    return ms


# ---------------------------------------------------------------- field readers


def _obj(value: object, path: str, allowed: frozenset[str] | set[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", field=path or None)
    for key in value:
        if key not in allowed:
            raise ValidationError(f"unknown field {quoted(key)}", field=_join(path, str(key)))
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _str(value: object, path: str, *, max_len: int = 4096, allow_empty: bool = True) -> str:
    if not isinstance(value, str):
        raise ValidationError("must be a string", field=path)
    if len(value) > max_len:
        raise ValidationError(f"longer than {max_len} characters", field=path)
    if not allow_empty and not value:
        raise ValidationError("must not be empty", field=path)
    return value


def _num(value: object, path: str, *, minimum: float = 0, maximum: float = 10**9) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError("must be a number", field=path)
    if not minimum <= value <= maximum:
        raise ValidationError(f"must be between {minimum:g} and {maximum:g}", field=path)
    return float(value)


def _int(value: object, path: str, *, minimum: int = 0, maximum: int = 10**9) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError("must be an integer", field=path)
    if not minimum <= value <= maximum:
        raise ValidationError(f"must be between {minimum} and {maximum}", field=path)
    return value


def _bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError("must be true or false", field=path)
    return value


def _str_map(value: object, path: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object of strings", field=path)
    out: dict[str, str] = {}
    for key, item in value.items():
        out[_str(key, path, max_len=256)] = _str(item, _join(path, str(key)))
    return out


# ---------------------------------------------------------------- secret references


@dataclass(frozen=True, slots=True)
class SecretRef:
    """`{"secret": "NAME"}`: a value the executing node looks up when a run starts (`secretstore`).

    The job, the log, snapshots and backups hold this reference, never the value."""

    name: str

    def to_dict(self) -> dict[str, str]:
        return {"secret": self.name}


TextOrSecret = str | SecretRef  # a value of `task.headers` or `task.env`

# Inline header values answered as REDACTED (API.md "Secret references"): these names, and names
# ending in `-Token` or `-Key`, in any case.
REDACTED = "***"
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


def is_sensitive_header(name: str) -> bool:
    lower = name.lower()
    return lower in _SENSITIVE_HEADERS or lower.endswith(("-token", "-key"))


def _secret_ref(value: Mapping[str, Any], path: str) -> SecretRef:
    _obj(value, path, frozenset({"secret"}))
    if "secret" not in value:
        raise ValidationError("is required", field=f"{path}.secret")
    name = _str(value["secret"], f"{path}.secret", max_len=256)
    if not SECRET_NAME_RE.fullmatch(name):
        raise ValidationError("must match [A-Za-z_][A-Za-z0-9_]*", field=f"{path}.secret")
    return SecretRef(name)


def _value_map(value: object, path: str) -> dict[str, TextOrSecret]:
    """Headers or env: string keys to strings or `{"secret": NAME}`."""
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object of strings or secret references", field=path)
    out: dict[str, TextOrSecret] = {}
    for key, item in value.items():
        where = _join(path, str(key))
        out[_str(key, path, max_len=256)] = (
            _secret_ref(item, where) if isinstance(item, Mapping) else _str(item, where)
        )
    return out


def values_to_wire(values: dict[str, TextOrSecret]) -> dict[str, Any]:
    """The wire form of headers or env: the same dict when it holds no reference (the common case)."""
    if all(type(v) is str for v in values.values()):
        return values
    return {k: v if isinstance(v, str) else v.to_dict() for k, v in values.items()}


def values_from_wire(values: Mapping[str, Any]) -> dict[str, TextOrSecret]:
    """The inverse of `values_to_wire` for what this code wrote itself (snapshots, run overrides)."""
    if all(type(v) is str for v in values.values()):
        return values  # type: ignore[return-value]
    return {k: v if isinstance(v, str) else SecretRef(v["secret"]) for k, v in values.items()}


def _enum(cls: type[E], value: object, path: str) -> E:
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        return cls(value)
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise ValidationError(f"must be one of: {choices}", field=path) from None


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


# ---------------------------------------------------------------- schedule


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """Exactly one of `cron`, `every_s`, `at_ms`. Checked for syntax by `triggers.check_schedule`."""

    cron: str | None = None
    every_s: float | None = None
    at_ms: int | None = None
    start_at_ms: int | None = None
    end_at_ms: int | None = None
    timezone: str = "UTC"

    _FIELDS = frozenset({"cron", "every", "at", "start_at", "end_at", "timezone"})

    @classmethod
    def from_dict(cls, value: object, path: str = "schedule") -> Schedule:
        d = _obj(value, path, cls._FIELDS)
        kinds = [k for k in ("cron", "every", "at") if k in d]
        if len(kinds) != 1:
            raise ValidationError("exactly one of cron, every, at is required", field=path)
        tz = _str(d.get("timezone", "UTC"), f"{path}.timezone", max_len=64, allow_empty=False)
        end = parse_iso_ms(d["end_at"], f"{path}.end_at") if "end_at" in d else None
        start = parse_iso_ms(d["start_at"], f"{path}.start_at") if "start_at" in d else None
        if start is not None and "every" not in d:
            raise ValidationError("start_at applies to 'every' schedules only", field=f"{path}.start_at")
        if "at" in d and end is not None:
            raise ValidationError("end_at does not apply to 'at'", field=f"{path}.end_at")
        return cls(
            cron=_str(d["cron"], f"{path}.cron", max_len=256, allow_empty=False) if "cron" in d else None,
            every_s=_num(d["every"], f"{path}.every", minimum=0.1, maximum=10**8) if "every" in d else None,
            at_ms=parse_iso_ms(d["at"], f"{path}.at") if "at" in d else None,
            start_at_ms=start,
            end_at_ms=end,
            timezone=tz,
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {
                "cron": self.cron,
                "every": self.every_s,
                "at": iso_ms(self.at_ms),
                "start_at": iso_ms(self.start_at_ms),
                "end_at": iso_ms(self.end_at_ms),
                "timezone": self.timezone,
            }
        )


# ---------------------------------------------------------------- task

_STATUS_RANGE = re.compile(r"^([1-5]\d\d)-([1-5]\d\d)$")
CALLABLE_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_TASK_FIELDS = {
    TaskType.SHELL: frozenset({"type", "command", "env", "cwd"}),
    TaskType.HTTP: frozenset({"type", "method", "url", "headers", "body", "expect_status"}),
    TaskType.PYTHON: frozenset({"type", "callable", "kwargs", "env", "in_process"}),
    TaskType.MESSAGE: frozenset({"type", "broker", "to", "body", "content_type", "headers", "options"}),
}
# A message task's `options`, by name: the values each may take (brokers ignore the others' keys).
_MESSAGE_OPTIONS: dict[str, tuple[object, ...]] = {
    "mode": ("stream", "list", "pubsub"),  # redis
    "require_receivers": (True, False),  # redis pubsub
    "qos": (0, 1, 2),  # mqtt
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    type: TaskType
    command: list[str] | str | None = None
    env: dict[str, TextOrSecret] = field(default_factory=dict)
    cwd: str | None = None
    method: str = "GET"
    url: str | None = None
    headers: dict[str, TextOrSecret] = field(default_factory=dict)
    body: Any = None
    expect_status: list[tuple[int, int]] = field(default_factory=lambda: [(200, 299)])
    callable: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    in_process: bool = False
    broker: str | None = None
    to: str | None = None
    content_type: str | None = None  # None: application/json, or text/plain for a string body
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, value: object, path: str = "task") -> TaskSpec:
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object", field=path)
        kind = _enum(TaskType, value.get("type"), f"{path}.type")
        d = _obj(value, path, _TASK_FIELDS[kind])
        if kind is TaskType.SHELL:
            return cls(
                type=kind,
                command=_command(d.get("command"), f"{path}.command"),
                env=_value_map(d.get("env", {}), f"{path}.env"),
                cwd=_str(d["cwd"], f"{path}.cwd") if d.get("cwd") is not None else None,
            )
        if kind is TaskType.HTTP:
            return cls(
                type=kind,
                method=_method(d.get("method", "GET"), f"{path}.method"),
                url=_url(d.get("url"), f"{path}.url"),
                headers=_value_map(d.get("headers", {}), f"{path}.headers"),
                body=d.get("body"),
                expect_status=_expect(d.get("expect_status", "200-299"), f"{path}.expect_status"),
            )
        if kind is TaskType.MESSAGE:
            return cls._message(d, path)
        kwargs = d.get("kwargs", {})
        if not isinstance(kwargs, Mapping):
            raise ValidationError("must be an object", field=f"{path}.kwargs")
        target = _str(d.get("callable"), f"{path}.callable", max_len=512)
        if not CALLABLE_RE.fullmatch(target):
            raise ValidationError("must look like 'pkg.module:function'", field=f"{path}.callable")
        return cls(
            type=kind,
            callable=target,
            kwargs=dict(kwargs),
            env=_value_map(d.get("env", {}), f"{path}.env"),
            in_process=_bool(d.get("in_process", False), f"{path}.in_process"),
        )

    @classmethod
    def _message(cls, d: Mapping[str, Any], path: str) -> TaskSpec:
        broker = _str(d.get("broker"), f"{path}.broker", max_len=64, allow_empty=False)
        if not BROKER_NAME_RE.fullmatch(broker):
            raise ValidationError(f"must match {BROKER_NAME_RE.pattern}", field=f"{path}.broker")
        to = _str(d.get("to"), f"{path}.to", max_len=1024, allow_empty=False)
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in to):
            raise ValidationError("must not contain control characters", field=f"{path}.to")
        body = d.get("body", "")
        try:
            templates.check_value(body)
        except templates.TemplateError as exc:
            raise ValidationError(str(exc), field=f"{path}.body") from None
        ctype = d.get("content_type")
        return cls(
            type=TaskType.MESSAGE,
            broker=broker,
            to=to,
            body=body,
            content_type=_str(ctype, f"{path}.content_type", max_len=256) if ctype is not None else None,
            headers=_value_map(d.get("headers", {}), f"{path}.headers"),
            options=_message_options(d.get("options", {}), f"{path}.options"),
        )

    def message_content_type(self) -> str:
        if self.content_type is not None:
            return self.content_type
        return "text/plain; charset=utf-8" if isinstance(self.body, str) else "application/json"

    def to_dict(self) -> dict[str, Any]:
        if self.type is TaskType.MESSAGE:
            return {
                "type": "message",
                "broker": self.broker,
                "to": self.to,
                "body": self.body,
                "content_type": self.content_type,
                "headers": values_to_wire(self.headers),
                "options": self.options,
            }
        if self.type is TaskType.SHELL:
            return {
                "type": "shell",
                "command": self.command,
                "env": values_to_wire(self.env),
                "cwd": self.cwd,
            }
        if self.type is TaskType.HTTP:
            ranges = [f"{lo}-{hi}" if lo != hi else lo for lo, hi in self.expect_status]
            return {
                "type": "http",
                "method": self.method,
                "url": self.url,
                "headers": values_to_wire(self.headers),
                "body": self.body,
                "expect_status": ranges,
            }
        return {
            "type": "python",
            "callable": self.callable,
            "kwargs": self.kwargs,
            "env": values_to_wire(self.env),
            "in_process": self.in_process,
        }


def _message_options(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValidationError("must be an object", field=path)
    for key, option in value.items():
        allowed = _MESSAGE_OPTIONS.get(key)
        if allowed is None:
            raise ValidationError(f"unknown option: use {', '.join(_MESSAGE_OPTIONS)}", field=f"{path}.{key}")
        if option not in allowed or isinstance(option, bool) != isinstance(allowed[0], bool):
            choices = ", ".join("true" if a is True else "false" if a is False else str(a) for a in allowed)
            raise ValidationError(f"must be one of {choices}", field=f"{path}.{key}")
    return dict(value)


def _command(value: object, path: str) -> list[str] | str:
    if isinstance(value, str):
        return _str(value, path, max_len=65536, allow_empty=False)
    if not isinstance(value, list) or not value:
        raise ValidationError("must be a non-empty list of strings (or a shell string)", field=path)
    return [_str(item, f"{path}.{i}", max_len=65536) for i, item in enumerate(value)]


def _method(value: object, path: str) -> str:
    method = _str(value, path, max_len=16).upper()
    if method not in _HTTP_METHODS:
        raise ValidationError(f"unsupported HTTP method {quoted(value)}", field=path)
    return method


def _url(value: object, path: str) -> str:
    url = _str(value, path, max_len=8192, allow_empty=False)
    if not re.match(r"^https?://[^/\s]+", url):
        raise ValidationError("must be an http:// or https:// URL", field=path)
    return url


def _expect(value: object, path: str) -> list[tuple[int, int]]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValidationError("must not be empty", field=path)
    out: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        where = f"{path}.{i}" if isinstance(value, list) else path
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
            continue
        match = _STATUS_RANGE.match(item) if isinstance(item, str) else None
        if not match or int(match[1]) > int(match[2]):
            raise ValidationError("must be a status code or a range like '200-299'", field=where)
        out.append((int(match[1]), int(match[2])))
    return out


# ---------------------------------------------------------------- can the task start?
#
# What a task hands to execve, to an HTTP request or to the filesystem, checked when the API
# takes the job: before these checks such a job was accepted and every run of it failed with
# "internal error: ValueError ..." (an env name with "=", a NUL in an argv item, a CR/LF in a
# header, a relative cwd). The API checks; `from_dict`, which the state applies with, does not:
# logs written before these checks may hold jobs that fail them, and must replay as they did.

NUL = "\x00"
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 7230 `token`
_HEADER_VALUE_BAD_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # no control character but HTAB
_URL_BAD_RE = re.compile(r"[\x00-\x20\x7f]")  # control characters and whitespace


def check_startable(task: TaskSpec, path: str = "task") -> None:
    """Raise ValidationError, naming the field, for what the executing node could not pass on."""
    check_env(task.env, f"{path}.env")
    check_kwargs(task.kwargs, f"{path}.kwargs")
    if isinstance(task.command, str):
        _no_nul(task.command, f"{path}.command")
    elif task.command is not None:
        for i, item in enumerate(task.command):
            _no_nul(item, f"{path}.command.{i}")
        if not task.command[0]:
            raise ValidationError("the program must not be empty", field=f"{path}.command.0")
    if task.cwd is not None:
        _check_cwd(task.cwd, f"{path}.cwd")
    for name, value in task.headers.items():
        _check_header(name, value, _join(f"{path}.headers", name))
    if task.url is not None:
        _check_url(task.url, f"{path}.url")


def check_env(env: Mapping[str, TextOrSecret], path: str) -> None:
    """`task.env`, or a trigger's env override: names execve can pass (not empty, no "=", no
    NUL), values without NUL (a secret's value is checked where it is resolved)."""
    for name, value in env.items():
        where = _join(path, name) if name else path
        if not name:
            raise ValidationError("an environment variable name must not be empty", field=where)
        if "=" in name or NUL in name:
            raise ValidationError(f"not a valid environment variable name: {quoted(name)}", field=where)
        if isinstance(value, str):
            _no_nul(value, where)


def check_kwargs(kwargs: Mapping[str, Any], path: str) -> None:
    """`task.kwargs`, or a trigger's override: keyword arguments, so Python identifiers."""
    for name in kwargs:
        if not name.isidentifier():
            message = f"a keyword argument name must be a Python identifier: {quoted(name)}"
            raise ValidationError(message, field=_join(path, name))


def _no_nul(value: str, path: str) -> None:
    if NUL in value:
        raise ValidationError("must not contain a NUL character", field=path)


def _check_cwd(cwd: str, path: str) -> None:
    _no_nul(cwd, path)
    if not cwd.startswith("/"):
        raise ValidationError("must be an absolute path", field=path)


def _check_header(name: str, value: TextOrSecret, path: str) -> None:
    if not HEADER_NAME_RE.fullmatch(name):
        raise ValidationError(f"not a valid HTTP header name (RFC 7230 token): {quoted(name)}", field=path)
    if isinstance(value, str) and _HEADER_VALUE_BAD_RE.search(value):
        raise ValidationError("must not contain CR, LF or other control characters", field=path)


def _check_url(url: str, path: str) -> None:
    """A URL the http executor (yarl) parses, with a host and a port; no whitespace or control
    characters (they would reach the request line)."""
    if _URL_BAD_RE.search(url):
        raise ValidationError("must not contain spaces or control characters", field=path)
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"not a valid URL: {quoted(str(exc))}", field=path) from None
    if not parsed.raw_host or port is None:
        raise ValidationError("must name a host", field=path)


# ---------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True, kw_only=True)
class Retries:
    max: int = 0
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    jitter: float = 0.1

    @classmethod
    def from_dict(cls, value: object, path: str = "retries") -> Retries:
        d = _obj(value, path, frozenset({"max", "initial_delay", "backoff", "max_delay", "jitter"}))
        base = cls()
        return cls(
            max=_int(d.get("max", base.max), f"{path}.max", maximum=1000),
            initial_delay=_num(
                d.get("initial_delay", base.initial_delay), f"{path}.initial_delay", maximum=86400
            ),
            backoff=_num(d.get("backoff", base.backoff), f"{path}.backoff", minimum=1, maximum=100),
            max_delay=_num(d.get("max_delay", base.max_delay), f"{path}.max_delay", maximum=86400),
            jitter=_num(d.get("jitter", base.jitter), f"{path}.jitter", maximum=1),
        )

    def delay_s(self, attempt: int) -> float:
        """Delay before `attempt` (>= 2), without jitter."""
        return float(min(self.max_delay, self.initial_delay * self.backoff ** max(0, attempt - 2)))


@dataclass(frozen=True, slots=True, kw_only=True)
class Misfire:
    policy: MisfirePolicy = MisfirePolicy.FIRE_ONCE
    grace: float = 60.0
    max_catchup: int = 10

    @classmethod
    def from_dict(cls, value: object, path: str = "misfire") -> Misfire:
        d = _obj(value, path, frozenset({"policy", "grace", "max_catchup"}))
        return cls(
            policy=_enum(MisfirePolicy, d.get("policy", "fire_once"), f"{path}.policy"),
            grace=_num(d.get("grace", 60.0), f"{path}.grace", maximum=10**7),
            max_catchup=_int(d.get("max_catchup", 10), f"{path}.max_catchup", maximum=10000),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    strategy: RouteStrategy = RouteStrategy.LEAST_LOADED
    tags: dict[str, str] = field(default_factory=dict)
    shards: int = 1

    @classmethod
    def from_dict(cls, value: object, path: str = "route") -> Route:
        d = _obj(value, path, frozenset({"strategy", "tags", "shards"}))
        strategy = _enum(RouteStrategy, d.get("strategy", "least_loaded"), f"{path}.strategy")
        if "shards" in d and strategy is not RouteStrategy.SHARDS:
            raise ValidationError("shards applies to strategy 'shards' only", field=f"{path}.shards")
        shards = _int(d.get("shards", 1), f"{path}.shards", minimum=1, maximum=1024)
        return cls(strategy=strategy, tags=_str_map(d.get("tags", {}), f"{path}.tags"), shards=shards)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"strategy": self.strategy, "tags": self.tags}
        if self.strategy is RouteStrategy.SHARDS:
            out["shards"] = self.shards
        return out


# ---------------------------------------------------------------- alert rules


class AlertOn(StrEnum):
    """What an alert rule fires on (API.md "Alerts"). The run events count the final attempt only."""

    FAILED = "failed"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    MISSED = "missed"
    SKIPPED = "skipped"  # overlap only, never a pause
    LATE = "late"  # a start later than the rule's `threshold_s` past due
    NODE_DOWN = "node_down"
    NODE_CLOCK = "node_clock"


NODE_EVENTS = frozenset({AlertOn.NODE_DOWN, AlertOn.NODE_CLOCK})
CHANNEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_RULES = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class NotifyRule:
    """`{"on": [...], "channel": NAME, "threshold_s": S}`: events that alert `channel`.
    `threshold_s` is required with (and only with) `late`."""

    on: tuple[AlertOn, ...]
    channel: str
    threshold_s: float | None = None

    @classmethod
    def from_dict(cls, value: object, path: str, *, job: bool) -> NotifyRule:
        d = _obj(value, path, frozenset({"on", "channel", "threshold_s"}))
        raw_on = d.get("on")
        if not isinstance(raw_on, list) or not raw_on:
            raise ValidationError("must be a non-empty list of events", field=f"{path}.on")
        on = tuple(dict.fromkeys(_enum(AlertOn, v, f"{path}.on.{i}") for i, v in enumerate(raw_on)))
        if job and NODE_EVENTS & set(on):
            raise ValidationError("node events belong in the cluster's rules", field=f"{path}.on")
        channel = _str(d.get("channel"), f"{path}.channel", max_len=64)
        if not CHANNEL_NAME_RE.fullmatch(channel):
            raise ValidationError("must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", field=f"{path}.channel")
        threshold = d.get("threshold_s")
        if (threshold is None) == (AlertOn.LATE in on):
            raise ValidationError("is required with `late`, and only with it", field=f"{path}.threshold_s")
        return cls(
            on=on,
            channel=channel,
            threshold_s=None if threshold is None else _num(threshold, f"{path}.threshold_s", maximum=86400),
        )

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> NotifyRule:
        """What `to_dict` wrote (this code's own snapshots)."""
        threshold = d.get("threshold_s")
        return cls(
            on=tuple(AlertOn(v) for v in d["on"]),
            channel=d["channel"],
            threshold_s=None if threshold is None else float(threshold),
        )

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(
            {"on": [str(v) for v in self.on], "channel": self.channel, "threshold_s": self.threshold_s}
        )


def notify_rules(value: object, path: str, *, job: bool) -> tuple[NotifyRule, ...]:
    """A list of rules (a job's `notify`, or the cluster's), at most MAX_RULES."""
    if not isinstance(value, list):
        raise ValidationError("must be a list of rules", field=path)
    if len(value) > MAX_RULES:
        raise ValidationError(f"at most {MAX_RULES} rules", field=path)
    return tuple(NotifyRule.from_dict(v, f"{path}.{i}", job=job) for i, v in enumerate(value))


# ---------------------------------------------------------------- job

_JOB_FIELDS = (
    frozenset(
        {
            "id",
            "schedule",
            "task",
            "timeout",
            "retries",
            "delivery",
            "overlap",
            "misfire",
            "route",
            "jitter",
            "paused",
            "description",
            "labels",
            "notify",
        }
    )
    | READ_ONLY_JOB_FIELDS
)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    """What a user asks for. The state adds version, times and counters around it."""

    id: str
    schedule: Schedule | None  # None: manual-only, fired by triggers alone (API.md)
    task: TaskSpec
    timeout: float | None = None
    retries: Retries = field(default_factory=Retries)
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    overlap: Overlap = Overlap.FORBID
    misfire: Misfire = field(default_factory=Misfire)
    route: Route = field(default_factory=Route)
    jitter: float = 0.0
    paused: bool = False
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    notify: tuple[NotifyRule, ...] = ()  # alert rules of the job's runs (`alerting`)

    @classmethod
    def from_dict(cls, value: object, *, job_id: str | None = None) -> JobSpec:
        """Parse the wire form strictly; `job_id` (from the URL) fills or must match `id`."""
        d = _obj(value, "", _JOB_FIELDS)
        raw_id = d.get("id", job_id)
        if job_id is not None and raw_id != job_id:
            raise ValidationError("id in the body differs from the URL", field="id")
        jid = _str(raw_id, "id", max_len=128)
        if not JOB_ID_RE.fullmatch(jid):
            raise ValidationError("must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", field="id")
        if "schedule" not in d:
            raise ValidationError("is required (null for a job run only by triggers)", field="schedule")
        if "task" not in d:
            raise ValidationError("is required", field="task")
        timeout = d.get("timeout")
        return cls(
            id=jid,
            schedule=None if d["schedule"] is None else Schedule.from_dict(d["schedule"]),
            task=TaskSpec.from_dict(d["task"]),
            timeout=None if timeout is None else _num(timeout, "timeout", minimum=0.001, maximum=10**7),
            retries=Retries.from_dict(d.get("retries", {})),
            delivery=_enum(Delivery, d.get("delivery", "at_least_once"), "delivery"),
            overlap=_enum(Overlap, d.get("overlap", "forbid"), "overlap"),
            misfire=Misfire.from_dict(d.get("misfire", {})),
            route=Route.from_dict(d.get("route", {})),
            jitter=_num(d.get("jitter", 0), "jitter", maximum=86400),
            paused=_bool(d.get("paused", False), "paused"),
            description=_str(d.get("description", ""), "description"),
            labels=_str_map(d.get("labels", {}), "labels"),
            notify=notify_rules(d.get("notify", []), "notify", job=True),
        )

    def to_dict(self) -> dict[str, Any]:
        """The wire form; `notify` only when the job has rules (a job without any writes what it
        always wrote: old logs and snapshots keep their bytes)."""
        out = self._fields()
        if self.notify:
            out["notify"] = [rule.to_dict() for rule in self.notify]
        return out

    def _fields(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "schedule": None if self.schedule is None else self.schedule.to_dict(),
            "task": self.task.to_dict(),
            "timeout": self.timeout,
            "retries": dataclasses.asdict(self.retries),
            "delivery": self.delivery,
            "overlap": self.overlap,
            "misfire": dataclasses.asdict(self.misfire),
            "route": self.route.to_dict(),
            "jitter": self.jitter,
            "paused": self.paused,
            "description": self.description,
            "labels": self.labels,
        }


# ---------------------------------------------------------------- trusted: our own snapshots


def spec_from_snapshot(d: Mapping[str, Any]) -> JobSpec:
    """The inverse of `JobSpec.to_dict` for what this code wrote itself (a snapshot): the same spec
    as `JobSpec.from_dict(d)` gives, without re-validating every field of every job. Anything that
    did not come from `to_dict` (the API, a backup) goes through `from_dict`. A missing key gets
    `from_dict`'s default; a malformed value raises KeyError, TypeError or ValueError."""
    timeout = d.get("timeout")
    retries, misfire, route = d.get("retries", {}), d.get("misfire", {}), d.get("route", {})
    return JobSpec(
        id=d["id"],
        schedule=None if d["schedule"] is None else _schedule_from_snapshot(d["schedule"]),
        task=_task_from_snapshot(d["task"]),
        timeout=None if timeout is None else float(timeout),
        retries=Retries(
            max=retries.get("max", 0),
            initial_delay=float(retries.get("initial_delay", 1.0)),
            backoff=float(retries.get("backoff", 2.0)),
            max_delay=float(retries.get("max_delay", 60.0)),
            jitter=float(retries.get("jitter", 0.1)),
        ),
        delivery=Delivery(d.get("delivery", "at_least_once")),
        overlap=Overlap(d.get("overlap", "forbid")),
        misfire=Misfire(
            policy=MisfirePolicy(misfire.get("policy", "fire_once")),
            grace=float(misfire.get("grace", 60.0)),
            max_catchup=misfire.get("max_catchup", 10),
        ),
        route=Route(
            strategy=RouteStrategy(route.get("strategy", "least_loaded")),
            tags=route.get("tags", {}),
            shards=route.get("shards", 1),
        ),
        jitter=float(d.get("jitter", 0)),
        paused=d.get("paused", False),
        description=d.get("description", ""),
        labels=d.get("labels", {}),
        notify=tuple(NotifyRule.from_wire(r) for r in d.get("notify", ())),
    )


def _schedule_from_snapshot(d: Mapping[str, Any]) -> Schedule:
    every, at, start, end = d.get("every"), d.get("at"), d.get("start_at"), d.get("end_at")
    return Schedule(
        cron=d.get("cron"),
        every_s=None if every is None else float(every),
        at_ms=None if at is None else parse_iso_ms(at, "schedule.at"),
        start_at_ms=None if start is None else parse_iso_ms(start, "schedule.start_at"),
        end_at_ms=None if end is None else parse_iso_ms(end, "schedule.end_at"),
        timezone=d.get("timezone", "UTC"),
    )


def _task_from_snapshot(d: Mapping[str, Any]) -> TaskSpec:
    kind = TaskType(d["type"])
    if kind is TaskType.SHELL:
        return TaskSpec(
            type=kind, command=d["command"], env=values_from_wire(d.get("env", {})), cwd=d.get("cwd")
        )
    if kind is TaskType.HTTP:
        return TaskSpec(
            type=kind,
            method=d.get("method", "GET"),
            url=d["url"],
            headers=values_from_wire(d.get("headers", {})),
            body=d.get("body"),
            expect_status=_expect(d.get("expect_status", "200-299"), "task.expect_status"),
        )
    return TaskSpec(
        type=kind,
        callable=d["callable"],
        kwargs=dict(d.get("kwargs", {})),
        env=values_from_wire(d.get("env", {})),
        in_process=d.get("in_process", False),
    )
