"""The per-run supervisor and the node's fences on process tasks: command_allow, run_as, umask.

Every process a test starts records its pid in a file; whatever is still alive at the end of a
test is killed by that pid.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftsched.errors import ConfigError
from raftsched.executors import ExecPolicy, PythonExecutor, RunContext, ShellExecutor, task_umask
from raftsched.executors._fences import resolve_program, task_user
from raftsched.executors.base import Refused
from raftsched.model import TaskSpec, TaskType

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

CTX = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=0, node_id="n1")
ROOT = os.geteuid() == 0

# Three processes that each leave the task's process group or its parentage: one in a session of
# its own (setsid), one orphaned by a double fork, one in a new group; each writes its pid first.
ESCAPEES = (
    "setsid sh -c 'echo $$ > p1; exec sleep 302' & "
    "( sh -c 'echo $$ > p2; exec sleep 303' & ) ; "
    "( setsid sh -c 'setsid sh -c \"echo \\$\\$ > p3; exec sleep 305\" &' ) ; "
)
PIDFILES = ("p1", "p2", "p3")


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_pids(where: Path, names: tuple[str, ...] = PIDFILES, within_s: float = 10) -> list[int]:
    deadline = time.monotonic() + within_s
    while True:
        texts = [(where / n).read_text().strip() if (where / n).exists() else "" for n in names]
        if all(t.isdigit() for t in texts):
            return [int(t) for t in texts]
        assert time.monotonic() < deadline, f"pid files never all written: {texts}"
        time.sleep(0.02)


def wait_all_dead(pids: list[int], within_s: float = 3.0) -> list[int]:
    """The pids still alive after `within_s`."""
    deadline = time.monotonic() + within_s
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    return [p for p in pids if alive(p)]


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[Path]:
    """A working directory whose pid files name the processes to kill at teardown."""
    yield tmp_path
    for name in (*PIDFILES, "p0"):
        text = (tmp_path / name).read_text().strip() if (tmp_path / name).exists() else ""
        if text.isdigit() and alive(int(text)):
            os.kill(int(text), signal.SIGKILL)


def shell_task(script: str, cwd: Path) -> TaskSpec:
    return TaskSpec(type=TaskType.SHELL, command=["sh", "-c", script], cwd=str(cwd))


# ---------------------------------------------------------------- every descendant dies


async def test_escaped_descendants_die_on_timeout(leftovers: Path) -> None:
    executor = ShellExecutor(ExecPolicy(kill_grace_s=0.5))
    task = shell_task(ESCAPEES + "echo $$ > p0; sleep 304", leftovers)
    result = await executor.run(task, CTX, timeout_s=1.5, output_path=None)
    assert result.outcome == "timed_out", result
    assert wait_all_dead(wait_pids(leftovers, (*PIDFILES, "p0")), within_s=0.5) == []


async def test_escaped_descendants_die_on_cancel(leftovers: Path) -> None:
    executor = ShellExecutor(ExecPolicy(kill_grace_s=0.5))
    task = shell_task(ESCAPEES + "sleep 304", leftovers)
    run = asyncio.create_task(executor.run(task, CTX, timeout_s=60, output_path=None))
    pids = await asyncio.to_thread(wait_pids, leftovers)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert wait_all_dead(pids, within_s=0.5) == []


async def test_escaped_descendants_die_when_the_main_process_exits(leftovers: Path) -> None:
    executor = ShellExecutor(ExecPolicy(kill_grace_s=0.5))
    task = shell_task(ESCAPEES + "while [ ! -s p3 ]; do sleep 0.01; done; echo done", leftovers)
    started = time.monotonic()
    result = await executor.run(task, CTX, timeout_s=30, output_path=None)
    assert (result.outcome, result.output_tail) == ("succeeded", "done\n"), result
    assert time.monotonic() - started < 5
    assert wait_all_dead(wait_pids(leftovers), within_s=0.5) == []


async def test_leftovers_that_ignore_sigterm_get_sigkill_and_no_timeout(leftovers: Path) -> None:
    """The main process ended in time: stopping what it left is no reason to call it timed out."""
    executor = ShellExecutor(ExecPolicy(kill_grace_s=1.0))
    script = "setsid sh -c 'trap \"\" TERM; echo $$ > p1; while :; do sleep 0.05; done' & sleep 0.3; exit 3"
    result = await executor.run(shell_task(script, leftovers), CTX, timeout_s=0.8, output_path=None)
    assert (result.outcome, result.exit_code) == ("failed", 3), result
    assert wait_all_dead(wait_pids(leftovers, ("p1",)), within_s=0.5) == []


async def test_python_task_descendants_die_on_timeout(leftovers: Path) -> None:
    executor = PythonExecutor(ExecPolicy(python_allow=("pytasks_sample",), kill_grace_s=0.5))
    task = TaskSpec(
        type=TaskType.PYTHON,
        callable="pytasks_sample:escape_and_sleep",
        kwargs={"workdir": str(leftovers)},
    )
    result = await executor.run(task, CTX, timeout_s=1.5, output_path=None)
    assert result.outcome == "timed_out", result
    assert wait_all_dead(wait_pids(leftovers, ("p0", "p1")), within_s=0.5) == []


# A stand-in node: runs one shell task through a real executor, then waits to be killed.
_NODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from raftsched.executors import ExecPolicy, RunContext, ShellExecutor
    from raftsched.model import TaskSpec, TaskType

    ctx = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=0, node_id="n1")
    task = TaskSpec(type=TaskType.SHELL, command=["sh", "-c", sys.argv[1]], cwd=sys.argv[2])
    asyncio.run(ShellExecutor(ExecPolicy()).run(task, ctx, timeout_s=120, output_path=None))
    """
)


def test_escaped_descendants_die_when_the_node_is_killed(leftovers: Path) -> None:
    script = ESCAPEES + "echo $$ > p0; exec sleep 304"
    node = subprocess.Popen(
        [sys.executable, "-c", _NODE_SCRIPT, script, str(leftovers)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        pids = wait_pids(leftovers, (*PIDFILES, "p0"))
        assert all(alive(p) for p in pids)
        node.kill()
        node.wait(5)
        assert wait_all_dead(pids, within_s=2.0) == []
    finally:
        if node.poll() is None:
            node.kill()
            node.wait(5)


# ---------------------------------------------------------------- exit status and start errors


async def test_the_run_ends_as_its_main_process(tmp_path: Path) -> None:
    executor = ShellExecutor(ExecPolicy())
    for script, error in (("kill -TERM $$", "killed by signal 15 (SIGTERM)"), ("exit 7", "exit status 7")):
        result = await executor.run(shell_task(script, tmp_path), CTX, timeout_s=10, output_path=None)
        assert result.outcome == "failed" and result.error == error, result
    # SIGPIPE is the default again in the task (python, which the supervisor is, ignores it).
    result = await executor.run(shell_task("yes | head -1", tmp_path), CTX, timeout_s=10, output_path=None)
    assert (result.outcome, result.output_tail) == ("succeeded", "y\n"), result


async def test_umask_is_the_policy_s_or_the_one_the_node_started_with(tmp_path: Path) -> None:
    task = TaskSpec(type=TaskType.SHELL, command=["sh", "-c", "umask"])
    result = await ShellExecutor(ExecPolicy(umask=0o027)).run(task, CTX, timeout_s=10, output_path=None)
    assert result.output_tail.strip() == "0027", result
    result = await ShellExecutor(ExecPolicy()).run(task, CTX, timeout_s=10, output_path=None)
    assert int(result.output_tail.strip(), 8) == task_umask(), result
    previous = os.umask(0o077)  # the node tightens its own umask later: tasks keep the first one
    try:
        result = await ShellExecutor(ExecPolicy()).run(task, CTX, timeout_s=10, output_path=None)
    finally:
        os.umask(previous)
    assert int(result.output_tail.strip(), 8) == task_umask() != 0o077, result


# ---------------------------------------------------------------- command_allow


@pytest.fixture
def programs(tmp_path: Path) -> Path:
    """allowed/tool (executable), elsewhere/evil, allowed/link -> ../elsewhere/evil."""
    for name, body in (
        ("allowed/tool", "#!/bin/sh\necho tool\n"),
        ("elsewhere/evil", "#!/bin/sh\necho evil\n"),
    ):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(body)
        path.chmod(0o755)
    (tmp_path / "allowed" / "link").symlink_to("../elsewhere/evil")
    (tmp_path / "allowed" / "data").write_text("")
    return tmp_path


def test_command_allow_resolves_by_path_then_realpath(programs: Path) -> None:
    allow = (str(programs / "allowed"),)
    path = f"{programs / 'elsewhere'}:{programs / 'allowed'}"
    assert resolve_program("tool", path=path, cwd=None, allow=allow) == str(programs / "allowed" / "tool")
    with pytest.raises(Refused, match="command_allow"):  # the first match along PATH is the one
        resolve_program("evil", path=path, cwd=None, allow=allow)
    with pytest.raises(Refused, match=r"elsewhere/evil .*command_allow"):  # a symlink out
        resolve_program("link", path=str(programs / "allowed"), cwd=None, allow=allow)
    with pytest.raises(Refused, match="command_allow"):  # `..` out
        resolve_program(f"{programs}/allowed/../elsewhere/evil", path="", cwd=None, allow=allow)
    with pytest.raises(Refused, match="command_allow"):  # a directory named like an allowed one
        resolve_program("evil", path=str(programs / "elsewhere"), cwd=None, allow=(str(programs / "else"),))
    with pytest.raises(FileNotFoundError):
        resolve_program("nope", path=path, cwd=None, allow=allow)
    with pytest.raises(PermissionError):
        resolve_program(str(programs / "allowed" / "data"), path="", cwd=None, allow=allow)


def test_command_allow_relative_argv0_is_relative_to_the_cwd(programs: Path) -> None:
    allow = (str(programs / "allowed"),)
    assert resolve_program("./tool", path="", cwd=str(programs / "allowed"), allow=allow).endswith("/tool")
    with pytest.raises(Refused):
        resolve_program("../elsewhere/evil", path="", cwd=str(programs / "allowed"), allow=allow)
    # A relative PATH entry is relative to the task's cwd too, not to the node's.
    found = resolve_program("tool", path="allowed", cwd=str(programs), allow=allow)
    assert found == str(programs / "allowed" / "tool")
    assert resolve_program("evil", path="elsewhere", cwd=str(programs)).endswith("/elsewhere/evil")


async def test_command_allow_refuses_at_run_time_and_runs_the_checked_path(programs: Path) -> None:
    policy = ExecPolicy(command_allow=(str(programs / "allowed"),))
    executor = ShellExecutor(policy)
    env = {"PATH": f"{programs / 'allowed'}:/usr/bin:/bin"}
    ok = await executor.run(
        TaskSpec(type=TaskType.SHELL, command=["tool"], env=env), CTX, timeout_s=10, output_path=None
    )
    assert (ok.outcome, ok.output_tail) == ("succeeded", "tool\n"), ok
    for argv in (["link"], ["sh", "-c", "echo escaped"], [str(programs / "elsewhere" / "evil")]):
        task = TaskSpec(type=TaskType.SHELL, command=argv, env=env)
        result = await executor.run(task, CTX, timeout_s=10, output_path=None)
        assert result.outcome == "failed" and result.error is not None, result
        assert result.error.startswith("refused: ") and "command_allow" in result.error, result


async def test_a_shell_string_is_governed_by_allow_shell_not_command_allow(programs: Path) -> None:
    task = TaskSpec(type=TaskType.SHELL, command="echo via sh")
    fenced = ExecPolicy(command_allow=(str(programs / "allowed"),))
    refused = await ShellExecutor(fenced).run(task, CTX, timeout_s=10, output_path=None)
    assert refused.error is not None and "allow_shell is false" in refused.error
    shell_ok = ExecPolicy(allow_shell=True, command_allow=(str(programs / "allowed"),))
    result = await ShellExecutor(shell_ok).run(task, CTX, timeout_s=10, output_path=None)
    assert (result.outcome, result.output_tail) == ("succeeded", "via sh\n"), result


# ---------------------------------------------------------------- run_as


def test_run_as_is_refused_without_the_privilege_to_switch() -> None:
    with pytest.raises(ConfigError) as info:
        task_user("nobody", "n1", privileged=lambda: False)
    assert (info.value.section, info.value.key) == ("node n1", "run_as")
    assert "CAP_SETUID" in str(info.value)
    with pytest.raises(ConfigError) as info:
        task_user("no-such-user-here", "n1", privileged=lambda: True)
    assert info.value.key == "run_as" and "no user" in str(info.value)


def test_node_start_refuses_an_unusable_run_as(tmp_path: Path) -> None:
    from raftsched.config import ClusterConfig, NodeConfig
    from raftsched.node import exec_policy

    node = NodeConfig(id="n1", raft_host="127.0.0.1", raft_port=1, http_host="127.0.0.1", http_port=2)
    cluster = ClusterConfig(name="t", secret="x" * 32, data_dir=tmp_path, members=("n1",), nodes={"n1": node})
    assert exec_policy(cluster, node, {}).run_as is None
    with pytest.raises(ConfigError, match="run_as"):
        exec_policy(cluster, dataclasses.replace(node, run_as="no-such-user-here"), {})


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory every user may enter (pytest's own tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix="raftsched-run-as-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
async def test_run_as_switches_user_groups_and_home(public_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    secret = public_dir / "secret"
    secret.write_text("cluster secret\n")
    secret.chmod(0o600)
    policy = ExecPolicy(run_as=task_user("nobody", "n1"))
    script = f'echo "$(id -u) $(id -g) $HOME $USER"; cat {secret} || echo unreadable'
    task = TaskSpec(type=TaskType.SHELL, command=["sh", "-c", script], cwd=str(public_dir))
    result = await ShellExecutor(policy).run(task, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "succeeded", result
    first, *rest = result.output_tail.splitlines()
    assert first == f"{nobody.pw_uid} {nobody.pw_gid} {nobody.pw_dir} nobody"
    assert "cluster secret" not in result.output_tail and rest[-1] == "unreadable", result


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
async def test_run_as_cwd_must_be_accessible_to_the_user(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    policy = ExecPolicy(run_as=task_user("nobody", "n1"))
    task = TaskSpec(type=TaskType.SHELL, command=["true"], cwd=str(private))
    result = await ShellExecutor(policy).run(task, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "failed" and result.error is not None, result
    assert f"cwd {str(private)!r} is not accessible to user nobody" in result.error, result


@pytest.mark.skipif(not ROOT, reason="switching users needs root")
async def test_run_as_python_task(tmp_path: Path) -> None:
    policy = ExecPolicy(python_allow=("pytasks_sample",), run_as=task_user("nobody", "n1"))
    task = TaskSpec(type=TaskType.PYTHON, callable="pytasks_sample:whoami")
    result = await PythonExecutor(policy).run(task, CTX, timeout_s=30, output_path=None)
    assert result.outcome == "succeeded", result
    assert f'"uid":{pwd.getpwnam("nobody").pw_uid}' in result.output_tail, result
    in_node = TaskSpec(type=TaskType.PYTHON, callable="pytasks_sample:whoami", in_process=True)
    refused = await PythonExecutor(policy).run(in_node, CTX, timeout_s=30, output_path=None)
    assert refused.error is not None and "run_as" in refused.error
