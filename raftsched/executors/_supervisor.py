"""The per-run supervisor: every process a task starts dies with its run, and with the node.

    python -I -S _supervisor.py --node-pid PID --grace S [--umask OCTAL] [--status-fd FD]
        [--cwd DIR] [--user NAME --uid UID --gid GID --groups G1,G2] [--program PATH] -- ARGV...

The node starts this script, in a session of its own, for every shell task; the python runner
(`_pyrunner`) runs the same code (`run`) before it forks the callable's process. It:

1. blocks the signals it waits for, becomes a *child subreaper* (`prctl(PR_SET_CHILD_SUBREAPER)`)
   so that every descendant orphaned by its parent's exit — `setsid`, double fork and all — is
   reparented to it rather than to init, and asks for `NODE_DIED` (SIGHUP) when the node dies
   (`PR_SET_PDEATHSIG`), then checks that the node is still its parent (it may have died first);
2. forks the task's process, which switches to the task's user (groups, gid, uid: in that order),
   sets its own parent-death signal (SIGKILL) *after* the switch (a credential change clears it),
   sets the umask, enters the cwd and execs ARGV[0] at `--program` (or runs the python callable).
   A failure before the exec is reported on `--status-fd` (`error <message>`), exit status 127;
3. waits. When the main process exits, it stops the rest of the tree (SIGTERM, `--grace`,
   SIGKILL) and exits with the main process's status — re-raising the signal that killed it,
   core dumps off, so the node sees the same returncode as if it had started the task itself.
   `exited` on `--status-fd` tells the node that the main process ended before any stop request.
   On SIGTERM (the node's timeout or cancellation) it stops the whole tree the same way and
   exits; on `NODE_DIED` it SIGKILLs the whole tree at once and exits.

The tree is found by walking /proc (every process's ppid) from the supervisor down; the walk is
repeated until no live descendant is left, since a process may fork between a walk and its kill
(its children then reparent to the supervisor and show up in the next walk). When the supervisor
has no child at all (`waitpid` says ECHILD), it has no descendant either — every descendant's
chain of parents ends at one of its children — so a task that leaves nothing behind costs no walk.

Why a process tree and not a cgroup: the subreaper makes the tree complete (nothing leaves it
but by killing the supervisor, which a task can do only as the node's own user, i.e. without
`run_as`), it needs no privilege and works on every Linux since 3.4. A cgroup v2 would also
hold processes the tree cannot (none, short of that kill), but needs a delegated, writable
cgroup v2 hierarchy: hosts with the v1 or hybrid layout (this project's CI among them) have
none, systemd owns it on most others, and the tree would still be needed there. So the process
tree is the one method, everywhere.

This file is a standalone script: it imports the standard library only, and little of it: every
shell task pays for its start-up, so no dataclasses, typing, argparse, contextlib or enum (measured
40 ms of imports together; the interpreter itself starts in ~11 ms, ctypes adds ~3 ms).
Its options are built by `options_argv` and parsed by `parse_options`, both here, so the
vocabulary lives in one place.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal
    from collections.abc import Callable, Iterable, Sequence
    from typing import NoReturn
else:
    import _signal as signal  # `signal` without its enums: `import signal` costs 11 ms, per run

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
NODE_DIED = signal.SIGHUP  # the supervisor's parent-death signal: not the node's SIGTERM
EXIT_START_FAILED = 127  # like a shell whose command cannot run
EXIT_NODE_GONE = 137
POLL_S = 0.02
KILL_PATIENCE_S = 10.0  # a process stuck in the kernel (D state) ignores SIGKILL: stop waiting
_WAITED = frozenset({signal.SIGCHLD, signal.SIGTERM, NODE_DIED})
_DEFAULTED = ("SIGPIPE", "SIGXFSZ", "SIGXFZ")  # python ignores these; a program must not inherit that


class Options:
    """What the node tells the supervisor (immutable by convention; a dataclass would cost its
    import on every run)."""

    __slots__ = (
        "cwd",
        "gid",
        "grace_s",
        "groups",
        "node_pid",
        "program",
        "status_fd",
        "uid",
        "umask",
        "user",
    )

    def __init__(self, values: dict[str, str]) -> None:
        self.node_pid = int(values["node-pid"])
        self.grace_s = float(values.get("grace", "2"))
        self.umask = int(values["umask"], 8) if "umask" in values else None
        self.status_fd = int(values["status-fd"]) if "status-fd" in values else None
        self.cwd = values.get("cwd")
        self.program = values.get("program")
        self.user = values.get("user")
        self.uid = int(values["uid"]) if "uid" in values else None
        self.gid = int(values["gid"]) if "gid" in values else None
        self.groups = tuple(int(g) for g in values.get("groups", "").split(",") if g)


def options_argv(
    *,
    node_pid: int,
    grace_s: float,
    umask: int | None = None,
    status_fd: int | None = None,
    cwd: str | None = None,
    program: str | None = None,
    user: tuple[str, int, int, tuple[int, ...]] | None = None,
) -> list[str]:
    """The options as a command line, up to and including the `--` before the task's argv."""
    argv = ["--node-pid", str(node_pid), "--grace", repr(float(grace_s))]
    optional = {"umask": None if umask is None else f"{umask:o}", "status-fd": status_fd, "cwd": cwd}
    optional["program"] = program
    if user is not None:
        name, uid, gid, groups = user
        optional.update(user=name, uid=uid, gid=gid, groups=",".join(map(str, groups)))
    for key, value in optional.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return [*argv, "--"]


def parse_options(argv: Sequence[str]) -> tuple[Options, list[str]]:
    """`options_argv`'s output followed by the task's argv -> (options, the task's argv)."""
    values: dict[str, str] = {}
    args = list(argv)
    while args and args[0] != "--":
        key, value, *args = args
        if not key.startswith("--"):
            raise ValueError(f"expected an option, got {key!r}")
        values[key[2:]] = value
    return Options(values), args[1:]


# ---------------------------------------------------------------- the kernel's part


def _prctl(option: int, value: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def adopt(node_pid: int) -> frozenset[int]:
    """Become the subreaper of the task's tree, tied to the node; returns the signal mask to
    restore in the task's process. Exits at once if the node has died already."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _WAITED)  # before the death signal is armed
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, NODE_DIED)
    if os.getppid() != node_pid:
        os._exit(EXIT_NODE_GONE)
    return frozenset(int(s) for s in mask)


def descendants(root: int) -> list[int]:
    """Live (not zombie) processes under `root`, found through every process's ppid in /proc."""
    children: dict[int, list[int]] = {}
    live: set[int] = set()
    try:
        names = os.listdir("/proc")
    except OSError:
        names = []
    for name in names:
        if name.isdigit():
            _note(int(name), children, live)
    found, todo = [], list(children.get(root, ()))
    while todo:
        pid = todo.pop()
        if pid in live:
            found.append(pid)
        todo.extend(children.get(pid, ()))  # a zombie's children have left it already, but walk on
    return found


def _note(pid: int, children: dict[int, list[int]], live: set[int]) -> None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return
    fields = stat[stat.rfind(b")") + 2 :].split()  # state, ppid, ...
    if len(fields) < 2:
        return
    children.setdefault(int(fields[1]), []).append(pid)
    if fields[0] not in (b"Z", b"X"):
        live.add(pid)


def signal_all(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        _quietly(os.kill, pid, sig)


def _quietly(call: Callable[..., object], *args: object) -> None:
    """`call(*args)`, an OSError or ValueError ignored (contextlib costs its import on every run)."""
    try:
        call(*args)
    except (OSError, ValueError):
        pass


# ---------------------------------------------------------------- the task's process


def _prepare_child(opts: Options, supervisor: int, mask: frozenset[int]) -> None:
    """In the forked task process, before the exec: identity, death signal, umask, cwd, signals."""
    if opts.status_fd is not None:
        os.close(opts.status_fd)
    if opts.uid is not None and opts.gid is not None:
        os.setgroups(list(opts.groups))
        os.setgid(opts.gid)
        os.setuid(opts.uid)
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after the switch, which clears it
    if os.getppid() != supervisor:
        os._exit(EXIT_NODE_GONE)
    if opts.umask is not None:
        os.umask(opts.umask)
    if opts.cwd is not None:
        try:
            os.chdir(opts.cwd)
        except OSError as exc:
            who = f" to user {opts.user}" if opts.user else ""
            raise OSError(exc.errno, f"cwd {opts.cwd!r} is not accessible{who}: {exc.strerror}") from None
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def start(opts: Options, mask: frozenset[int], body: Callable[[int], NoReturn]) -> int:
    """Fork the task's process; it prepares itself, then runs `body(started_fd)`.

    `body` must close `started_fd` once the task is under way (an exec closes it by itself: it is
    close-on-exec), or write its error there and exit. Returns the pid; a start error is reported
    on the status fd and ends the supervisor (EXIT_START_FAILED).
    """
    supervisor = os.getpid()
    read_fd, write_fd = os.pipe()  # both close-on-exec
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:  # nothing may escape: this process must never run on as a second supervisor
            _prepare_child(opts, supervisor, mask)
            body(write_fd)
        except BaseException as exc:
            message = exc.strerror if isinstance(exc, OSError) and exc.strerror else repr(exc)
            _quietly(os.write, write_fd, message.encode(errors="replace")[:2000])
        os._exit(EXIT_START_FAILED)
    os.close(write_fd)
    error = _read_all(read_fd)
    if error:
        _report(opts, "error " + error.decode(errors="replace").replace("\n", " "))
        _quietly(os.waitpid, pid, 0)
        os._exit(EXIT_START_FAILED)
    return pid


def exec_body(program: str | None, argv: Sequence[str]) -> Callable[[int], NoReturn]:
    """Exec `argv` from `program` (a path the node resolved and checked), else by PATH."""

    def run(started_fd: int) -> NoReturn:
        for name in _DEFAULTED:  # an ignored signal stays ignored across exec
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), signal.SIG_DFL)
        try:
            if program is None:
                os.execvp(argv[0], list(argv))
            os.execv(program, list(argv))
        except OSError as exc:
            raise OSError(exc.errno, f"cannot start {argv[0]!r}: {exc.strerror}") from None

    return run


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _report(opts: Options, line: str) -> None:
    if opts.status_fd is not None:
        _quietly(os.write, opts.status_fd, (line + "\n").encode(errors="replace"))


# ---------------------------------------------------------------- supervising


class Tree:
    """The supervisor's view of the task: its main process and whatever else is below."""

    __slots__ = ("main", "status")

    def __init__(self, main: int) -> None:
        self.main = main
        self.status: int | None = None  # the main process's wait status, once reaped

    def reap(self) -> bool:
        """Reap every exited child; whether any child (live or not yet reaped) is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.main:
                self.status = status

    def wait_main(self) -> int:
        """Until the main process ends (returns 0) or a signal asks to stop (returns it)."""
        while True:
            signo = signal.sigwaitinfo(_WAITED).si_signo
            if signo != signal.SIGCHLD:
                return signo
            self.reap()
            if self.status is not None:
                return 0

    def stop(self, grace_s: float) -> None:
        """SIGTERM every descendant (each once, new ones too), SIGKILL those left after
        `grace_s`; until none is left. NODE_DIED cuts the grace short."""
        kill_at = time.monotonic() + grace_s
        give_up_at = kill_at + KILL_PATIENCE_S
        termed: set[int] = set()
        while self.reap():
            pids = descendants(os.getpid())
            if not pids:
                break
            now = time.monotonic()
            if now >= give_up_at:
                return
            if now >= kill_at:
                signal_all(pids, signal.SIGKILL)
            else:
                new = [p for p in pids if p not in termed]
                signal_all(new, signal.SIGTERM)
                signal_all(new, signal.SIGCONT)  # a stopped process acts on its SIGTERM only then
                termed.update(new)
            info = signal.sigtimedwait(_WAITED, POLL_S)
            if info is not None and info.si_signo == NODE_DIED:
                kill_at = time.monotonic()
        self.reap()


def exit_like(status: int | None) -> NoReturn:
    """Exit as the main process did: its exit status, or death by its signal (no core dump)."""
    if status is None:
        os._exit(EXIT_NODE_GONE)
    if os.WIFEXITED(status):
        os._exit(os.WEXITSTATUS(status))
    sig = os.WTERMSIG(status)
    _quietly(resource.setrlimit, resource.RLIMIT_CORE, (0, 0))
    _quietly(signal.signal, sig, signal.SIG_DFL)  # SIGKILL and SIGSTOP cannot be set
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {sig})
    os.kill(os.getpid(), sig)
    os._exit(128 + sig)  # a signal whose default is not to terminate


def run(opts: Options, body: Callable[[int], NoReturn]) -> NoReturn:
    """The whole supervisor: adopt, start `body` in the task's process, supervise, exit like it."""
    if opts.status_fd is not None:
        os.set_inheritable(opts.status_fd, False)
    try:
        mask = adopt(opts.node_pid)
    except OSError as exc:  # no prctl: not Linux
        _report(opts, f"error cannot supervise the task: {exc}")
        os._exit(EXIT_START_FAILED)
    tree = Tree(start(opts, mask, body))
    why = tree.wait_main()
    if why == NODE_DIED:
        tree.stop(0.0)
        os._exit(EXIT_NODE_GONE)
    if why == 0:
        _report(opts, "exited")
    tree.stop(opts.grace_s)
    exit_like(tree.status)


def main(argv: Sequence[str]) -> NoReturn:
    try:
        opts, task_argv = parse_options(argv)
    except (ValueError, KeyError, IndexError) as exc:
        sys.stderr.write(f"raftsched supervisor: bad command line: {exc!r}\n")
        os._exit(2)
    if not task_argv:
        sys.stderr.write("raftsched supervisor: no command\n")
        os._exit(2)
    run(opts, exec_body(opts.program, task_argv))


if __name__ == "__main__":
    main(sys.argv[1:])
