"""Every node's courier: delivers the alerts the applied state assigns to this node.

Like the worker, it decides nothing: the leader assigned each alert's delivery attempt to a node
(`alertdecider`); the courier sends those of this node whose attempt is due, at most
`concurrency` at a time, and reports each outcome in a REPORT_ALERTS (fenced by node and attempt,
so a report that lost a race with a move counts for nothing). A failed attempt is retried by the
state's backoff, possibly by another node. Delivery is at least once: a node that dies after
sending and before its report is committed is followed by another attempt, by another node, of
the same alert id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .alerting import AlertRecord, Delivery
from .clock import Clock
from .commands import CommandType, encode, usable_version
from .errors import RaftschedError
from .executors.alerts import Sender
from .state import State

__all__ = ["Courier", "CourierSettings"]

log = logging.getLogger(__name__)

Propose = Callable[[bytes], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class CourierSettings:
    node_id: str
    period_s: float = 0.2
    concurrency: int = 16


class Courier:
    def __init__(
        self, settings: CourierSettings, state: State, propose: Propose, clock: Clock, sender: Sender
    ) -> None:
        self.settings = settings
        self.state = state
        self.propose = propose
        self.clock = clock
        self.sender = sender
        self._flying: set[tuple[str, int]] = set()  # (alert id, attempt) being sent here
        self._reports: list[dict[str, Any]] = []
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            while True:
                for alert in self.due():
                    self._flying.add((alert.alert_id, alert.attempt))
                    group.create_task(self._deliver(alert))
                await self.flush()
                await asyncio.sleep(self.settings.period_s)

    def due(self) -> list[AlertRecord]:
        """This node's pending alerts whose attempt is due and not being sent already."""
        now_ms, me = self.clock.now_ms(), self.settings.node_id
        with self.state.lock:
            if usable_version(CommandType.REPORT_ALERTS, self.state.cluster_version) is None:
                return []
            return [
                a
                for a in self.state.alerts.values()
                if a.node == me
                and a.delivery is Delivery.PENDING
                and a.due_ms <= now_ms
                and (a.alert_id, a.attempt) not in self._flying
            ]

    async def _deliver(self, alert: AlertRecord) -> None:
        async with self._slots:
            with self.state.lock:
                channel = self.state.channels.get(alert.channel)
                cluster = self.state.alert_cluster
            error = (
                "the channel was deleted"
                if channel is None
                else await self.sender.send(alert, channel, cluster, self.clock.now_ms())
            )
        if error is None:
            log.info("alert %s delivered to %s", alert.alert_id, alert.channel)
        else:
            log.warning("alert %s to %s, attempt %d: %s", alert.alert_id, alert.channel, alert.attempt, error)
        self._reports.append(
            {"alert_id": alert.alert_id, "attempt": alert.attempt, "ok": error is None, "error": error}
        )

    async def flush(self) -> None:
        """Report what was sent; an item stays in flight until its report is committed (or the
        state moved on), so that it is not sent again meanwhile."""
        if not self._reports:
            return
        items, self._reports = self._reports, []
        body = {"node": self.settings.node_id, "now_ms": self.clock.now_ms(), "items": items}
        result: dict[str, Any] = {}
        with contextlib.suppress(RaftschedError):
            result = await self.propose(encode(CommandType.REPORT_ALERTS, body))
        if not result.get("ok"):
            self._reports = items + self._reports  # again at the next turn
            return
        for item in items:
            self._flying.discard((item["alert_id"], item["attempt"]))
