"""Cluster membership over the API: add a voter, drain and remove one (API.md /v1/nodes).

Adding records the node in the state (down until it registers itself), then commits the Raft
membership change; the new node, started from a `[node]` section outside `members`, catches
up and registers. Removing marks the node draining (no new runs; the leader moves its pending
runs, lets its running ones finish, then removes it from the table and from Raft).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..commands import CommandType
from ..config import NODE_ID_RE, raft_address
from ..errors import NotFound, ValidationError, quoted
from .app import SERVICES, json_response, read_json
from .views import node_view

__all__ = ["add_routes"]

routes = web.RouteTableDef()
_FIELDS = frozenset({"id", "raft", "http", "tags", "capacity"})


def _parse(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError("must be an object", field=None)
    for key in body:
        if key not in _FIELDS:
            raise ValidationError(f"unknown field {quoted(key)}", field=str(key))
    node_id = body.get("id")
    if not isinstance(node_id, str) or not NODE_ID_RE.fullmatch(node_id):
        raise ValidationError("must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", field="id")
    try:
        raft = raft_address(str(body.get("raft", "")))
    except ValueError as exc:
        raise ValidationError(str(exc), field="raft") from None
    http = _http(body.get("http"))
    tags = body.get("tags", {})
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ValidationError("must be an object of strings", field="tags")
    capacity = body.get("capacity", 8)
    if isinstance(capacity, bool) or not isinstance(capacity, int) or not 1 <= capacity <= 100_000:
        raise ValidationError("must be an integer between 1 and 100000", field="capacity")
    return {"node": node_id, "raft": raft, "http": http, "tags": tags, "capacity": capacity}


def _http(value: object) -> str:
    """The node's API base URL, `http(s)://host:port`, or `host:port` as the cluster file writes it
    (then `http://host:port`)."""
    if isinstance(value, str) and re.fullmatch(r"https?://[^/\s]+", value):
        return value
    try:
        host, _, port = raft_address(value if isinstance(value, str) else "").rpartition(":")
    except ValueError:
        raise ValidationError(
            "must be the node's API base URL or host:port, like http://10.0.0.4:8101 or 10.0.0.4:8101",
            field="http",
        ) from None
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _find_view(request: web.Request, node_id: str) -> dict[str, Any] | None:
    svc = request.app[SERVICES]
    connected = svc.raft.status().connected
    with svc.state.lock:
        node = svc.state.nodes.get(node_id)
        if node is None:
            return None
        return node_view(node, svc.state, True if node_id == svc.node_id else connected.get(node.raft))


def _view(request: web.Request, node_id: str) -> dict[str, Any]:
    view = _find_view(request, node_id)
    if view is None:
        raise NotFound(f"no node {quoted(node_id)}", field="id")
    return view


@routes.post("/v1/nodes")
async def add_node(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    body = _parse(await read_json(request))
    await svc.write(request, CommandType.ADD_NODE, body)
    await svc.raft.change_membership("add", body["raft"])
    return json_response(_view(request, body["node"]))


@routes.delete("/v1/nodes/{id}")
async def remove_node(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    node_id = request.match_info["id"]
    before = _find_view(request, node_id)
    await svc.write(request, CommandType.DRAIN_NODE, {"node": node_id, "draining": True, "leaving": True})
    after = _find_view(request, node_id)
    if after is None and before is not None:
        # Nothing was active on it: the leader removed it between the drain's apply and this read.
        after = {**before, "running": 0, "pending": 0, "draining": True, "leaving": True, "removed": True}
    if after is None:
        raise NotFound(f"no node {quoted(node_id)}", field="id")
    return json_response(after, status=202)


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
