"""Shell tasks: an argv list run directly; a command string only where the node allows a shell.

An argv list needs no shell and so cannot be re-interpreted by one; a string goes to `/bin/sh -c`
only on nodes whose own config says `allow_shell = true` (DESIGN.md §5). The process runs in its
own process group with a scrubbed environment (see `_process`), and dies with the node (`_reaper`).
Env values that are secret references are resolved from the node's `ExecPolicy.secrets` at start.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..model import TaskSpec
from ._process import StartFailed, child_env, exit_result, run_in_group
from .base import ExecPolicy, ExecResult, OutputSink, Refused, RunContext, failed, resolve_secrets

__all__ = ["ShellExecutor"]


class ShellExecutor:
    """Runs `shell` tasks; see `Executor` for the contract."""

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
            argv = self._argv(task)
            env = child_env(resolve_secrets(task.env, self._policy.secrets), ctx)
        except Refused as exc:
            return failed(f"refused: {exc}")
        with OutputSink.for_policy(self._policy, output_path) as sink:
            try:
                ended = await run_in_group(
                    argv,
                    env=env,
                    cwd=task.cwd,
                    sink=sink,
                    timeout_s=timeout_s,
                    grace_s=self._policy.kill_grace_s,
                    on_group=on_group,
                )
            except StartFailed as exc:
                return failed(str(exc), output_tail=sink.tail_text())
            return exit_result(ended, sink.tail_text(), timeout_s)

    async def close(self) -> None:
        """Nothing to release: every run owns its processes."""

    def _argv(self, task: TaskSpec) -> list[str]:
        command = task.command
        if isinstance(command, str):
            if not self._policy.allow_shell:
                raise Refused("a command string needs a shell, and allow_shell is false on this node")
            return ["/bin/sh", "-c", command]
        if not command:
            raise Refused("shell task without a command")
        return list(command)
