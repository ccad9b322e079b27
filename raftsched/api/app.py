"""The admin API: `make_app()` builds it; nothing happens at import.

Every node serves it. Reads answer from this node's applied state; writes become commands
proposed through Raft from whichever node received them, and a 2xx means committed and
applied here. Errors of every kind leave through one middleware as the JSON envelope.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import __version__
from ..clock import Clock
from ..commands import CommandType, encode
from ..errors import BodyTooLarge, NotFound, RaftschedError, Unauthorized, ValidationError, error_for_code
from ..replication import RaftStatus
from ..state import State
from .browsers import BrowserPolicy
from .connections import ConnectionGuard, ConnectionLimits

__all__ = ["Services", "make_app", "SERVICES"]

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
        return _raise_rejection(await self._propose(request, cmd_type, body, part, v))

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
        return _raise_rejection(result)

    async def _propose(
        self, request: web.Request, cmd_type: CommandType, body: dict[str, Any], part: str, v: int | None
    ) -> dict[str, Any]:
        key = request.headers.get("Idempotency-Key")
        raw = await request.read()
        fingerprint = hashlib.sha256(
            request.method.encode() + request.path.encode() + b"\0" + raw
        ).hexdigest()
        rid = f"idem:{key}{part}" if key else f"req:{uuid.uuid4().hex}"
        body = {
            **body,
            "now_ms": body.get("now_ms", self.clock.now_ms()),
            "fp": fingerprint,
            "actor": body.get("actor", _actor(request)),
        }
        return await self.raft.propose(encode(cmd_type, body, rid=rid, v=v))


def _raise_rejection(result: dict[str, Any]) -> dict[str, Any]:
    if not result.get("ok"):
        raise error_for_code(result.get("code", "rejected"), result.get("message", ""), result.get("field"))
    return result


SERVICES: web.AppKey[Services] = web.AppKey("services", Services)


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
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}", field=None) from None


def make_app(services: Services) -> web.Application:
    # Imported here so that importing this module does nothing.
    from . import backup, dashboard, members, metrics, openapi, outputs, routes

    app = web.Application(
        client_max_size=services.max_body_bytes,
        middlewares=[error_middleware, guard_middleware, auth_middleware(services.api_token)],
    )
    app[SERVICES] = services
    app.on_response_prepare.append(_answer_headers)
    for module in (routes, members, backup, outputs, metrics, dashboard, openapi):
        module.add_routes(app)
    return app


def version() -> str:
    return __version__
