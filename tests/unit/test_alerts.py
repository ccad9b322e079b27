"""Alerts: events noted by the state, the leader's decision (grouping, fencing), delivery reports,
payloads and the webhook signature."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from typing import Any

import orjson
import pytest

from raftsched.alertdecider import AlertDecider
from raftsched.alerting import AlertRecord, Delivery, alert_id, decide, deliverer, signature, webhook_body
from raftsched.channels import ChannelSpec, WebhookFormat
from raftsched.clock import FakeClock
from raftsched.commands import CommandType
from raftsched.errors import ValidationError
from raftsched.executors.alerts import email_message, webhook_request
from raftsched.model import JobSpec
from raftsched.state import State

from statekit import T0, Driver

HOOK = {"type": "webhook", "url": "http://127.0.0.1:9/hook", "signing_secret": {"secret": "HOOK_KEY"}}


def driver(window_s: float = 10) -> Driver:
    d = Driver()
    d.boot(version=2)
    assert d.cmd(
        CommandType.PUT_CHANNEL,
        name="ops",
        channel={**HOOK, "name": "ops", "group_window_s": window_s},
        now_ms=T0,
    )["ok"]
    return d


def fail(d: Driver, job: str, nominal_ms: int, *, attempt: int = 1) -> None:
    d.fire(job, nominal_ms)
    d.finish(f"{job}@{nominal_ms}", outcome="failed", attempt=attempt, at=nominal_ms + 10, error="exit 1")


class Proposer:
    """Applies what the decider proposes to the state, as Raft would."""

    def __init__(self, d: Driver) -> None:
        self.d = d

    async def __call__(self, data: bytes) -> dict[str, Any]:
        self.d.log.append(data)
        return self.d.state.apply(data)


def decide_now(d: Driver, now_ms: int, term: int = 1) -> dict[str, Any] | None:
    clock = FakeClock(now_ms)
    return asyncio.run(AlertDecider(d.state, Proposer(d), clock).tick(term))


# ---------------------------------------------------------------- model


def test_channels_hold_secret_names_never_values() -> None:
    with pytest.raises(ValidationError) as err:
        ChannelSpec.from_dict({**HOOK, "signing_secret": "s3cr3t"}, name="ops")
    assert err.value.field == "signing_secret" and "s3cr3t" not in err.value.message
    with pytest.raises(ValidationError):
        ChannelSpec.from_dict({**HOOK, "url": "http://user:pw@h/x"}, name="ops")
    spec = ChannelSpec.from_dict(HOOK, name="ops")
    assert spec.to_dict()["signing_secret"] == {"secret": "HOOK_KEY"} and spec.secrets == ("HOOK_KEY",)
    mail = ChannelSpec.from_dict(
        {"type": "email", "smtp": "[::1]:25", "from": "a@b", "to": ["c@d"], "password_secret": "PW"}, name="m"
    )
    assert mail.starttls and mail.to_dict()["password_secret"] == "PW"


def test_job_notify_rules_are_validated_and_omitted_when_empty() -> None:
    base = {"id": "j", "schedule": {"every": 1}, "task": {"type": "shell", "command": ["true"]}}
    assert "notify" not in JobSpec.from_dict(base).to_dict()  # old logs and snapshots keep their bytes
    spec = JobSpec.from_dict(
        {**base, "notify": [{"on": ["failed", "late"], "channel": "ops", "threshold_s": 5}]}
    )
    assert spec.to_dict()["notify"] == [{"on": ["failed", "late"], "channel": "ops", "threshold_s": 5.0}]
    for bad, field in (
        ({"on": ["late"], "channel": "ops"}, "notify.0.threshold_s"),
        ({"on": ["node_down"], "channel": "ops"}, "notify.0.on"),
        ({"on": [], "channel": "ops"}, "notify.0.on"),
    ):
        with pytest.raises(ValidationError) as err:
            JobSpec.from_dict({**base, "notify": [bad]})
        assert err.value.field == field


# ---------------------------------------------------------------- events and decisions


def test_a_failed_run_alerts_once_after_its_last_retry() -> None:
    d = driver()
    d.add("j", notify=[{"on": ["failed"], "channel": "ops"}], retries={"max": 1, "jitter": 0})
    d.fire("j", T0 + 1000)
    d.finish("j@1800000001000", outcome="failed", at=T0 + 1010, error="exit 1")
    assert not d.state.alert_events  # retried: not final
    d.start("j@1800000001000", node=d.state.runs["j@1800000001000"].node or "", attempt=2, at=T0 + 2500)
    d.finish(
        "j@1800000001000",
        outcome="failed",
        node=d.state.runs["j@1800000001000"].node or "",
        attempt=2,
        at=T0 + 2600,
        error="exit 1",
    )
    assert [e["kind"] for e in d.state.alert_events] == ["failed"]
    result = decide_now(d, T0 + 3000)
    assert result is not None and result["ok"]
    (alert,) = d.state.alerts.values()
    assert (alert.event, alert.run_id, alert.run_attempt, alert.count) == (
        "run.failed",
        "j@1800000001000",
        2,
        1,
    )
    assert alert.alert_id == alert_id("ops", "run.failed", "j@1800000001000#2")
    assert alert.node in d.state.nodes and not d.state.alert_events
    assert decide_now(d, T0 + 3100) is None  # nothing new: nothing proposed


def test_a_burst_is_one_alert_then_one_grouped_alert_per_window() -> None:
    d = driver(window_s=10)
    d.add("j", overlap="allow", notify=[{"on": ["failed"], "channel": "ops"}])
    for k in range(1, 501):
        fail(d, "j", T0 + k)
        if k % 100 == 0:
            decide_now(d, T0 + 1000 + k)
    first = list(d.state.alerts.values())
    assert len(first) == 1 and first[0].count == 1  # the first at once, the rest wait for the window
    assert decide_now(d, T0 + 5000) is None  # the window is still open: nothing to commit
    decide_now(d, T0 + 11_101)
    alerts = list(d.state.alerts.values())
    assert len(alerts) == 2 and alerts[1].count == 499 and alerts[1].summary == {"run.failed": 499}
    assert sum(a.count for a in alerts) == 500  # every event in exactly one alert
    assert alerts[1].event == "run.failed" and alerts[1].run_id == "j@1800000000002"


def test_overlap_skips_alert_but_pause_skips_do_not() -> None:
    d = driver(window_s=0)
    d.add("j", notify=[{"on": ["skipped", "missed"], "channel": "ops"}])
    d.fire("j", T0 + 1000)
    d.fire("j", T0 + 2000)  # the first is still pending: forbid records the slot skipped
    assert [(e["kind"], e["run_id"]) for e in d.state.alert_events] == [("skipped", "j@1800000002000")]
    d.cmd(CommandType.PAUSE_JOB, job_id="j", now_ms=T0 + 2500)
    assert len(d.state.alert_events) == 1


def test_node_events_and_late_starts_follow_the_cluster_rules() -> None:
    d = driver(window_s=0)
    rules = [
        {"on": ["node_down", "node_clock"], "channel": "ops"},
        {"on": ["late"], "channel": "ops", "threshold_s": 2},
    ]
    assert d.cmd(CommandType.SET_ALERT_RULES, rules=rules, cluster="prod", now_ms=T0)["ok"]
    d.cmd(CommandType.SET_NODE, term=1, node="n3", up=False, now_ms=T0 + 1, reason="not heard from")
    d.cmd(
        CommandType.NODE_CLOCKS,
        term=1,
        now_ms=T0 + 2,
        clocks=[{"node": "n2", "offset_ms": 3000, "ok": False}],
    )
    d.add("j", overlap="allow")
    d.fire("j", T0 + 1000)
    d.fire("j", T0 + 2000)
    d.start("j@1800000001000", at=T0 + 2000)  # 1 s late: under the threshold
    d.start("j@1800000002000", at=T0 + 5000)  # 3 s late
    kinds = [(e["kind"], e.get("node") or e.get("run_id")) for e in d.state.alert_events]
    assert kinds == [("node_down", "n3"), ("node_clock", "n2"), ("late", "j@1800000002000")]
    decide_now(d, T0 + 6000)
    assert [a.event for a in d.state.alerts.values()] == ["node.down", "node.clock", "run.late"]


def test_a_decision_from_a_stale_cursor_or_term_is_refused() -> None:
    d = driver(window_s=0)
    d.add("j", overlap="allow", notify=[{"on": ["failed"], "channel": "ops"}])
    fail(d, "j", T0 + 1000)
    body = AlertDecider(d.state, Proposer(d), FakeClock(T0 + 2000)).build(1, T0 + 2000)
    assert body is not None
    assert not d.cmd(CommandType.RAISE_ALERTS, **{**body, "term": 0})["ok"]  # a deposed leader
    assert d.cmd(CommandType.RAISE_ALERTS, **body)["ok"]
    again = d.cmd(CommandType.RAISE_ALERTS, **body)  # a second leader's decision of the same events
    assert not again["ok"] and len(d.state.alerts) == 1


def test_reports_are_fenced_and_failures_retry_on_the_next_node() -> None:
    d = driver(window_s=0)
    d.add("j", overlap="allow", notify=[{"on": ["failed"], "channel": "ops"}])
    fail(d, "j", T0 + 1000)
    decide_now(d, T0 + 2000)
    (alert,) = d.state.alerts.values()
    other = next(n for n in d.state.nodes if n != alert.node)
    report = {"alert_id": alert.alert_id, "attempt": 1, "ok": True, "error": None}
    assert d.cmd(CommandType.REPORT_ALERTS, node=other, now_ms=T0 + 2100, items=[report])["accepted"] == []
    failed = {**report, "ok": False, "error": "status 500"}
    assert d.cmd(CommandType.REPORT_ALERTS, node=alert.node, now_ms=T0 + 2100, items=[failed])["accepted"]
    retried = d.state.alerts[alert.alert_id]
    assert (retried.attempt, retried.due_ms, retried.last_error) == (2, T0 + 3100, "status 500")
    decide_now(d, T0 + 2200)  # the leader moves attempt 2 to the next node of the ranking
    moved = d.state.alerts[alert.alert_id]
    assert moved.node == deliverer(alert.alert_id, 2, sorted(d.state.nodes)) and moved.node != alert.node
    ok = {**report, "attempt": 2}
    assert d.cmd(CommandType.REPORT_ALERTS, node=moved.node, now_ms=T0 + 3200, items=[ok])["accepted"]
    assert d.cmd(CommandType.REPORT_ALERTS, node=moved.node, now_ms=T0 + 3300, items=[ok])["accepted"] == []
    done = d.state.alerts[alert.alert_id]
    assert done.delivery is Delivery.DELIVERED and done.delivered_by == moved.node
    assert d.state.alert_counts == {"ops|failed": 1, "ops|delivered": 1}


def test_alert_commands_need_the_clusters_version_2() -> None:
    d = Driver()
    d.boot()
    result = d.cmd(CommandType.PUT_CHANNEL, name="ops", channel={**HOOK, "name": "ops"}, now_ms=T0)
    assert result["code"] == "unavailable" and not d.state.channels


def test_the_alert_state_survives_a_snapshot() -> None:
    d = driver()
    d.add("j", overlap="allow", notify=[{"on": ["failed"], "channel": "ops"}])
    for k in (1, 2, 3):
        fail(d, "j", T0 + k * 1000)
    decide_now(d, T0 + 4000)
    restored = State()
    restored.load(d.state.dump())
    assert restored.dump() == d.state.dump()
    assert restored.alert_throttle == d.state.alert_throttle and list(restored.alerts) == list(d.state.alerts)


# ---------------------------------------------------------------- payloads


def alert(**over: Any) -> AlertRecord:
    fields: dict[str, Any] = {
        "alert_id": "a1",
        "channel": "ops",
        "event": "run.failed",
        "at_ms": T0,
        "decided_ms": T0,
        "job_id": "j",
        "run_id": "j@1800000001000",
        "run_attempt": 3,
        "state": "failed",
        "error": "exit 1",
        "scheduled_ms": T0 - 1000,
    }
    return AlertRecord(**{**fields, **over})


def test_the_webhook_is_signed_over_timestamp_and_body() -> None:
    channel = ChannelSpec.from_dict(HOOK, name="ops")
    body, headers = webhook_request(alert(), channel, "prod", T0 + 5, "k3y")
    assert headers["X-Raftsched-Alert-Id"] == "a1"
    assert headers["X-Raftsched-Timestamp"] == "2027-01-15T08:00:00.005Z"
    expected = hmac.new(b"k3y", b"2027-01-15T08:00:00.005Z." + body, hashlib.sha256).hexdigest()
    assert (
        headers["X-Raftsched-Signature"]
        == f"sha256={expected}"
        == signature("k3y", headers["X-Raftsched-Timestamp"], body)
    )
    assert orjson.loads(body) == {
        "alert_id": "a1",
        "event": "run.failed",
        "cluster": "prod",
        "job_id": "j",
        "run_id": "j@1800000001000",
        "attempt": 3,
        "state": "failed",
        "error": "exit 1",
        "scheduled_at": "2027-01-15T07:59:59.000Z",
        "at": "2027-01-15T08:00:00.000Z",
        "count": 1,
    }
    _, unsigned = webhook_request(alert(), channel, "prod", T0, None)
    assert "X-Raftsched-Signature" not in unsigned


def test_slack_and_teams_variants_and_the_email() -> None:
    slack = orjson.loads(webhook_body(alert(count=7), "prod", WebhookFormat.SLACK))
    assert slack["text"] == "[prod] run.failed j (7 alerts): exit 1"
    teams = orjson.loads(webhook_body(alert(), "prod", WebhookFormat.TEAMS))
    assert (
        teams["@type"] == "MessageCard"
        and {"name": "alert_id", "value": "a1"} in teams["sections"][0]["facts"]
    )
    node = orjson.loads(
        webhook_body(
            alert(job_id=None, run_id=None, run_attempt=None, node_id="n2", event="node.down"),
            "p",
            WebhookFormat.RAW,
        )
    )
    assert node["run_id"] is None and node["node"] == "n2"
    mail = ChannelSpec.from_dict(
        {"type": "email", "smtp": "h:25", "from": "a@b", "to": ["c@d", "e@f"]}, name="m"
    )
    message = email_message(alert(), mail, "prod")
    assert message["Subject"] == "[prod] run.failed j: exit 1" and message["To"] == "c@d, e@f"
    assert message["X-Raftsched-Alert-Id"] == "a1" and "run_id: j@1800000001000" in message.get_content()


def test_decide_is_deterministic_and_drops_unknown_channels() -> None:
    channels = {"ops": ChannelSpec.from_dict(HOOK, name="ops")}
    events = [
        {"seq": 1, "kind": "failed", "at_ms": T0, "run_id": "j@1", "attempt": 1, "channels": ["ops", "gone"]}
    ]
    one, two = decide(events, channels, {}, T0), decide(events, channels, {}, T0)
    assert [a.to_dict() for a in one.alerts] == [a.to_dict() for a in two.alerts] and len(one.alerts) == 1
    assert one.alerts[0].delivery is Delivery.PENDING


def test_deliveries_are_a_metric_per_channel_and_outcome() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from raftsched.api.metrics import _Collector

    d = driver(window_s=0)
    d.add("j", overlap="allow", notify=[{"on": ["failed"], "channel": "ops"}])
    fail(d, "j", T0 + 1000)
    decide_now(d, T0 + 2000)
    (alert,) = d.state.alerts.values()
    item = {"alert_id": alert.alert_id, "attempt": 1, "ok": True}
    d.cmd(CommandType.REPORT_ALERTS, node=alert.node, now_ms=T0 + 2100, items=[item])
    registry = CollectorRegistry()
    registry.register(_Collector(d.state, None, node_id="n1", version="x"))
    text = generate_latest(registry).decode()
    assert 'raftsched_alert_deliveries_total{channel="ops",outcome="delivered"} 1.0' in text
    assert 'raftsched_alerts_pending{channel="ops"} 0.0' in text


async def test_the_sender_keeps_the_nodes_fences_and_publishes_messages() -> None:
    from raftsched.executors.alerts import AlertSender
    from raftsched.executors.base import ExecPolicy
    from raftsched.executors.http import HttpExecutor
    from raftsched.executors.message import MessageExecutor
    from raftsched.executors.publishers import BrokerSpec, Message
    from raftsched.secretstore import SecretStore

    sent: list[Message] = []

    class Publisher:
        async def publish(self, message: Message) -> str:
            sent.append(message)
            return "ok"

        async def close(self) -> None:
            pass

    policy = ExecPolicy(
        secrets=SecretStore.build(section_values={"HOOK_KEY": "k"}),
        brokers={"events": BrokerSpec(name="events", url="redis://127.0.0.1:1/0")},
    )
    http = HttpExecutor(policy)
    sender = AlertSender(policy, http, MessageExecutor(policy, make_publisher=lambda spec: Publisher()))
    hook = ChannelSpec.from_dict(HOOK, name="ops")  # 127.0.0.1, and no http_allow here
    error = await sender.send(alert(), hook, "prod", T0)
    assert error is not None and error.startswith("refused: ") and "loopback" in error
    unsigned = ChannelSpec.from_dict({**HOOK, "signing_secret": {"secret": "MISSING"}}, name="ops")
    assert await sender.send(alert(), unsigned, "prod", T0) == "refused: this node has no secret MISSING"
    bus = ChannelSpec.from_dict({"type": "message", "broker": "events", "to": "alerts"}, name="bus")
    assert await sender.send(alert(), bus, "prod", T0) is None
    assert sent[0].message_id == "a1" and orjson.loads(sent[0].body)["run_id"] == "j@1800000001000"
    await http.close()
