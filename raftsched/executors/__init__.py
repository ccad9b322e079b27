"""Executors: shell, http, python and message tasks behind one `Executor` protocol, fenced by node policy.

    executor = executor_for(TaskType.SHELL, ExecPolicy(allow_shell=False))
    result = await executor.run(task, ctx, timeout_s=60, output_path=path)
    await executor.close()

`HttpExecutor` (and aiohttp with it) is imported on first use only: python tasks start a child
that imports this package, and must not pay for aiohttp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..model import TaskType
from ._fences import task_user
from ._reaper import GroupLedger
from .base import (
    ExecPolicy,
    ExecResult,
    Executor,
    Outcome,
    OutputSink,
    RunContext,
    identity_context,
    identity_env,
    identity_headers,
    task_umask,
)
from .python import PythonExecutor
from .shell import ShellExecutor

if TYPE_CHECKING:
    from .http import HttpExecutor

__all__ = [
    "ExecPolicy",
    "ExecResult",
    "Executor",
    "GroupLedger",
    "HttpExecutor",
    "Outcome",
    "OutputSink",
    "PythonExecutor",
    "RunContext",
    "ShellExecutor",
    "executor_for",
    "identity_context",
    "identity_env",
    "identity_headers",
    "task_umask",
    "task_user",
]


def executor_for(task_type: TaskType | str, policy: ExecPolicy) -> Executor:
    """A new executor for `task_type`; the caller owns it and closes it."""
    kind = TaskType(task_type)
    if kind is TaskType.SHELL:
        return ShellExecutor(policy)
    if kind is TaskType.PYTHON:
        return PythonExecutor(policy)
    if kind is TaskType.MESSAGE:
        from .message import MessageExecutor

        return MessageExecutor(policy)
    from .http import HttpExecutor

    return HttpExecutor(policy)


def __getattr__(name: str) -> object:
    if name == "HttpExecutor":
        from .http import HttpExecutor

        return HttpExecutor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
