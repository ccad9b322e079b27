"""The executor contract: what a run is told, what the node allows, what comes back.

Execution is remote code execution by design, so every executor is fenced by an `ExecPolicy` that
comes from the executing node's own config (DESIGN.md §5), never from the job.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import BinaryIO, Literal, Protocol

from ..config import DEFAULT_MESSAGE_MAX_BYTES, DEFAULT_OUTPUT_MAX_BYTES
from ..model import SecretRef, TaskSpec, TextOrSecret, iso_ms
from ..secretstore import ENV_PREFIX, SecretStore
from .publishers import BrokerSpec

__all__ = [
    "OPENED_SINKS",
    "ExecPolicy",
    "ExecResult",
    "Executor",
    "Outcome",
    "OutputSink",
    "Refused",
    "RunContext",
    "TaskUser",
    "failed",
    "identity_context",
    "identity_env",
    "identity_headers",
    "output_so_far",
    "resolve_secrets",
    "tail_is_whole",
    "task_umask",
    "timed_out",
    "truncation_marker",
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
class TaskUser:
    """The `run_as` user, looked up once at node start (`_fences.task_user`)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the primary one among them
    home: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecPolicy:
    """Node-local fences, from the node's own config; a job cannot widen them.

    `brokers`: the `[broker NAME]` sections that name this node, passwords resolved;
    `message_max_bytes` bounds a message task's body. `kill_grace_s` is how long a task's
    processes get between SIGTERM and SIGKILL.
    `command_allow`: directories argv[0] must resolve under (empty: any; see `_fences`).
    `run_as`: the user process tasks run as (None: the node's own). `umask`: the tasks' umask
    (None: `task_umask()`, the one the node started with). `output_max_bytes` bounds each
    attempt's output file (see `OutputSink`). `secrets` resolves the secret references of a task
    when its run starts (`resolve_secrets`).
    """

    allow_shell: bool = False
    python_allow: tuple[str, ...] = ()
    python_path: tuple[str, ...] = ()  # directories python tasks import from, after the node's own
    http_allow: tuple[IPv4Network | IPv6Network, ...] = ()
    command_allow: tuple[str, ...] = ()
    run_as: TaskUser | None = None
    umask: int | None = None
    output_tail_bytes: int = 4096
    output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES
    kill_grace_s: float = 2.0
    secrets: SecretStore = field(default_factory=SecretStore)
    brokers: Mapping[str, BrokerSpec] = field(default_factory=dict)  # the brokers this node has
    message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES

    def task_umask(self) -> int:
        return task_umask() if self.umask is None else self.umask


@functools.cache
def task_umask() -> int:
    """The umask this process had at the first call: tasks get it, whatever the node later sets
    for its own files. The node calls this first thing at start, before anything changes it."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc (or Linux < 4.7): read it by setting it, then put it back
    os.umask(mask)
    return mask


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecResult:
    """How a run ended. `cancelled` is never returned by an executor (cancellation re-raises);
    it is part of the vocabulary for the worker that records results. `output_truncated`: the
    node kept less than the whole output (`OutputSink.truncated`); the worker sets it."""

    outcome: Outcome
    exit_code: int | None = None
    http_status: int | None = None
    error: str | None = None
    output_tail: str = ""
    output_truncated: bool = False


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
        CancelledError is re-raised. `output_tail` is the output's last `output_tail_bytes` bytes,
        decoded UTF-8 with errors="replace"; the full output goes to `output_path` when given
        through an `OutputSink`, which writes the file only when the tail cannot stand for it (the
        caller owns retention). Raises OSError only for a file error before the task starts.
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


def resolve_secrets(values: Mapping[str, TextOrSecret], store: SecretStore) -> dict[str, str]:
    """Headers or env with every `SecretRef` replaced by its value on this node.

    Raises `Refused` naming the first secret this node does not have (never a value). The result
    holds secret values: it goes to the task and nowhere else (no log, no state, no error)."""
    out: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, SecretRef):
            found = store.get(value.name)
            if found is None:
                raise Refused(
                    f"secret {value.name!r} is not set on this node (environment {ENV_PREFIX}{value.name},"
                    " the node's secrets_file, or [secrets])"
                )
            value = found
        out[key] = value
    return out


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


TAIL_SLACK = 3  # bytes of a split character that cutting a tail to a byte count may drop


def tail_is_whole(tail: str, tail_bytes: int) -> bool:
    """Whether `tail`, an output tail as the state keeps it, is the whole output.

    An `OutputSink` writes a file as soon as its tail could be a cut (see there), so a tail shorter
    than `tail_bytes` by more than the bytes a cut through a character drops never was one.
    """
    return len(tail.encode()) + TAIL_SLACK < tail_bytes


OPENED_SINKS: ContextVar[list[OutputSink] | None] = ContextVar("raftsched_opened_sinks", default=None)
"""Set by the caller of an executor: each `OutputSink` the run opens is appended to the list."""

_OPEN: dict[str, OutputSink] = {}  # sinks still being written, by output path (event loop only)


def output_so_far(path: Path) -> bytes | None:
    """The output so far of a run still writing to `path` that has no file yet; else None."""
    sink = _OPEN.get(os.fspath(path))
    return None if sink is None else sink.so_far()


def truncation_marker(kept_bytes: int) -> bytes:
    """The line that ends an output file cut by `OutputSink`; `kept_bytes` of output precede it."""
    return b"\n[raftsched: output truncated at %d bytes]\n" % kept_bytes


def _char_start(data: bytes, at: int) -> int:
    """`at`, moved back to the first byte of the UTF-8 character it falls in (a cut there keeps
    whole characters); `at` itself when no character start lies within 3 bytes before it."""
    for back in range(at, max(0, at - 3) - 1, -1):
        if back >= len(data) or data[back] & 0xC0 != 0x80:
            return back
    return at


class OutputSink:
    """A bounded tail in memory; the full output goes to a file only once the tail cannot hold it.

    Most outputs are small (an HTTP status, a line) and the state keeps them whole as the run's
    tail, so they cost no file: the file is created, with the output so far, when the output
    outgrows `tail_bytes`, or at close when the tail might not be recognisably whole
    (`tail_is_whole`); `keep()` creates it afterwards on demand. The file system never raises here:
    an error is logged once, the file copy stops and the run goes on (losing output is not the
    task's fault). While open, `output_so_far(path)` reads what has no file yet. Event loop only.

    Invariants: the file holds at most `max_bytes` bytes of output (cut at a character start),
    then, if the output was longer, `truncation_marker` and nothing else: it never grows past
    `max_bytes` plus the marker, whatever the task writes. `max_bytes` 0 keeps no file at all.
    The tail always follows the output's last `tail_bytes` bytes, cut or not.
    """

    def __init__(
        self, tail_bytes: int, path: Path | None, *, max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES
    ) -> None:
        self._limit = max(0, tail_bytes)
        self._max_bytes = max(0, max_bytes)
        self._tail = bytearray()
        self.path = path
        self._file: BinaryIO | None = None
        self._stopped = False  # the file copy failed: keep the tail only
        self._closed = False
        self.total_bytes = 0
        self.file_bytes: int | None = None  # bytes in the file, marker included; None: no file
        self._kept = 0  # bytes of output in the file (the marker not counted)
        if path is not None:
            _OPEN[os.fspath(path)] = self
        opened = OPENED_SINKS.get()
        if opened is not None:
            opened.append(self)

    @classmethod
    def for_policy(cls, policy: ExecPolicy, path: Path | None) -> OutputSink:
        """The sink an executor opens for one run, bounded as the node's policy says."""
        return cls(policy.output_tail_bytes, path, max_bytes=policy.output_max_bytes)

    @property
    def truncated(self) -> bool:
        """Whether less than the whole output is kept on this node: the file was cut (or failed),
        or there is no file and the tail has lost the output's beginning."""
        if self.file_bytes is None:
            return self.total_bytes > len(self._tail)
        return self._kept < self.total_bytes

    def write(self, data: bytes) -> None:
        self.total_bytes += len(data)
        if self._file is not None:
            self._write_file(data)
        elif self.file_bytes is None and self.total_bytes > self._limit:
            self._open_file(bytes(self._tail) + data)  # the tail still holds everything before
        self._tail += data
        excess = len(self._tail) - self._limit
        if excess > 0:
            del self._tail[:excess]

    def _open_file(self, data: bytes) -> None:
        if self.path is None or self._stopped or self._max_bytes == 0:
            return
        try:
            try:
                self._file = self.path.open("ab", buffering=0)
            except FileNotFoundError:  # the directory went away: create it again
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._file = self.path.open("ab", buffering=0)
        except OSError as exc:
            log.warning("output file %s: %s; keeping the tail only", self.path, exc)
            self._stopped = True
            return
        self.file_bytes = 0
        self._write_file(data)

    def _write_file(self, data: bytes) -> None:
        """Append `data`, or as much as `max_bytes` leaves room for and the marker (then close)."""
        if self._file is None:
            return
        room = self._max_bytes - self._kept
        cut = len(data) > room
        kept = _char_start(data, room) if cut else len(data)
        chunk = data[:kept] + truncation_marker(self._kept + kept) if cut else data
        try:
            self._file.write(chunk)
        except OSError as exc:
            log.warning("output file %s: %s; keeping the tail only", self.path, exc)
            self._stopped = True
            self._close_file()
            return
        self.file_bytes = (self.file_bytes or 0) + len(chunk)
        self._kept += kept
        if cut:
            log.info("output file %s cut at %d bytes (output_max_bytes)", self.path, self._kept)
            self._close_file()  # complete: `write` never reopens a file that exists

    def tail_text(self) -> str:
        return self._tail.decode("utf-8", errors="replace")

    def so_far(self) -> bytes | None:
        """The whole output so far while it has no file and the tail still holds all of it."""
        whole = self.file_bytes is None and self.total_bytes == len(self._tail)
        return bytes(self._tail) if whole else None

    def keep(self) -> None:
        """Write the output to the file if there is none yet (the whole output is in the tail then)."""
        if self.file_bytes is None:
            self._open_file(bytes(self._tail))
            if self._closed:
                self._close_file()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.path is not None:
            _OPEN.pop(os.fspath(self.path), None)
        if self.file_bytes is None and not tail_is_whole(self.tail_text(), self._limit):
            self._open_file(bytes(self._tail))
        self._close_file()

    def _close_file(self) -> None:
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
