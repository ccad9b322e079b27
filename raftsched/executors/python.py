"""Python tasks: `pkg.module:function` under the node's python_allow, in a child process by default.

Where modules come from: the node's own `sys.path` (its interpreter's standard library and
site-packages, and `PYTHONPATH` as the node was started with), then the node's `python_path`
directories (`[node] python_path`; default: the config file's directory, or the working directory
of a node started without a config file). They come last, so a task's module cannot shadow what
the node itself runs on. The entry Python puts first for the way a program starts (the working
directory for `python -m raftsched`, the bin directory for the `raftsched` console script) is
dropped at node start (`prepare_import_path`), so both ways of starting a node import the same
modules; only when raftsched itself was imported from it (an uninstalled checkout run with
`python -m` from its root) is it kept, since the runner must find raftsched.

The runner (`python -P -u -m raftsched.executors._pyrunner`) is the run's supervisor (`_supervisor`)
and forks the process that calls the function, as the node's `run_as` user if set; everything
that process starts is stopped on timeout, on cancellation, once the function returns, and when
the node dies. Its environment is the scrubbed node environment, plus `PYTHONPATH` set to the
node's `sys.path` followed by `python_path` (so the child imports exactly what an `in_process` run
would, in the same order), plus the task's env (secret references resolved from the node's
`ExecPolicy.secrets`), plus the identity variables. A task's env may not set `PYTHON*` variables:
the node, not the job, decides what code python loads. Under `run_as` the function runs in the
user's home (or /), since a python task has no cwd of its own.

`in_process: true` runs the callable in a daemon thread of the node instead: no process start,
but it cannot be killed. On timeout the run is reported timed_out while the thread runs on; it
shares the node's environment (so a task env is refused) and the node's user (so `run_as` refuses
it), and only its return value or traceback is captured (what it prints goes to the node's own
stdout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from ..model import TaskSpec
from ._fences import task_cwd, user_env
from ._process import GroupExit, Launch, StartFailed, child_env, describe_returncode, run_in_group
from ._pycall import NotAllowed, Report, check_allowed, run_target
from .base import (
    ExecPolicy,
    ExecResult,
    OutputSink,
    Refused,
    RunContext,
    failed,
    identity_context,
    resolve_secrets,
    timed_out,
)

__all__ = ["PythonExecutor", "node_pythonpath", "prepare_import_path"]

RUNNER = "raftsched.executors._pyrunner"
# The directory raftsched is imported from (raftsched/executors/python.py, three levels up).
RAFTSCHED_HOME = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PythonExecutor:
    """Runs `python` tasks; see `Executor` for the contract."""

    def __init__(self, policy: ExecPolicy) -> None:
        self._policy = policy

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
            target = self._check(task)
            env = resolve_secrets(task.env, self._policy.secrets)
        except (Refused, NotAllowed) as exc:
            return failed(f"refused: {exc}")
        with OutputSink.for_policy(self._policy, output_path) as sink:
            if task.in_process:
                return await self._run_in_thread(target, task, ctx, timeout_s, sink)
            return await self._run_in_child(target, task, env, ctx, timeout_s, sink, on_group)

    async def close(self) -> None:
        """Nothing to release: every run owns its process (threads of in-process runs are daemons)."""

    def _check(self, task: TaskSpec) -> str:
        if not task.callable:
            raise Refused("python task without a callable")
        check_allowed(task.callable, self._policy.python_allow)
        loader_vars = sorted(key for key in task.env if key.startswith("PYTHON"))
        if loader_vars:
            raise Refused(f"task env may not set {', '.join(loader_vars)}: the node decides how python runs")
        if task.in_process and task.env:
            raise Refused("an in_process task shares the node's environment: env is not supported")
        if task.in_process and self._policy.run_as is not None:
            raise Refused("an in_process task would run as the node's user, and this node has run_as")
        return task.callable

    # ------------------------------------------------------------ child process

    async def _run_in_child(
        self,
        target: str,
        task: TaskSpec,
        env: Mapping[str, str],
        ctx: RunContext,
        timeout_s: float | None,
        sink: OutputSink,
        on_group: Callable[[int], None] | None,
    ) -> ExecResult:
        try:
            payload = self._payload(task, ctx)
        except TypeError as exc:
            return failed(f"kwargs cannot be sent as JSON: {exc}")
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        pythonpath = node_pythonpath(self._policy.python_path)
        child = child_env(env, ctx, PYTHONPATH=pythonpath, **user_env(self._policy.run_as))
        try:
            ended = await run_in_group(
                self._launch(target, write_fd),
                env=child,
                sink=sink,
                timeout_s=timeout_s,
                stdin_data=payload,
                pass_fds=(write_fd,),
                on_group=on_group,
            )
            outcome = None if ended.timed_out else _read_outcome(read_fd)
        except StartFailed as exc:
            return failed(str(exc), output_tail=sink.tail_text())
        finally:
            os.close(read_fd)
            os.close(write_fd)
        return _child_result(ended, outcome, sink.tail_text(), timeout_s)

    def _launch(self, target: str, result_fd: int) -> Launch:
        """The runner supervises the run itself: it takes the supervisor's options."""
        policy = self._policy
        return Launch(
            launcher=(sys.executable, "-P", "-u", "-m", RUNNER),
            argv=(target, str(result_fd)),
            cwd=task_cwd(None, policy.run_as),
            user=policy.run_as,
            umask=policy.task_umask(),
            grace_s=policy.kill_grace_s,
        )

    def _payload(self, task: TaskSpec, ctx: RunContext) -> bytes:
        return orjson.dumps(
            {
                "kwargs": task.kwargs,
                "context": identity_context(ctx),
                "allow": list(self._policy.python_allow),
            }
        )

    # ------------------------------------------------------------ node thread

    async def _run_in_thread(
        self, target: str, task: TaskSpec, ctx: RunContext, timeout_s: float | None, sink: OutputSink
    ) -> ExecResult:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Report] = loop.create_future()
        args = (loop, done, target, dict(task.kwargs), identity_context(ctx), self._policy.python_allow)
        threading.Thread(
            target=_thread_main, args=args, name=f"raftsched-python {ctx.run_id}", daemon=True
        ).start()
        try:
            async with asyncio.timeout(timeout_s):
                report = await done
        except TimeoutError:
            note = " (in_process: the thread cannot be stopped and runs on)"
            return timed_out(timeout_s or 0.0, note=note)
        sink.write(report.text.encode("utf-8", errors="replace"))
        if report.ok:
            return ExecResult(outcome="succeeded", output_tail=sink.tail_text())
        return failed(report.error or "failed", output_tail=sink.tail_text())


def node_pythonpath(python_path: Sequence[str] = ()) -> str:
    """The node's `sys.path`, then `python_path`, as a PYTHONPATH: what the node can import, the
    child can, in that order.

    Entries the interpreter adds by itself come again after these; the first occurrence wins, so
    the child's effective order is the node's. An empty entry (the current directory) is made
    absolute.
    """
    entries = (
        os.path.abspath(entry) if entry else os.getcwd()
        for entry in (*sys.path, *python_path)
        if isinstance(entry, str)
    )
    return os.pathsep.join(dict.fromkeys(entries))


def prepare_import_path(python_path: Sequence[str], argv0: str | None = None) -> None:
    """At node start: drop the entry Python put first on `sys.path` for the way the program was
    started (the same either way after this), then append `python_path` (for `in_process` runs;
    the runner gets the same through `node_pythonpath`).

    The start entry is the working directory for `python -m` and the script's directory for a
    console script; with `-P` or PYTHONSAFEPATH there is none. It stays when raftsched itself was
    imported from it: without it, the runner could not start.
    """
    start = _start_entry(sys.argv[0] if argv0 is None else argv0)
    if start is not None and start != RAFTSCHED_HOME:
        del sys.path[0]
    for entry in python_path:
        if entry not in sys.path:
            sys.path.append(entry)


def _start_entry(argv0: str) -> str | None:
    """sys.path[0] if Python put it there for how the program started, else None."""
    if sys.flags.safe_path or not sys.path or not isinstance(sys.path[0], str):
        return None
    first = os.path.abspath(sys.path[0] or os.getcwd())
    started_from = {os.getcwd(), os.path.dirname(os.path.abspath(argv0))}
    return first if first in started_from else None


def _read_outcome(fd: int) -> dict[str, Any] | None:
    """The runner's outcome, if it wrote one before it ended (non-blocking: it may never have)."""
    try:
        data = os.read(fd, 65536)
        value = orjson.loads(data)
    except (BlockingIOError, orjson.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _child_result(
    ended: GroupExit, outcome: Mapping[str, Any] | None, tail: str, timeout_s: float | None
) -> ExecResult:
    if ended.timed_out:
        return timed_out(timeout_s or 0.0, output_tail=tail)
    code = ended.returncode if ended.returncode is not None and ended.returncode >= 0 else None
    if outcome is None:
        error = f"the python runner ended without an outcome ({describe_returncode(ended.returncode)})"
        return failed(error, exit_code=code, output_tail=tail)
    if outcome.get("ok") is True:
        return ExecResult(outcome="succeeded", exit_code=code, output_tail=tail)
    return failed(str(outcome.get("error") or "failed"), exit_code=code, output_tail=tail)


def _thread_main(
    loop: asyncio.AbstractEventLoop,
    done: asyncio.Future[Report],
    target: str,
    kwargs: dict[str, Any],
    context: dict[str, Any],
    allow: Sequence[str],
) -> None:
    report = run_target(target, kwargs, context, allow)
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for this run any more
        loop.call_soon_threadsafe(_settle, done, report)


def _settle(done: asyncio.Future[Report], report: Report) -> None:
    if not done.done():  # a timed-out or cancelled run has already been reported
        done.set_result(report)
