"""Task processes under a per-run supervisor: start, stream output, stop every descendant.

Every process task starts as a supervisor (`_supervisor`: a small stdlib script for shell tasks;
the python runner is one itself) in a session and process group of its own; the supervisor forks
the task, is the subreaper of everything the task starts, and stops all of it — `setsid` and
double-forked processes included — when the main process exits (leftovers: SIGTERM, the policy's
grace, SIGKILL), when the node asks (SIGTERM to the supervisor alone, on timeout or cancellation:
the same), and when the node dies, even by SIGKILL (its parent-death signal: SIGKILL at once).

The node signals the supervisor, not the group: a group SIGKILL would kill the supervisor before
it could find the processes that left the group. The group SIGKILL, plus a SIGKILL to every
process then under the supervisor, is the backstop when the supervisor has not exited `grace +
SUPERVISOR_MARGIN_S` after the SIGTERM (or when the stop itself is cancelled). The caller may
record the group (`on_group`), so that the node's next life can kill what is left: see `_reaper`.

The supervisor reports on a status pipe of its own: `exited` when the main process ended before
any stop request (a timeout that struck while leftovers were being stopped is then no timeout),
`error <message>` when the task could not start (StartFailed).

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
import sys
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from . import _supervisor
from .base import ExecResult, OutputSink, RunContext, TaskUser, failed, identity_env, timed_out

__all__ = [
    "SAFE_ENV_KEYS",
    "SUPERVISOR",
    "GroupExit",
    "Launch",
    "StartFailed",
    "child_env",
    "describe_returncode",
    "exit_result",
    "group_alive",
    "run_in_group",
    "scrubbed_env",
]

SAFE_ENV_KEYS = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
DRAIN_S = 0.5  # how long output may still arrive once the group is gone
SUPERVISOR_MARGIN_S = 1.0  # beyond the grace, for the supervisor's own SIGKILL round and exit
SUPERVISOR = (sys.executable, "-I", "-S", _supervisor.__file__)
_STATUS_MAX = 4096
_POLL_S = 0.02


class StartFailed(Exception):
    """The process could not be started (no such program, bad cwd, ...)."""


@dataclass(frozen=True, slots=True)
class GroupExit:
    returncode: int | None  # the main process's (the supervisor mirrors it); negative: by that signal
    timed_out: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Launch:
    """One task's start: `launcher` (a supervisor) is run with the options `_supervisor` defines,
    then `--`, then `argv` (the program's argv; for the python runner, its own arguments)."""

    launcher: tuple[str, ...] = SUPERVISOR
    argv: tuple[str, ...]
    program: str | None = None  # the executable the node resolved and checked, for argv
    cwd: str | None = None
    user: TaskUser | None = None
    umask: int | None = None
    grace_s: float

    def command(self, status_fd: int) -> list[str]:
        user = self.user
        options = _supervisor.options_argv(
            node_pid=os.getpid(),
            grace_s=self.grace_s,
            umask=self.umask,
            status_fd=status_fd,
            cwd=self.cwd,
            program=self.program,
            user=None if user is None else (user.name, user.uid, user.gid, user.groups),
        )
        return [*self.launcher, *options, *self.argv]


def scrubbed_env() -> dict[str, str]:
    """The few node variables a task may see; PATH always exists."""
    env = {key: os.environ[key] for key in SAFE_ENV_KEYS if key in os.environ}
    env.setdefault("PATH", os.defpath)
    return env


def child_env(task_env: Mapping[str, str], ctx: RunContext, **node: str) -> dict[str, str]:
    """Scrubbed node env, then `node` extras, then the task's env, then identity (which wins)."""
    return {**scrubbed_env(), **node, **task_env, **identity_env(ctx)}


async def run_in_group(
    launch: Launch,
    *,
    env: Mapping[str, str],
    sink: OutputSink,
    timeout_s: float | None,
    stdin_data: bytes | None = None,
    pass_fds: Collection[int] = (),
    on_group: Callable[[int], None] | None = None,
) -> GroupExit:
    """Run `launch` in a new session, output into `sink`; raise StartFailed if it cannot start.

    `on_group(pgid)` is called as soon as the group exists; when this returns or raises, every
    process of the run has been stopped. On cancellation they are stopped and CancelledError
    propagates.
    """
    status_r, status_w = os.pipe()
    os.set_blocking(status_r, False)
    try:
        ended = await _run(launch, env, sink, timeout_s, stdin_data, pass_fds, on_group, status_w)
        return _with_status(ended, _read_status(status_r))
    finally:
        os.close(status_r)


async def _run(
    launch: Launch,
    env: Mapping[str, str],
    sink: OutputSink,
    timeout_s: float | None,
    stdin_data: bytes | None,
    pass_fds: Collection[int],
    on_group: Callable[[int], None] | None,
    status_w: int,
) -> GroupExit:
    """Owns `status_w` (closed once the supervisor has it) and the output pipe."""
    read_fd, write_fd = os.pipe()
    try:
        transport, eof = await _attach(read_fd, sink)
    except BaseException:
        os.close(write_fd)
        os.close(status_w)
        raise
    try:
        try:
            proc = await _spawn(launch, env, write_fd, status_w, stdin_data, pass_fds)
        finally:
            os.close(write_fd)
            os.close(status_w)
        return await _supervise(proc, eof, timeout_s=timeout_s, grace_s=launch.grace_s, on_group=on_group)
    finally:
        transport.close()


def _read_status(fd: int) -> list[str]:
    """The supervisor's lines; it has exited, so all it wrote is in the pipe (never blocks)."""
    try:
        data = os.read(fd, _STATUS_MAX)
    except BlockingIOError:
        return []
    return data.decode(errors="replace").splitlines()


def _with_status(ended: GroupExit, lines: list[str]) -> GroupExit:
    errors = [line.removeprefix("error ") for line in lines if line.startswith("error ")]
    if errors:
        raise StartFailed(errors[0])
    if ended.timed_out and "exited" in lines:  # the main process ended in time; its leftovers did not
        return GroupExit(returncode=ended.returncode, timed_out=False)
    return ended


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
    launch: Launch,
    env: Mapping[str, str],
    out_fd: int,
    status_fd: int,
    stdin_data: bytes | None,
    pass_fds: Collection[int],
) -> asyncio.subprocess.Process:
    try:
        proc = await asyncio.create_subprocess_exec(
            *launch.command(status_fd),
            stdin=asyncio.subprocess.PIPE if stdin_data is not None else asyncio.subprocess.DEVNULL,
            stdout=out_fd,
            stderr=out_fd,
            env=dict(env),
            cwd=launch.cwd,
            start_new_session=True,
            pass_fds=(*pass_fds, status_fd),
        )
    except OSError as exc:
        raise StartFailed(f"cannot start {launch.argv[0]!r}: {exc}") from exc
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
        expired = await _wait_supervisor(proc, timeout_s)
        await stop_supervisor(proc, grace_s)  # the whole tree after a timeout; a backstop after an exit
        await asyncio.wait([eof], timeout=DRAIN_S)
    except BaseException:
        await stop_supervisor(proc, grace_s)
        raise
    return GroupExit(returncode=proc.returncode, timed_out=expired)


async def _wait_supervisor(proc: asyncio.subprocess.Process, timeout_s: float | None) -> bool:
    """Wait for the supervisor (it exits once the whole tree is gone); True if `timeout_s` ran out."""
    try:
        async with asyncio.timeout(timeout_s):
            await proc.wait()
    except TimeoutError:
        return True
    return False


async def stop_supervisor(proc: asyncio.subprocess.Process, grace_s: float) -> None:
    """SIGTERM the supervisor (it stops the tree: TERM, `grace_s`, KILL) and wait for it; past
    `grace_s + SUPERVISOR_MARGIN_S`, or if cancelled while waiting, SIGKILL everything.

    After the supervisor has exited, a group with a live member left (the supervisor itself was
    killed) is stopped as a group, TERM then KILL.
    """
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s + SUPERVISOR_MARGIN_S):
                await asyncio.shield(proc.wait())
        except TimeoutError:
            pass
        finally:
            if proc.returncode is None:
                _kill_everything(proc.pid)
        await proc.wait()
    await _stop_group_left(proc.pid, grace_s)


def _kill_everything(supervisor: int) -> None:
    """The backstop: SIGKILL the group and every process under the supervisor (it is stuck)."""
    under = _supervisor.descendants(supervisor)
    _signal_group(supervisor, signal.SIGKILL)
    _supervisor.signal_all(under, signal.SIGKILL)


async def _stop_group_left(pgid: int, grace_s: float) -> None:
    if not group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    try:
        for _ in range(int(grace_s / _POLL_S)):
            await asyncio.sleep(_POLL_S)
            if not group_alive(pgid):
                return
    finally:
        if group_alive(pgid):
            _signal_group(pgid, signal.SIGKILL)


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
