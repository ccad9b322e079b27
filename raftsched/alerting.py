"""Alerts, pure: the events the state notes, the leader's decision, the delivery node, the payload.

How an alert comes to be (docs/design.md "Alerts"):

1. The state notes an *event* when a run ends `failed` / `timed_out` / `lost` (its final
   attempt: a failure that is retried ends nothing), a slot is recorded `missed` or `skipped`
   for overlap (never for a pause), a run starts later than a `late` rule's threshold, a node is
   committed down, or a node's clock is committed out of bounds; only when some rule (the
   job's `notify` or the cluster's) wants it. The event carries the channels its rules name,
   resolved then, and a sequence number.
2. The leader turns the events after the committed cursor into alert records (`decide`) and
   commits them in one term-fenced RAISE_ALERTS that also moves the cursor (compare-and-set on
   it): two leaders can never decide the same events twice, a new leader goes on from the cursor.
3. Rate limiting, per channel: at most one message per `group_window_s` (default 10 s). The first
   alert goes at once; the alerts that follow within the window are folded into one grouped alert
   (`count`, and `summary` per event), decided when the window ends. Each event is in exactly
   one alert: the sum of `count` over distinct alerts is the number of events.
4. The alert id is a hash of the channel, the event and its key (`run_id#attempt`, or
   `node@ms`): deterministic, so a consumer de-duplicates at-least-once delivery by it.

Nothing here reads a clock or does I/O: `now_ms` is a parameter.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from .channels import ChannelSpec, WebhookFormat
from .model import AlertOn, NotifyRule, iso_ms

__all__ = [
    "MAX_ALERTS",
    "MAX_DELIVERY_ATTEMPTS",
    "MAX_EVENTS",
    "AlertRecord",
    "Decision",
    "Delivery",
    "alert_id",
    "decide",
    "deliverer",
    "event_channels",
    "payload",
    "retry_delay_ms",
    "signature",
]

MAX_EVENTS = 10_000  # events waiting for the leader's decision; older ones are dropped (counted)
MAX_ALERTS = 1_000  # alert records the state keeps (the oldest delivered or failed go first)
MAX_ALERTS_PER_COMMAND = 500  # events decided per RAISE_ALERTS: the state's work stays bounded
MAX_DELIVERY_ATTEMPTS = 8  # then the alert is `failed`
EVENT_NAMES = {
    AlertOn.FAILED: "run.failed",
    AlertOn.TIMED_OUT: "run.timed_out",
    AlertOn.LOST: "run.lost",
    AlertOn.MISSED: "run.missed",
    AlertOn.SKIPPED: "run.skipped",
    AlertOn.LATE: "run.late",
    AlertOn.NODE_DOWN: "node.down",
    AlertOn.NODE_CLOCK: "node.clock",
}
GROUPED = "alerts.grouped"  # the event of a grouped alert whose events are of several kinds


class Delivery(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # gave up after MAX_DELIVERY_ATTEMPTS


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertRecord:
    """A decided alert and its delivery. `attempt` is the delivery attempt (fencing the reports
    of `node`, the node that delivers it); `run_attempt` the run's attempt the event is about."""

    alert_id: str
    channel: str
    event: str
    at_ms: int  # when the (first) event happened
    decided_ms: int
    count: int = 1
    job_id: str | None = None
    run_id: str | None = None
    run_attempt: int | None = None
    state: str | None = None
    error: str | None = None
    scheduled_ms: int | None = None
    node_id: str | None = None  # the node a node event is about
    summary: dict[str, int] | None = None  # grouped: events per name
    delivery: Delivery = Delivery.PENDING
    attempt: int = 1
    node: str | None = None  # who delivers (None: no node can, for now)
    due_ms: int = 0
    last_error: str | None = None
    delivered_ms: int | None = None
    delivered_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["delivery"] = self.delivery.value
        return {k: v for k, v in out.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> AlertRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        raw = {k: v for k, v in d.items() if k in names}
        return cls(**{**raw, "delivery": Delivery(raw.get("delivery", "pending"))})


# ---------------------------------------------------------------- events (applied by the state)


def event_channels(kind: AlertOn, rules: Iterable[NotifyRule], *, late_ms: int | None = None) -> list[str]:
    """The channels that `rules` alert for an event of `kind` (each once, in rule order); a `late`
    rule counts when the lateness is past its threshold."""
    out: dict[str, None] = {}
    for rule in rules:
        if kind not in rule.on:
            continue
        if kind is AlertOn.LATE and (late_ms is None or late_ms <= (rule.threshold_s or 0) * 1000):
            continue
        out[rule.channel] = None
    return list(out)


# ---------------------------------------------------------------- the leader's decision


@dataclass(slots=True)
class Decision:
    """What one RAISE_ALERTS commits: the new alerts and the channels' throttles it changed."""

    alerts: list[AlertRecord] = field(default_factory=list)
    throttle: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.alerts or self.throttle)


def alert_id(channel: str, event: str, key: str) -> str:
    return hashlib.blake2b(f"{channel}\0{event}\0{key}".encode(), digest_size=12).hexdigest()


def _event_key(event: Mapping[str, Any]) -> str:
    if event.get("run_id") is not None:
        return f"{event['run_id']}#{event.get('attempt', 0)}"
    return f"{event.get('node')}@{event['at_ms']}"


def decide(
    events: Sequence[Mapping[str, Any]],
    channels: Mapping[str, ChannelSpec],
    throttle: Mapping[str, Mapping[str, Any]],
    now_ms: int,
) -> Decision:
    """The alerts `events` make at `now_ms`, given each channel's throttle (`{"next_ms", "group"}`):
    see the module docstring, step 3. Events for a channel that no longer exists are dropped.
    Deterministic: same inputs, same decision."""
    out = Decision()
    state = {name: dict(t) for name, t in throttle.items()}
    for event in events:
        for name in event.get("channels", ()):
            channel = channels.get(name)
            if channel is not None:
                _admit(out, state.setdefault(name, {"next_ms": 0, "group": None}), channel, event, now_ms)
    for name, t in state.items():
        channel = channels.get(name)
        group = t.get("group")
        if group is not None and (channel is None or now_ms >= t["next_ms"]):
            if channel is not None:
                out.alerts.append(_grouped(name, group, now_ms))
            t["next_ms"], t["group"] = now_ms + _window_ms(channel), None
            out.throttle[name] = t
    return out


def _window_ms(channel: ChannelSpec | None) -> int:
    return 0 if channel is None else int(channel.group_window_s * 1000)


def _admit(
    out: Decision, t: dict[str, Any], channel: ChannelSpec, event: Mapping[str, Any], now_ms: int
) -> None:
    """One event for one channel: an alert now, or into the channel's open group."""
    record = _record(channel.name, event, now_ms)
    group = t.get("group")
    if group is None and now_ms >= t["next_ms"]:
        out.alerts.append(record)
        t["next_ms"] = now_ms + _window_ms(channel)
    elif group is None:
        t["group"] = {
            "first": record.to_dict(),
            "count": record.count,
            "summary": {record.event: record.count},
        }
    else:
        summary = dict(group["summary"])
        summary[record.event] = summary.get(record.event, 0) + record.count
        t["group"] = {**group, "count": group["count"] + record.count, "summary": summary}
    out.throttle[channel.name] = t


def _record(channel: str, event: Mapping[str, Any], now_ms: int) -> AlertRecord:
    name = EVENT_NAMES[AlertOn(event["kind"])]
    return AlertRecord(
        alert_id=alert_id(channel, name, _event_key(event)),
        channel=channel,
        event=name,
        at_ms=event["at_ms"],
        decided_ms=now_ms,
        count=int(event.get("count", 1)),
        job_id=event.get("job_id"),
        run_id=event.get("run_id"),
        run_attempt=event.get("attempt"),
        state=event.get("state"),
        error=event.get("error"),
        scheduled_ms=event.get("scheduled_ms"),
        node_id=event.get("node"),
        due_ms=now_ms,
    )


def _grouped(channel: str, group: Mapping[str, Any], now_ms: int) -> AlertRecord:
    """The alert of a closed group: the first grouped event's fields, the group's count."""
    first = AlertRecord.from_dict(group["first"])
    summary = dict(group["summary"])
    event = next(iter(summary)) if len(summary) == 1 else GROUPED
    return dataclasses.replace(
        first,
        alert_id=alert_id(channel, "group", first.alert_id),
        event=event,
        count=int(group["count"]),
        summary=summary,
        decided_ms=now_ms,
        due_ms=now_ms,
    )


# ---------------------------------------------------------------- delivery


def deliverer(alert: str, attempt: int, eligible: Iterable[str]) -> str | None:
    """The node that delivers attempt `attempt` of `alert`: the eligible nodes ranked by a hash of
    the alert and the node (rendezvous), attempt k taking the k-th, round and round. None: no node."""
    ranked = sorted(eligible, key=lambda n: hashlib.blake2b(f"{alert}\0{n}".encode(), digest_size=8).digest())
    return ranked[(attempt - 1) % len(ranked)] if ranked else None


def retry_delay_ms(attempt: int) -> int:
    """After failed delivery attempt `attempt`: 1 s, 2 s, 4 s... at most 60 s."""
    return int(min(60_000, 1000 * 2 ** (attempt - 1)))


def payload(alert: AlertRecord, cluster: str) -> dict[str, Any]:
    """The webhook's JSON (API.md): run fields null for node events; `node` for those, `summary`
    for a grouped alert."""
    body: dict[str, Any] = {
        "alert_id": alert.alert_id,
        "event": alert.event,
        "cluster": cluster,
        "job_id": alert.job_id,
        "run_id": alert.run_id,
        "attempt": alert.run_attempt,
        "state": alert.state,
        "error": alert.error,
        "scheduled_at": iso_ms(alert.scheduled_ms),
        "at": iso_ms(alert.at_ms),
        "count": alert.count,
    }
    if alert.node_id is not None:
        body["node"] = alert.node_id
    if alert.summary is not None:
        body["summary"] = alert.summary
    return body


def headline(alert: AlertRecord, cluster: str) -> str:
    """One line for humans: a chat message's text, an e-mail's subject."""
    what = alert.job_id or alert.node_id or "cluster"
    more = f" ({alert.count} alerts)" if alert.count > 1 else ""
    error = f": {alert.error}" if alert.error else ""
    return f"[{cluster}] {alert.event} {what}{more}{error}"[:300]


def webhook_body(alert: AlertRecord, cluster: str, fmt: WebhookFormat) -> bytes:
    """The body in the channel's format: raw (the payload), Slack (`text`) or Teams (MessageCard)."""
    data = payload(alert, cluster)
    if fmt is WebhookFormat.SLACK:
        return orjson.dumps({"text": headline(alert, cluster), "alert_id": alert.alert_id})
    if fmt is WebhookFormat.TEAMS:
        facts = [{"name": k, "value": str(v)} for k, v in data.items() if v is not None]
        return orjson.dumps(
            {
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": headline(alert, cluster),
                "title": headline(alert, cluster),
                "sections": [{"facts": facts}],
            }
        )
    return orjson.dumps(data)


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256 of timestamp + "." + body>` (the X-Raftsched-Signature header)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"
