"""The admin API: `make_app()` builds it; nothing happens at import.

Every node serves it. Reads answer from this node's applied state; writes become commands
proposed through Raft from whichever node received them, and a 2xx means committed and
applied here. Errors of every kind leave through one middleware as the JSON envelope.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from .. import __version__
from ..clock import Clock
from ..commands import CommandType, encode
from ..errors import (
    BodyTooLarge,
    IdempotencyMismatch,
    NotFound,
    RaftschedError,
    Unauthorized,
    ValidationError,
    error_for_code,
    quoted,
)
from ..replication import RaftStatus
from ..state import State
from ..state.machine import REQUEST_TTL_MS
from .browsers import BrowserPolicy
from .connections import ConnectionGuard, ConnectionLimits

__all__ = ["ApiRunner", "Services", "make_app", "SERVICES"]

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Raft(Protocol):
    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]: ...

    def status(self) -> RaftStatus: ...

    async def wait_applied(self, index: int, timeout_s: float = 5.0) -> None: ...

    def tick_alive(self) -> bool: ...

    async def change_membership(self, kind: str, addr: str, *, timeout_s: float = 10.0) -> None: ...


@dataclass(slots=True, kw_only=True)
class Services:
    node_id: str
    state: State
    raft: Raft
    clock: Clock
    api_token: str | None = None
    max_body_bytes: int = 1 << 20
    browsers: BrowserPolicy = field(default_factory=lambda: BrowserPolicy(loopback_bind=True))
    connections: ConnectionGuard = field(default_factory=lambda: ConnectionGuard(ConnectionLimits()))

    def leader_id(self, status: RaftStatus) -> str | None:
        with self.state.lock:
            for node in self.state.nodes.values():
                if node.raft == status.leader:
                    return node.id
        return None

    async def write(
        self,
        request: web.Request,
        cmd_type: CommandType,
        body: dict[str, Any],
        *,
        part: str = "",
        v: int | None = None,
    ) -> dict[str, Any]:
        """Propose a write; raise the matching error for a rejection. Idempotent by key.

        `part` tells apart the several commands one request may propose (a restore); `v` is the
        command's version (default: its first)."""
        return _raise_rejection(await self._propose(request, cmd_type, body, part, v), cmd_type, part)

    async def write_fresh(
        self,
        request: web.Request,
        cmd_type: CommandType,
        build: Callable[[], tuple[dict[str, Any], int | None]],
        *,
        attempts: int = 3,
    ) -> dict[str, Any]:
        """`write` of the body (and version) `build` makes from this node's view of the state.
        The state refuses a body built from a view that a later entry overtook (`unavailable`:
        a fire or the leader's accounting moved the job on; nothing applied, nothing kept for
        the request id): then this node reads again, after a barrier, and builds again."""
        for attempt in range(attempts):
            if attempt:
                await self.raft.propose(encode(CommandType.NOOP, {"now_ms": self.clock.now_ms()}))
            body, v = build()
            result = await self._propose(request, cmd_type, body, "", v)
            if result.get("code") != "unavailable":
                break
        return _raise_rejection(result, cmd_type, "")

    async def _propose(
        self, request: web.Request, cmd_type: CommandType, body: dict[str, Any], part: str, v: int | None
    ) -> dict[str, Any]:
        key = request.headers.get("Idempotency-Key")
        fingerprint = await _fingerprint(request)
        rid = f"{IDEMPOTENCY_PREFIX}{key}{part}" if key else f"req:{uuid.uuid4().hex}"
        body = {
            **body,
            "now_ms": body.get("now_ms", self.clock.now_ms()),
            "fp": fingerprint,
            "actor": body.get("actor", _actor(request)),
        }
        return await self.raft.propose(encode(cmd_type, body, rid=rid, v=v))

    async def replay(self, request: web.Request) -> dict[str, Any] | None:
        """The stored result of the first write with this request's `Idempotency-Key`, if this node
        has applied it and it is under 24 h old (by this node's clock: older, the state decides);
        None if there is none. Raises the first write's error if it was refused, and
        IdempotencyMismatch if the key came with another request."""
        key = request.headers.get("Idempotency-Key")
        if not key:
            return None
        with self.state.lock:
            seen = self.state.requests.get(IDEMPOTENCY_PREFIX + key)
        if seen is None or seen[2] < self.clock.now_ms() - REQUEST_TTL_MS:
            return None
        fingerprint, result, _ = seen
        if fingerprint != await _fingerprint(request):
            raise IdempotencyMismatch("request id reused with another body")
        if not result.get("ok"):
            raise rejection(result)
        return result


def _raise_rejection(result: dict[str, Any], cmd_type: CommandType, part: str) -> dict[str, Any]:
    """The result of a write, or the error a refusal maps to; a replayed first write of a command
    the API renders as a replay (`Replayed`) leaves through the replay path."""
    if not result.get("ok"):
        raise rejection(result)
    if result.get("duplicate") and not part and cmd_type in REPLAYED_COMMANDS:
        raise Replayed(result)
    return result


IDEMPOTENCY_PREFIX = "idem:"
# The commands of the write handlers that answer their replays themselves (`idempotency.py`).
REPLAYED_COMMANDS = frozenset(
    {
        CommandType.PUT_JOB,
        CommandType.DELETE_JOB,
        CommandType.PAUSE_JOB,
        CommandType.RESUME_JOB,
        CommandType.TRIGGER_JOB,
        CommandType.CANCEL_RUN,
    }
)


class Replayed(Exception):  # noqa: N818 - a signal to `idempotency.replayable`, not an error
    """The state found the request's key already applied: `result` is the first write's."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("replayed")
        self.result = result


async def _fingerprint(request: web.Request) -> str:
    """What a key is bound to: the method, the path and the body."""
    raw = await request.read()
    return hashlib.sha256(request.method.encode() + request.path.encode() + b"\0" + raw).hexdigest()


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


def rejection(result: dict[str, Any]) -> RaftschedError:
    """The error for a rejection value of the state, in the API's terms. The state's own words stay
    as they are (old logs must replay to the same results), so two are restated here: a missing
    job is `id` everywhere (the state says `job_id`), and a version compared with a job that does
    not exist is not `None`."""
    code, message, field = (
        str(result.get("code", "rejected")),
        str(result.get("message", "")),
        result.get("field"),
    )
    if code == "not_found" and field == "job_id":
        field = "id"
    if code == "version_mismatch":
        field = "If-Match"
        message = message.replace("job version is None,", "there is no such job, so its version is")
    return error_for_code(code, message, field)


def _actor(request: web.Request) -> str:
    peer = request.remote or "?"
    return f"api@{peer}" + (" (token)" if "Authorization" in request.headers else "")


# On every answer (the dashboard's files set their own Cache-Control, which is kept).
_ANSWER_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
_CHALLENGE = 'Bearer realm="raftsched"'


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except RaftschedError as exc:
        headers = {"Retry-After": "1"} if exc.status == 503 else {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = _CHALLENGE
        return json_response(exc.to_dict(), status=exc.status, headers=headers)
    except web.HTTPRequestEntityTooLarge:
        err = BodyTooLarge("the request body is too large")
        return json_response(err.to_dict(), status=413)
    except web.HTTPMethodNotAllowed as exc:
        body = {"error": {"code": "method_not_allowed", "message": exc.reason, "field": None}}
        return json_response(body, status=405, headers={"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPException as exc:
        if exc.status == 404:
            return json_response(NotFound(f"no route {request.path}").to_dict(), status=404)
        raise


@web.middleware
async def guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Before anything else: the connection's header timer stops, the browser rules hold
    (browsers.py), and the body, if any, is read within the body timeout."""
    services = request.app[SERVICES]
    services.connections.request_started(request.protocol)
    services.browsers.check(request)
    if request.body_exists:
        try:
            async with asyncio.timeout(services.connections.limits.idle_timeout_s):
                await request.read()
        except TimeoutError:
            raise ValidationError("the request body did not arrive in time", field=None) from None
    return await handler(request)


async def _answer_headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _ANSWER_HEADERS.items():
        response.headers.setdefault(name, value)


def auth_middleware(token: str | None) -> Middleware:
    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        public = request.path == "/v1/health" or request.path == "/" or request.path.startswith("/static/")
        if token and not public:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
                raise Unauthorized("missing or wrong bearer token")
        return await handler(request)

    return check


def json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


async def read_json(request: web.Request, *, optional: bool = False) -> Any:
    raw = await request.read()
    if not raw.strip():
        if optional:
            return {}
        raise ValidationError("a JSON body is required", field=None)
    return parse_json(raw)


def parse_json(raw: bytes) -> Any:
    """A request body: JSON whose objects have no duplicate key (a 400 naming the first one).

    orjson keeps the last of duplicate keys silently, so what a reader of the body sees is not
    what the node stores. Finding them takes a second, slower parse, run only when a duplicate is
    possible (`_may_have_duplicates`): about 1 ms per MiB otherwise."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}", field=None) from None
    if _may_have_duplicates(raw, value):
        try:
            json.loads(raw, object_pairs_hook=_no_duplicates)
        except RecursionError:
            raise ValidationError("the body is nested too deeply", field=None) from None
    return value


_SPACED_KEY_END = re.compile(rb'"[ \t\r\n]+:')
_ESCAPED_QUOTE_OR_COLON = re.compile(rb"\\u00(?:22|3[aA])")


def _may_have_duplicates(raw: bytes, value: Any) -> bool:
    """False only if no key was dropped: every key ends with a quote and a colon (after optional
    whitespace), so the body has one such pair per key plus one per quote-colon inside a string
    (written `\\":`). orjson writes the parsed value back with one per key it kept, plus the same
    string contents, less those of what it dropped: so if the body has no more pairs than that,
    nothing was dropped. Unicode escapes of the quote or colon would hide pairs: then the slow
    parse decides."""
    if _ESCAPED_QUOTE_OR_COLON.search(raw):
        return True
    pairs = raw.count(b'":')
    if _SPACED_KEY_END.search(raw):
        pairs += len(_SPACED_KEY_END.findall(raw))
    return pairs > orjson.dumps(value).count(b'":')


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        key = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValidationError(f"duplicate key {quoted(key)} in the JSON body", field=key)
    return out


def bool_query(request: web.Request, name: str) -> bool | None:
    """A boolean query parameter: `true` or `false` (anything else is a 400); None when absent."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if raw not in ("true", "false"):
        raise ValidationError(f"must be true or false, not {quoted(raw)}", field=name)
    return raw == "true"


def make_app(services: Services) -> web.Application:
    # Imported here so that importing this module does nothing.
    from . import alerts, backup, dashboard, members, metrics, openapi, outputs, routes

    app = web.Application(
        client_max_size=services.max_body_bytes,
        middlewares=[error_middleware, guard_middleware, auth_middleware(services.api_token)],
    )
    app[SERVICES] = services
    app.on_response_prepare.append(_answer_headers)
    for module in (routes, members, backup, outputs, alerts, metrics, dashboard, openapi):
        module.add_routes(app)
    return app


# ---------------------------------------------------------------- answers aiohttp gives itself

# A request aiohttp cannot parse (a request line or header over its limits, a malformed line)
# never reaches the app: aiohttp answers it from the connection's handler, as text/plain.
_LOW_LEVEL_CODES = {
    400: ValidationError.code,
    413: BodyTooLarge.code,
    414: "uri_too_long",
    431: "headers_too_large",
}


class _EnvelopeHandler(RequestHandler):
    """aiohttp's connection handler, whose own error answers carry the JSON error envelope."""

    __slots__ = ()

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        super().handle_error(request, status, exc, message)  # logs; raises if an answer was begun
        code = _LOW_LEVEL_CODES.get(status, "internal" if status >= 500 else "bad_request")
        text = message if message and status < 500 else HTTPStatus(status).phrase
        response = json_response(_Refused(code, text).to_dict(), status=status)
        response.force_close()
        return response


class _Refused(RaftschedError):
    """A request aiohttp refused, with its code (the message is capped as every message is)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _EnvelopeServer(web.Server):
    def __call__(self) -> RequestHandler:
        return _EnvelopeHandler(self, loop=self._loop, **self._kwargs)


class ApiRunner(web.AppRunner):
    """`web.AppRunner` whose connections answer even the requests aiohttp refuses before the app
    sees them (a 400 for a request line over 8190 bytes, ...) with the JSON error envelope."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _EnvelopeServer  # the same server; only the handlers it makes differ
        return server


def version() -> str:
    return __version__
