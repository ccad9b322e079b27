"""Child processes in their own process group: start, stream output, stop the whole group.

A task is its process group (`start_new_session=True`). On timeout or cancellation the group gets
SIGTERM, then SIGKILL after the policy's grace. When the main process exits on its own, whatever it
left running in its group is stopped the same way: no task outlives its run, and nothing keeps the
output pipe open. (A process that leaves the group with setsid escapes the kill; the run stops
reading its output after a short drain.) When the node itself dies, the child dies with it
(parent-death signal, set by an exec wrapper), and the caller may record the group (`on_group`)
so that the node's next life can kill what is left: see `_reaper`.

stdout and stderr share one pipe that the event loop reads into an `OutputSink` as data arrives,
so memory stays bounded whatever the task prints.

The environment is scrubbed: only `SAFE_ENV_KEYS` are taken from the node's environment (secrets
of the node, such as tokens in its environment, must not leak into tasks); the task's `env` comes
on top, and the identity variables on top of that (identity wins).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from ._reaper import pdeathsig_argv
from .base import ExecResult, OutputSink, RunContext, failed, identity_env, timed_out

__all__ = [
    "SAFE_ENV_KEYS",
    "GroupExit",
    "StartFailed",
    "child_env",
    "describe_returncode",
    "exit_result",
    "group_alive",
    "run_in_group",
    "scrubbed_env",
    "stop_group",
]

SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DRAIN_S = 0.5  # how long output may still arrive once the group is gone
_POLL_S = 0.02


class StartFailed(Exception):
    """The process could not be started (no such program, bad cwd, ...)."""


@dataclass(frozen=True, slots=True)
class GroupExit:
    returncode: int | None  # None when timed out; negative: killed by that signal
    timed_out: bool


def scrubbed_env() -> dict[str, str]:
    """The few node variables a task may see; PATH always exists."""
    env = {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", os.defpath)
    return env


def child_env(task_env: Mapping[str, str], ctx: RunContext, **node: str) -> dict[str, str]:
    """Scrubbed node env, then `node` extras, then the task's env, then identity (which wins)."""
    return {**scrubbed_env(), **node, **task_env, **identity_env(ctx)}


async def run_in_group(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    sink: OutputSink,
    timeout_s: float | None,
    grace_s: float,
    stdin_data: bytes | None = None,
    pass_fds: Collection[int] = (),
    on_group: Callable[[int], None] | None = None,
    die_with_parent: bool = True,
) -> GroupExit:
    """Run `argv` in a new session, output into `sink`; raise StartFailed if it cannot start.

    `on_group(pgid)` is called as soon as the group exists; when this returns or raises, the
    group has been stopped. `die_with_parent=False` is for a child that sets its own
    parent-death signal (the python runner). On cancellation the group is stopped and
    CancelledError propagates.
    """
    read_fd, write_fd = os.pipe()
    try:
        transport, eof = await _attach(read_fd, sink)
    except BaseException:
        os.close(write_fd)
        raise
    try:
        try:
            proc = await _spawn(argv, env, cwd, write_fd, stdin_data, pass_fds, die_with_parent)
        finally:
            os.close(write_fd)
        return await _supervise(proc, eof, timeout_s=timeout_s, grace_s=grace_s, on_group=on_group)
    finally:
        transport.close()


class _SinkProtocol(asyncio.Protocol):
    """Writes what arrives on the output pipe straight into the sink; `eof` resolves at EOF."""

    def __init__(self, sink: OutputSink, eof: asyncio.Future[None]) -> None:
        self._sink = sink
        self._eof = eof

    def data_received(self, data: bytes) -> None:
        self._sink.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._eof.done():
            self._eof.set_result(None)


async def _attach(read_fd: int, sink: OutputSink) -> tuple[asyncio.ReadTransport, asyncio.Future[None]]:
    loop = asyncio.get_running_loop()
    eof: asyncio.Future[None] = loop.create_future()
    pipe = os.fdopen(read_fd, "rb", buffering=0)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: _SinkProtocol(sink, eof), pipe)
    except BaseException:
        pipe.close()
        raise
    return transport, eof


async def _spawn(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: str | None,
    out_fd: int,
    stdin_data: bytes | None,
    pass_fds: Collection[int],
    die_with_parent: bool,
) -> asyncio.subprocess.Process:
    try:
        command = pdeathsig_argv(argv, env, cwd) if die_with_parent else list(argv)
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=out_fd,
            stderr=out_fd,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except OSError as exc:
        raise StartFailed(f"cannot start {argv[0]!r}: {exc}") from exc
    if proc.stdin is not None and stdin_data is not None:
        # Buffered by the transport and flushed by the loop; close() sends EOF once it is written.
        proc.stdin.write(stdin_data)
        proc.stdin.close()
    return proc


async def _supervise(
    proc: asyncio.subprocess.Process,
    eof: asyncio.Future[None],
    *,
    timeout_s: float | None,
    grace_s: float,
    on_group: Callable[[int], None] | None,
) -> GroupExit:
    try:
        if on_group is not None:
            on_group(proc.pid)
        expired = await _wait_leader(proc, timeout_s)
        await stop_group(proc, grace_s)  # all of it after a timeout; leftovers after an exit
        await asyncio.wait([eof], timeout=DRAIN_S)
    except BaseException:
        await stop_group(proc, grace_s)
        raise
    return GroupExit(returncode=None if expired else proc.returncode, timed_out=expired)


async def _wait_leader(proc: asyncio.subprocess.Process, timeout_s: float | None) -> bool:
    """Wait for the main process; True if `timeout_s` ran out first."""
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        return True
    return False


async def stop_group(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """TERM the group, give it `grace_s` to go, KILL what is left, reap the leader.

    The KILL is sent even if this coroutine is cancelled while it waits.
    """
    pgid = proc.pid
    if proc.returncode is not None and not group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    try:
        await _wait_group_gone(proc, grace_s)
    finally:
        if proc.returncode is None or group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


async def _wait_group_gone(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace_s)
    for _ in range(int(grace_s / _POLL_S) + 1):
        if loop.time() >= deadline or not group_alive(proc.pid):
            return
        await asyncio.sleep(_POLL_S)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether a live process is left in the group.

    Zombies do not count: where PID 1 does not reap orphans (some containers) they linger, hold
    nothing, and must not make a run wait out its grace.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        names = os.listdir("/proc")
    except OSError:
        return True  # no procfs: trust killpg
    return any(_live_member(name, pgid) for name in names if name.isdigit())


def _live_member(pid: str, pgid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, pgrp, ...
    return len(fields) > 2 and fields[0] not in (b"Z", b"X") and int(fields[2]) == pgid


def describe_returncode(returncode: int | None) -> str:
    if returncode is None:
        return "exit status unknown"
    if returncode < 0:
        return f"killed by signal {-returncode} ({_signal_name(-returncode)})"
    return f"exit status {returncode}"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return "unknown"


def exit_result(ended: GroupExit, tail: str, timeout_s: float | None) -> ExecResult:
    """Map a process group's end onto a result: 0 succeeded, anything else failed."""
    if ended.timed_out:
        return timed_out(timeout_s or 0.0, output_tail=tail)
    code = ended.returncode
    if code == 0:
        return ExecResult(outcome="succeeded", exit_code=0, output_tail=tail)
    exit_code = code if code is not None and code >= 0 else None
    return failed(describe_returncode(code), exit_code=exit_code, output_tail=tail)
