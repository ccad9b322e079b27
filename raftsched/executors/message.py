"""Message tasks: one message per run, published to a broker this node has, acknowledged or failed.

The body is the task's `body` with the run's fields rendered into its strings (`templates`): a
string is sent as is, any other JSON value as JSON. It may be at most `message_max_bytes`. Header
values that are secret references are resolved from the node's secrets when the run starts. The
run succeeds once the broker acknowledged the message (`publishers`); its output is what the broker
answered. A broker that is down fails the run at once (the connection is dialled with a timeout),
and retries apply as for any task; the worker never waits on a broker beyond the run's timeout.

One publisher per broker serves every run of the node (its connection pooled, re-established
after a failure).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import orjson

from .. import templates
from ..model import TaskSpec, iso_ms
from .base import ExecPolicy, ExecResult, OutputSink, Refused, RunContext, failed, resolve_secrets, timed_out
from .publishers import BrokerSpec, Message, Publisher, PublishFailed, publisher_for

__all__ = ["DEFAULT_PUBLISH_TIMEOUT_S", "MessageExecutor", "build_message"]

DEFAULT_PUBLISH_TIMEOUT_S = 30.0  # a run without a timeout still never waits longer on a broker


class MessageExecutor:
    """Runs `message` tasks; see `Executor` for the contract. Call `close()` when done."""

    def __init__(
        self, policy: ExecPolicy, make_publisher: Callable[[BrokerSpec], Publisher] = publisher_for
    ) -> None:
        self._policy = policy
        self._make_publisher = make_publisher
        self._publishers: dict[str, Publisher] = {}

    async def run(
        self,
        task: TaskSpec,
        ctx: RunContext,
        *,
        timeout_s: float | None,
        output_path: Path | None,
        on_group: Callable[[int], None] | None = None,
    ) -> ExecResult:
        try:
            spec = self._broker(task)
            message = build_message(task, ctx, self._policy)
        except Refused as exc:
            return failed(f"refused: {exc}")
        limit = timeout_s if timeout_s is not None else DEFAULT_PUBLISH_TIMEOUT_S
        with OutputSink.for_policy(self._policy, output_path) as sink:
            try:
                async with asyncio.timeout(limit):
                    answer = await self._publisher(spec).publish(message)
            except TimeoutError:
                if timeout_s is None:
                    return failed(f"broker {spec.name!r} did not acknowledge within {limit:g} s")
                return timed_out(timeout_s, note=f": broker {spec.name!r} did not acknowledge")
            except PublishFailed as exc:
                return failed(str(exc))
            sink.write(f"{answer}\n".encode())
            return ExecResult(outcome="succeeded", output_tail=sink.tail_text())

    async def publish(self, broker: str, message: Message) -> str:
        """Publish `message` through this node's pooled publisher of `broker` (alert channels):
        the broker's answer. Raises Refused (no such broker here) or PublishFailed."""
        spec = self._policy.brokers.get(broker)
        if spec is None:
            raise Refused(f"this node has no broker {broker!r}")
        return await self._publisher(spec).publish(message)

    async def close(self) -> None:
        publishers, self._publishers = self._publishers, {}
        for publisher in publishers.values():
            await publisher.close()

    def _broker(self, task: TaskSpec) -> BrokerSpec:
        spec = self._policy.brokers.get(task.broker or "")
        if spec is None:
            have = ", ".join(sorted(self._policy.brokers)) or "none"
            raise Refused(f"this node has no broker {task.broker!r} (it has: {have})")
        return spec

    def _publisher(self, spec: BrokerSpec) -> Publisher:
        if spec.name not in self._publishers:
            self._publishers[spec.name] = self._make_publisher(spec)
        return self._publishers[spec.name]


def build_message(task: TaskSpec, ctx: RunContext, policy: ExecPolicy) -> Message:
    """The message a run publishes; raises Refused for a missing secret or an oversized body."""
    fields = identity_fields(ctx)
    rendered = templates.render_value(task.body, fields)
    body = rendered.encode() if isinstance(rendered, str) else orjson.dumps(rendered)
    if len(body) > policy.message_max_bytes:
        raise Refused(
            f"the body is {len(body)} bytes, over this node's message_max_bytes ({policy.message_max_bytes})"
        )
    return Message(
        to=task.to or "",
        body=body,
        content_type=task.message_content_type(),
        message_id=f"{ctx.run_id}/{ctx.attempt}",
        run_id=ctx.run_id,
        fields=fields,
        headers=resolve_secrets(task.headers, policy.secrets),
        options=task.options,
    )


def identity_fields(ctx: RunContext) -> Mapping[str, str]:
    """The run's identity as message fields (and the values a body template may use)."""
    return {
        "run_id": ctx.run_id,
        "job_id": ctx.job_id,
        "attempt": str(ctx.attempt),
        "scheduled_at": iso_ms(ctx.scheduled_ms) or "",
        "node": ctx.node_id,
        "shard": str(ctx.shard),
        "shards": str(ctx.shards),
    }
