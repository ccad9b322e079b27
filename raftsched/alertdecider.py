"""The leader's part of alerting: decide the noted events, and keep each alert on a node that can
deliver it (see `alerting` for the rules).

Called from the scheduler's tick while this node leads with its term begun. One RAISE_ALERTS per
tick at most, and only when there is something to commit: events to decide, a channel's group
whose window has ended, or a pending alert on a node that is not the one its ranking names for
its attempt (down, no longer eligible, or the next node after a failed attempt).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any

from . import eligibility
from .alerting import MAX_ALERTS_PER_COMMAND, AlertRecord, Delivery, decide, deliverer
from .channels import ChannelSpec
from .clock import Clock
from .commands import CommandType, encode, usable_version
from .records import NodeRecord, evolve
from .state import State

__all__ = ["AlertDecider"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]


class AlertDecider:
    def __init__(self, state: State, propose: Propose, clock: Clock) -> None:
        self.state = state
        self.propose = propose
        self.clock = clock

    async def tick(self, term: int) -> dict[str, Any] | None:
        """Propose this tick's RAISE_ALERTS, if there is anything to commit; its result."""
        now_ms = self.clock.now_ms()
        body = self.build(term, now_ms)
        if body is None:
            return None
        result = await self.propose(encode(CommandType.RAISE_ALERTS, body))
        if result.get("ok") and result.get("raised"):
            log.info("alerts raised: %s", result["raised"], extra={"term": term})
        return result

    def build(self, term: int, now_ms: int) -> dict[str, Any] | None:
        """The body of this tick's RAISE_ALERTS from the committed state, or None (nothing to do,
        or the cluster's version does not cover the command yet)."""
        with self.state.lock:
            s = self.state
            if usable_version(CommandType.RAISE_ALERTS, s.cluster_version) is None:
                return None
            events = list(islice(s.alert_events, MAX_ALERTS_PER_COMMAND))
            channels, cursor = dict(s.channels), s.alert_cursor
            throttle = dict(s.alert_throttle)
            nodes = list(s.nodes.values())
            pending = [a for a in s.alerts.values() if a.delivery is Delivery.PENDING]
        decision = decide(events, channels, throttle, now_ms)
        eligible = _eligible(channels, nodes)
        for i, alert in enumerate(decision.alerts):
            decision.alerts[i] = _assigned(alert, eligible)
        moves = [
            {"alert_id": a.alert_id, "attempt": a.attempt, "node": node}
            for a in pending
            if (node := deliverer(a.alert_id, a.attempt, eligible.get(a.channel, []))) != a.node
        ]
        if not events and not decision and not moves:
            return None
        return {
            "term": term,
            "now_ms": now_ms,
            "after_seq": cursor,
            "through_seq": events[-1]["seq"] if events else cursor,
            "alerts": [a.to_dict() for a in decision.alerts],
            "throttle": decision.throttle,
            "moves": moves,
        }


def _eligible(channels: dict[str, ChannelSpec], nodes: list[NodeRecord]) -> dict[str, list[str]]:
    return {name: eligibility.channel_nodes(channel, nodes) for name, channel in channels.items()}


def _assigned(alert: AlertRecord, eligible: dict[str, list[str]]) -> AlertRecord:
    return evolve(alert, node=deliverer(alert.alert_id, alert.attempt, eligible.get(alert.channel, [])))
