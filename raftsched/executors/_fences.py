"""The node's fences on process tasks: which programs (`command_allow`), as whom (`run_as`).

`command_allow` is a list of directories. A task's argv[0] is resolved as exec would resolve it on
this node — with a slash, relative to the task's cwd; without, along the `PATH` of the task's own
environment (relative entries relative to the cwd) — then made canonical with `realpath` (so
neither a symlink nor `..` leads out), and must lie under one of the directories, themselves
taken through `realpath`. The process is then started from that canonical path (argv[0] stays as
given), so what runs is what was checked. An empty list allows any program.

A command *string* runs `/bin/sh -c`, which is allowed by `allow_shell = true` alone: /bin/sh
need not be under `command_allow`, and a shell runs anything, so on a node whose tasks must be
fenced the fence is `allow_shell = false` *plus* `command_allow` (without it an argv list runs
any program the node's user can run).

`run_as` names the user tasks run as; `task_user` looks it up once, at node start, and refuses a
node that could not switch to it.
"""

from __future__ import annotations

import errno
import os
import pwd
from collections.abc import Callable, Sequence

from ..errors import ConfigError
from .base import Refused, TaskUser

__all__ = ["can_switch_user", "resolve_program", "task_cwd", "task_user", "user_env"]

_CAP_SETGID, _CAP_SETUID = 6, 7


def resolve_program(program: str, *, path: str, cwd: str | None, allow: Sequence[str] = ()) -> str:
    """The canonical path of the executable `program` names; checked against `allow` if given.

    Raises FileNotFoundError / PermissionError as exec would, Refused when outside `allow`.
    """
    base = cwd if cwd is not None else os.getcwd()
    found = _find(program, path, base)
    if found is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    real = os.path.realpath(found)
    if os.path.isdir(real) or not os.access(real, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), program)
    if allow and not _under_any(real, allow):
        where = ", ".join(allow)
        raise Refused(f"{real} (argv[0] {program!r}) is not under this node's command_allow ({where})")
    return real


def _find(program: str, path: str, base: str) -> str | None:
    if "/" in program:
        candidate = os.path.join(base, program)
        return candidate if os.path.exists(candidate) else None
    for entry in path.split(os.pathsep):
        candidate = os.path.join(base, entry or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _under_any(real: str, allow: Sequence[str]) -> bool:
    for directory in allow:
        root = os.path.realpath(directory)
        if real.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


# ---------------------------------------------------------------- run_as


def can_switch_user() -> bool:
    """Whether this process may change its uid and groups: CAP_SETUID and CAP_SETGID in effect."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            line = next((row for row in f if row.startswith("CapEff:")), None)
    except OSError:
        line = None
    if line is None:
        return os.geteuid() == 0
    caps = int(line.split()[1], 16)
    return all(caps >> bit & 1 for bit in (_CAP_SETUID, _CAP_SETGID))


def task_user(name: str, node_id: str, *, privileged: Callable[[], bool] = can_switch_user) -> TaskUser:
    """Look `run_as` up; ConfigError if the user is unknown or this node cannot switch to it."""
    section = f"node {node_id}"
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(section, "run_as", f"no user {name!r} on this host") from None
    if not privileged():
        raise ConfigError(
            section,
            "run_as",
            f"the node cannot run tasks as {name!r}: it needs to be root or to hold CAP_SETUID "
            "and CAP_SETGID; start it so, or leave run_as empty",
        )
    groups = tuple(sorted(set(os.getgrouplist(name, entry.pw_gid))))
    return TaskUser(name=name, uid=entry.pw_uid, gid=entry.pw_gid, groups=groups, home=entry.pw_dir)


def user_env(user: TaskUser | None) -> dict[str, str]:
    """The variables that say who the task runs as (none without run_as)."""
    if user is None:
        return {}
    return {"HOME": user.home, "USER": user.name, "LOGNAME": user.name}


def task_cwd(cwd: str | None, user: TaskUser | None) -> str | None:
    """Where the task starts: its cwd; under run_as without one, the user's home (or /), never
    the node's own directory."""
    if cwd is not None or user is None:
        return cwd
    return user.home if os.path.isdir(user.home) else "/"
