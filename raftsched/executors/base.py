"""The executor contract: what a run is told, what the node allows, what comes back.

Execution is remote code execution by design, so every executor is fenced by an `ExecPolicy` that
comes from the executing node's own config (DESIGN.md §5), never from the job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from ..model import TaskSpec, iso_ms

__all__ = [
    "ExecPolicy",
    "ExecResult",
    "Executor",
    "Outcome",
    "OutputSink",
    "Refused",
    "RunContext",
    "failed",
    "identity_context",
    "identity_env",
    "identity_headers",
    "timed_out",
]

log = logging.getLogger(__name__)

Outcome = Literal["succeeded", "failed", "timed_out", "cancelled"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RunContext:
    """Who a run is: handed to the task so that it can be idempotent (API.md "told who it is")."""

    job_id: str
    run_id: str
    attempt: int
    scheduled_ms: int
    node_id: str
    shard: int = 0
    shards: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPolicy:
    """Node-local fences, from the node's own config; a job cannot widen them.

    `kill_grace_s` is how long a process group gets between SIGTERM and SIGKILL.
    """

    allow_shell: bool = False
    python_allow: tuple[str, ...] = ()
    http_allow: tuple[IPv4Network | IPv6Network, ...] = ()
    output_tail_bytes: int = 4096
    kill_grace_s: float = 2.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """How a run ended. `cancelled` is never returned by an executor (cancellation re-raises);
    it is part of the vocabulary for the worker that records results."""

    outcome: Outcome
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None
    output_tail: str = ""


class Executor(Protocol):
    """Runs one kind of task. Called from the event loop; one instance serves many runs at once."""

    async def run(
        self,
        task: TaskSpec,
        ctx: RunContext,
        *,
        timeout_s: float | None,
        output_path: Path | None,
        on_group: Callable[[int], None] | None = None,
    ) -> ExecResult:
        """Run `task` once and say how it ended.

        Never raises for task failures: a failing task, one refused by the node's policy, one that
        cannot start are all outcome "failed" with `error`. After `timeout_s` everything the task
        started is killed and the outcome is "timed_out". If the asyncio task running this is
        cancelled, everything is killed (process group TERM, KILL after the policy's grace) and
        CancelledError is re-raised. The full output is appended to `output_path` when given (the
        caller owns retention); `output_tail` is its last `output_tail_bytes` bytes, decoded
        UTF-8 with errors="replace". Raises OSError only when `output_path` cannot be opened.
        `on_group(pgid)` is called, on the event loop, with the id of each process group the run
        starts, as soon as it exists (never for runs without processes); when `run` returns or
        raises, those groups have been stopped. A started process dies with the node (see
        `_reaper`).
        """
        ...

    async def close(self) -> None:
        """Release what the executor holds (sessions); runs must have ended."""
        ...


class Refused(Exception):
    """The node's policy refuses the task: reported as outcome "failed", never raised to callers."""


def identity_env(ctx: RunContext) -> dict[str, str]:
    """Identity for shell and python tasks, as environment variables (API.md)."""
    return {
        "RAFTSCHED_JOB_ID": ctx.job_id,
        "RAFTSCHED_RUN_ID": ctx.run_id,
        "RAFTSCHED_ATTEMPT": str(ctx.attempt),
        "RAFTSCHED_SCHEDULED_AT": iso_ms(ctx.scheduled_ms) or "",
        "RAFTSCHED_NODE": ctx.node_id,
        "RAFTSCHED_SHARD": str(ctx.shard),
        "RAFTSCHED_SHARDS": str(ctx.shards),
    }


def identity_headers(ctx: RunContext) -> dict[str, str]:
    """Identity for HTTP tasks, as request headers (API.md)."""
    return {
        "X-Raftsched-Job-Id": ctx.job_id,
        "X-Raftsched-Run-Id": ctx.run_id,
        "X-Raftsched-Attempt": str(ctx.attempt),
        "X-Raftsched-Scheduled-At": iso_ms(ctx.scheduled_ms) or "",
        "X-Raftsched-Node": ctx.node_id,
        "X-Raftsched-Shard": str(ctx.shard),
        "X-Raftsched-Shards": str(ctx.shards),
    }


def identity_context(ctx: RunContext) -> dict[str, str | int]:
    """Identity for python callables, as the `context` keyword argument."""
    return {
        "job_id": ctx.job_id,
        "run_id": ctx.run_id,
        "attempt": ctx.attempt,
        "scheduled_at": iso_ms(ctx.scheduled_ms) or "",
        "node": ctx.node_id,
        "shard": ctx.shard,
        "shards": ctx.shards,
    }


class OutputSink:
    """A bounded tail in memory plus a full copy appended to a file: output never grows the node.

    Opening the file may raise OSError (before the task starts). A later write error is logged
    once and the file copy stops; the run goes on, since losing output is not the task's fault.
    """

    def __init__(self, tail_bytes: int, path: Path | None) -> None:
        self._limit = max(0, tail_bytes)
        self._tail = bytearray()
        self._path = path
        self._file: BinaryIO | None = path.open("ab", buffering=0) if path is not None else None
        self.total_bytes = 0

    def write(self, data: bytes) -> None:
        self.total_bytes += len(data)
        self._tail += data
        excess = len(self._tail) - self._limit
        if excess > 0:
            del self._tail[:excess]
        self._write_file(data)

    def _write_file(self, data: bytes) -> None:
        if self._file is None:
            return
        try:
            self._file.write(data)
        except OSError as exc:
            log.warning("output file %s: %s; keeping the tail only", self._path, exc)
            self.close()

    def tail_text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def close(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def __enter__(self) -> OutputSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def failed(error: str, *, output_tail: str = "", exit_code: int | None = None) -> ExecResult:
    """A failed result: the common case for refusals and start errors."""
    return ExecResult(outcome="failed", error=error, output_tail=output_tail, exit_code=exit_code)


def timed_out(timeout_s: float, *, output_tail: str = "", note: str = "") -> ExecResult:
    """A timed-out result; `note` says what could not be stopped, if anything."""
    return ExecResult(
        outcome="timed_out", error=f"timed out after {timeout_s:g} s{note}", output_tail=output_tail
    )
