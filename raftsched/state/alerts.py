"""Commands about alerts: channels, the cluster's rules, events noted, alerts decided and delivered.

See `alerting` for the whole path. Invariants kept here:
- an event is noted only if a rule wants it, with the channels its rules name then;
- events after `alert_cursor` wait for the leader; RAISE_ALERTS applies only on the cursor it was
  decided from (compare-and-set), so each event is decided once, whatever the leaders do;
- an alert id is recorded once; a delivery report counts only for the alert's current node and
  attempt (an older attempt's late answer changes nothing);
- at most MAX_EVENTS events and MAX_ALERTS alerts are kept.
"""

from __future__ import annotations

from typing import Any

from ..alerting import (
    MAX_ALERTS,
    MAX_DELIVERY_ATTEMPTS,
    MAX_EVENTS,
    AlertRecord,
    Delivery,
    event_channels,
    retry_delay_ms,
)
from ..channels import ChannelSpec
from ..errors import RaftschedError
from ..model import AlertOn, notify_rules
from ..records import Run, evolve
from .data import Result, StateData, ok, reject

__all__ = ["AlertCommands"]


class AlertCommands(StateData):
    # ------------------------------------------------------------------ configuration (api)

    def _apply_put_channel(self, body: dict[str, Any]) -> Result:
        try:
            spec = ChannelSpec.from_wire(body["channel"])
        except (RaftschedError, KeyError, TypeError) as exc:
            return reject("validation_error", str(exc), getattr(exc, "field", None))
        created = spec.name not in self.channels
        self.channels[spec.name] = spec
        return ok(name=spec.name, created=created)

    def _apply_delete_channel(self, body: dict[str, Any]) -> Result:
        name = str(body.get("name"))
        if self.channels.pop(name, None) is None:
            return reject("not_found", f"no channel {name!r}", "name")
        self.alert_throttle.pop(name, None)
        return ok(name=name)

    def _apply_set_alert_rules(self, body: dict[str, Any]) -> Result:
        try:
            rules = notify_rules(body.get("rules"), "rules", job=False)
        except RaftschedError as exc:
            return reject(exc.code, exc.message, exc.field)
        self.alert_rules = rules
        self.alert_cluster = str(body.get("cluster") or "raftsched")
        return ok(rules=len(rules))

    # ------------------------------------------------------------------ the leader's decision

    def _apply_raise_alerts(self, body: dict[str, Any]) -> Result:
        after, through = body.get("after_seq"), body.get("through_seq")
        if (
            after != self.alert_cursor
            or not isinstance(through, int)
            or not after <= through <= self.alert_seq
        ):
            return reject("rejected", f"decided from event {after}, the cursor is at {self.alert_cursor}")
        while self.alert_events and self.alert_events[0]["seq"] <= through:
            self.alert_events.popleft()
        self.alert_cursor = through
        raised = []
        for item in body.get("alerts", ()):
            alert = AlertRecord.from_dict(item)
            if alert.alert_id not in self.alerts:
                self.alerts[alert.alert_id] = alert
                raised.append(alert.alert_id)
        for name, throttle in dict(body.get("throttle") or {}).items():
            self.alert_throttle[name] = throttle
        moved = [m["alert_id"] for m in body.get("moves", ()) if self._move_alert(m)]
        self._trim_alerts()
        return ok(raised=raised, moved=moved)

    def _move_alert(self, item: dict[str, Any]) -> bool:
        alert = self.alerts.get(str(item.get("alert_id")))
        if alert is None or alert.delivery is not Delivery.PENDING or alert.attempt != item.get("attempt"):
            return False
        self.alerts[alert.alert_id] = evolve(alert, node=item.get("node"))
        return True

    def _trim_alerts(self) -> None:
        """The oldest ended alerts go first; pending ones only past twice the bound."""
        excess = len(self.alerts) - MAX_ALERTS
        if excess <= 0:
            return
        doomed = [a for a, r in self.alerts.items() if r.delivery is not Delivery.PENDING][:excess]
        if len(self.alerts) - len(doomed) > 2 * MAX_ALERTS:
            doomed = list(self.alerts)[: len(self.alerts) - MAX_ALERTS]
        for alert_id in doomed:
            del self.alerts[alert_id]

    # ------------------------------------------------------------------ delivery (worker)

    def _apply_report_alerts(self, body: dict[str, Any]) -> Result:
        node, now_ms = str(body.get("node")), body["now_ms"]
        accepted = []
        for item in body.get("items", ()):
            alert = self.alerts.get(str(item.get("alert_id")))
            if alert is None or alert.delivery is not Delivery.PENDING:
                continue
            if alert.node != node or alert.attempt != item.get("attempt"):
                continue  # fencing: a report of another node or attempt
            self.alerts[alert.alert_id] = _reported(alert, item, node, now_ms)
            outcome = "delivered" if item.get("ok") else "failed"
            key = f"{alert.channel}|{outcome}"
            self.alert_counts[key] = self.alert_counts.get(key, 0) + 1
            accepted.append(alert.alert_id)
        return ok(accepted=accepted)

    # ------------------------------------------------------------------ events

    def _note_run_event(self, kind: AlertOn, run: Run, now_ms: int, *, late_ms: int | None = None) -> None:
        """Note an event about `run` if a rule wants it (module docstring)."""
        job = self.jobs.get(run.job_id)
        rules = (*self.alert_rules, *(job.spec.notify if job is not None else ()))
        if not rules:
            return
        channels = event_channels(kind, rules, late_ms=late_ms)
        if channels:
            event = {
                "kind": kind.value,
                "at_ms": now_ms,
                "job_id": run.job_id,
                "run_id": run.run_id,
                "attempt": run.attempt,
                "state": run.state.value if kind is not AlertOn.LATE else "running",
                "error": run.error if kind is not AlertOn.SKIPPED else run.reason,
                "scheduled_ms": run.nominal_ms,
                "count": run.count,
                "channels": channels,
            }
            if kind in (AlertOn.MISSED, AlertOn.SKIPPED, AlertOn.LOST):
                event["error"] = run.reason
            self._note(event)

    def _note_node_event(self, kind: AlertOn, node: str, now_ms: int, reason: str | None) -> None:
        channels = event_channels(kind, self.alert_rules) if self.alert_rules else []
        if channels:
            self._note(
                {"kind": kind.value, "at_ms": now_ms, "node": node, "error": reason, "channels": channels}
            )

    def _note(self, event: dict[str, Any]) -> None:
        self.alert_seq += 1
        self.alert_events.append({"seq": self.alert_seq, **event})
        if len(self.alert_events) > MAX_EVENTS:
            self.alert_events.popleft()
            self.alert_cursor = self.alert_events[0]["seq"] - 1
            self.alert_events_dropped += 1


def _reported(alert: AlertRecord, item: dict[str, Any], node: str, now_ms: int) -> AlertRecord:
    if item.get("ok"):
        return evolve(
            alert, delivery=Delivery.DELIVERED, delivered_ms=now_ms, delivered_by=node, last_error=None
        )
    error = str(item.get("error") or "failed")[:500]
    if alert.attempt >= MAX_DELIVERY_ATTEMPTS:
        return evolve(alert, delivery=Delivery.FAILED, last_error=error)
    # The next attempt; the leader moves it to the next node in the alert's ranking.
    return evolve(
        alert, attempt=alert.attempt + 1, due_ms=now_ms + retry_delay_ms(alert.attempt), last_error=error
    )
