"""Alert channels, the cluster's alert rules, and the alerts with their delivery (API.md "Alerts").

Writes are version 2 commands: a cluster whose committed version does not cover them answers 503
`unavailable` (a node of an older release would refuse or misread them). Answers show a
channel's secret NAMES only: a channel never holds a value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from aiohttp import web

from .. import eligibility
from ..alerting import AlertRecord, Delivery
from ..channels import ChannelSpec, check_channel_name
from ..commands import CommandType, usable_version
from ..errors import NoEligibleNode, NotFound, Unavailable, UnknownChannel, ValidationError
from ..model import JobSpec, NotifyRule, iso_ms, notify_rules
from . import schemas
from .app import SERVICES, Services, bool_query, json_response, read_json

__all__ = ["add_routes", "check_job_notify"]

routes = web.RouteTableDef()
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def _svc(request: web.Request) -> Services:
    return request.app[SERVICES]


def require_version(svc: Services, cmd_type: CommandType) -> None:
    """503 while the cluster's committed version does not cover `cmd_type`."""
    with svc.state.lock:
        version = usable_version(cmd_type, svc.state.cluster_version)
    if version is None:
        raise Unavailable("the cluster's command version does not cover alerts yet (a rolling upgrade?)")


def check_rule_channels(request: web.Request, svc: Services, rules: Iterable[NotifyRule], field: str) -> None:
    """422 `unknown_channel` for a rule naming a channel the cluster lacks, unless `?force=true`."""
    if bool(bool_query(request, "force")):
        return
    with svc.state.lock:
        known = set(svc.state.channels)
    for i, rule in enumerate(rules):
        if rule.channel not in known:
            raise UnknownChannel(f"no channel {rule.channel!r}", field=f"{field}.{i}.channel")


def check_job_notify(request: web.Request, svc: Services, spec: JobSpec) -> None:
    """A job's `notify`: its channels exist (or `?force=true`), and the cluster applies it."""
    if spec.notify:
        require_version(svc, CommandType.PUT_CHANNEL)
        check_rule_channels(request, svc, spec.notify, "notify")


# ---------------------------------------------------------------- channels


@routes.get("/v1/channels")
async def list_channels(request: web.Request) -> web.Response:
    svc = _svc(request)
    with svc.state.lock:
        items = [c.to_dict() for c in svc.state.channels.values()]
    return json_response({"items": items, "next_cursor": None})


@routes.get("/v1/channels/{name}")
async def get_channel(request: web.Request) -> web.Response:
    return json_response(_channel(_svc(request), request.match_info["name"]).to_dict())


def _channel(svc: Services, name: str) -> ChannelSpec:
    with svc.state.lock:
        channel = svc.state.channels.get(name)
    if channel is None:
        raise NotFound(f"no channel {name!r}", field="name")
    return channel


@routes.put("/v1/channels/{name}")
async def put_channel(request: web.Request) -> web.Response:
    svc = _svc(request)
    body = await read_json(request)
    schemas.validate("ChannelPut", body)
    spec = ChannelSpec.from_dict(body, name=request.match_info["name"])
    require_version(svc, CommandType.PUT_CHANNEL)
    if not bool(bool_query(request, "force")):
        with svc.state.lock:
            found = eligibility.channel_refusal(spec, svc.state.nodes.values())
        if found is not None:
            raise NoEligibleNode(found.message, field=found.field)
    result = await svc.write(request, CommandType.PUT_CHANNEL, {"name": spec.name, "channel": spec.to_dict()})
    return json_response(spec.to_dict(), status=201 if result.get("created") else 200)


@routes.delete("/v1/channels/{name}")
async def delete_channel(request: web.Request) -> web.Response:
    svc = _svc(request)
    name = check_channel_name(request.match_info["name"])
    _channel(svc, name)
    require_version(svc, CommandType.DELETE_CHANNEL)
    await svc.write(request, CommandType.DELETE_CHANNEL, {"name": name})
    return web.Response(status=204)


# ---------------------------------------------------------------- rules


@routes.get("/v1/alerts/rules")
async def get_rules(request: web.Request) -> web.Response:
    return json_response(_rules_view(_svc(request)))


def _rules_view(svc: Services) -> dict[str, Any]:
    with svc.state.lock:
        return {"cluster": svc.state.alert_cluster, "rules": [r.to_dict() for r in svc.state.alert_rules]}


@routes.put("/v1/alerts/rules")
async def put_rules(request: web.Request) -> web.Response:
    svc = _svc(request)
    body = await read_json(request)
    schemas.validate("AlertRules", body)
    rules = notify_rules(body["rules"], "rules", job=False)
    require_version(svc, CommandType.SET_ALERT_RULES)
    check_rule_channels(request, svc, rules, "rules")
    cluster = body.get("cluster", "raftsched")
    await svc.write(
        request, CommandType.SET_ALERT_RULES, {"rules": [r.to_dict() for r in rules], "cluster": cluster}
    )
    return json_response(_rules_view(svc))


# ---------------------------------------------------------------- alerts


@routes.get("/v1/alerts")
async def list_alerts(request: web.Request) -> web.Response:
    svc = _svc(request)
    channel, state, limit = request.query.get("channel"), request.query.get("state"), _limit(request)
    if state is not None and state not in {d.value for d in Delivery}:
        raise ValidationError("must be pending, delivered or failed", field="state")
    items = []
    with svc.state.lock:
        for alert in reversed(svc.state.alerts.values()):
            if (channel is None or alert.channel == channel) and (state is None or alert.delivery == state):
                items.append(alert_view(alert))
                if len(items) == limit:
                    break
    return json_response({"items": items, "next_cursor": None})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ValidationError(f"must be an integer from 1 to {MAX_LIMIT}", field="limit")
    return int(raw)


def alert_view(alert: AlertRecord) -> dict[str, Any]:
    """An alert as `GET /v1/alerts` answers it: the payload's fields and the delivery's state."""
    pending = alert.delivery is Delivery.PENDING
    return {
        "alert_id": alert.alert_id,
        "event": alert.event,
        "channel": alert.channel,
        "job_id": alert.job_id,
        "run_id": alert.run_id,
        "attempt": alert.run_attempt,
        "state": alert.state,
        "error": alert.error,
        "node": alert.node_id,
        "scheduled_at": iso_ms(alert.scheduled_ms),
        "at": iso_ms(alert.at_ms),
        "count": alert.count,
        "summary": alert.summary,
        "decided_at": iso_ms(alert.decided_ms),
        "delivery": {
            "state": alert.delivery.value,
            # attempts made: the current one is made once it is reported (or given up on)
            "attempts": alert.attempt - (1 if pending else 0),
            "node": alert.node if pending else alert.delivered_by,
            "last_error": alert.last_error,
            "next_attempt_at": iso_ms(alert.due_ms) if pending else None,
            "delivered_at": iso_ms(alert.delivered_ms),
        },
    }


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
