"""Shell tasks: an argv list run directly; a command string only where the node allows a shell.

An argv list needs no shell and so cannot be re-interpreted by one; a string goes to `/bin/sh -c`
only on nodes whose own config says `allow_shell = true` (DESIGN.md §5). argv[0] must resolve
under the node's `command_allow` when it has one; `/bin/sh` for a string needs no such entry: a
shell runs anything, so `allow_shell = false` plus `command_allow` is the fence (`_fences`).
The process runs under a per-run supervisor, as the node's `run_as` user if set, with a scrubbed
environment (see `_process`), and all it starts dies with the run and with the node. Env
values that are secret references are resolved from the node's `ExecPolicy.secrets` at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from ..model import TaskSpec
from ._fences import resolve_program, task_cwd, user_env
from ._process import Launch, StartFailed, child_env, exit_result, run_in_group
from .base import ExecPolicy, ExecResult, OutputSink, Refused, RunContext, failed, resolve_secrets

__all__ = ["SHELL", "ShellExecutor"]

SHELL = "/bin/sh"


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
            env = child_env(
                resolve_secrets(task.env, self._policy.secrets), ctx, **user_env(self._policy.run_as)
            )
            launch = self._launch(task, env)
        except Refused as exc:
            return failed(f"refused: {exc}")
        except StartFailed as exc:
            return failed(str(exc))
        with OutputSink.for_policy(self._policy, output_path) as sink:
            try:
                ended = await run_in_group(launch, env=env, sink=sink, timeout_s=timeout_s, on_group=on_group)
            except StartFailed as exc:
                return failed(str(exc), output_tail=sink.tail_text())
            return exit_result(ended, sink.tail_text(), timeout_s)

    async def close(self) -> None:
        """Nothing to release: every run owns its processes."""

    def _launch(self, task: TaskSpec, env: Mapping[str, str]) -> Launch:
        policy = self._policy
        argv = self._argv(task)
        cwd = task_cwd(task.cwd, policy.run_as)
        allow = () if isinstance(task.command, str) else policy.command_allow  # the shell: see above
        try:
            program = resolve_program(argv[0], path=env.get("PATH", ""), cwd=cwd, allow=allow)
        except OSError as exc:
            raise StartFailed(f"cannot start {argv[0]!r}: {exc}") from exc
        return Launch(
            argv=tuple(argv),
            program=program,
            cwd=cwd,
            user=policy.run_as,
            umask=policy.task_umask(),
            grace_s=policy.kill_grace_s,
        )

    def _argv(self, task: TaskSpec) -> list[str]:
        command = task.command
        if isinstance(command, str):
            if not self._policy.allow_shell:
                raise Refused("a command string needs a shell, and allow_shell is false on this node")
            return [SHELL, "-c", command]
        if not command:
            raise Refused("shell task without a command")
        return list(command)
