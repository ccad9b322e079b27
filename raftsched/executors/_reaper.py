"""No orphaned tasks: a task's processes die with the node that started them.

A task runs in its own session and process group, so that a timeout or a cancellation can kill
all of it (`_process`). The price: when the node itself dies (SIGKILL, OOM killer, a crash) nobody
kills that group, and the task runs on without anyone to read its output or record its end — the
leader then reassigns the run, and an `at_least_once` task would run twice *at the same time*.
Two mechanisms close this, each covering what the other cannot:

1. **The per-run supervisor** (`_supervisor`): every task runs under one, which gets a
   parent-death signal (`prctl(PR_SET_PDEATHSIG)`: the kernel sends it the moment the node's
   thread that started it dies, even on SIGKILL) and then SIGKILLs every descendant of the task
   — it is their subreaper, so `setsid` and double forks do not escape it; the task's own process
   also gets SIGKILL as its parent-death signal. The signal is set after the process starts (a
   supervisor that finds the node already gone exits), not between fork and exec in the node:
   Python's `preexec_fn` would force `fork()` instead of `vfork()`, and the event loop would then
   block for the copy of the node's page tables (measured 8 ms per start for a small node and
   50-65 ms for a 500 MB one, against 0.4 ms with `vfork()`). `set_parent_death_signal` is the
   same for other children of the node (the Raft journal's forks).
2. **A ledger of running process groups** (`GroupLedger`, the file `running-pgids.json` beside the
   node's outputs directory): every group the worker starts is recorded right after the spawn
   (an atomic replace of a small file, from a thread; no fsync, since it only has to survive the
   node's death, not the machine's — a reboot kills the tasks anyway), and dropped when its run
   ends. A node that starts
   again first reaps the groups its previous life recorded: SIGKILL to every recorded group that
   still has a live member *that is provably ours* — so a group id the kernel has since handed to
   an unrelated process is never touched. Proof is one of: the boot id is the same (else nothing is
   ours) and either the group leader's pid is alive with the start time (/proc/PID/stat field 22)
   recorded at spawn, or a member's environment carries the recorded RAFTSCHED_RUN_ID,
   RAFTSCHED_ATTEMPT and RAFTSCHED_NODE (the leader may be gone — killed by its death signal —
   while grandchildren it started live on in the group). This covers, once the node restarts,
   what 1. could not stop: a supervisor killed before its cleanup.

What is left: a supervisor killed by its own task (possible only without `run_as`, the task then
being the node's user) leaves what the task started to the ledger, which cannot find processes
that left the group; a node SIGKILLed in the millisecond between a spawn and its ledger record
leaves that run to the supervisor alone; and on a host without /proc nothing is reaped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["GroupLedger", "reap_groups", "set_parent_death_signal", "start_ticks"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")

# ---------------------------------------------------------------- 1. the parent-death signal


def set_parent_death_signal(parent_pid: int) -> None:
    """In a child: die by SIGKILL when the parent dies; exit now if `parent_pid` already died."""
    if not _LINUX:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(137)


# ---------------------------------------------------------------- 2. the ledger


@dataclass(frozen=True, slots=True)
class _Group:
    pgid: int
    start: int | None  # the leader's start time in clock ticks since boot
    run_id: str
    attempt: int

    def to_dict(self) -> dict[str, Any]:
        return {"pgid": self.pgid, "start": self.start, "run_id": self.run_id, "attempt": self.attempt}


class GroupLedger:
    """The process groups of this node's running tasks, kept in `path` across the node's death.

    `add` and `discard` are called from the event loop and cost no I/O there: creating and
    replacing a file costs ~0.5 ms on some file systems, too much per task start. `keep_written`
    (a task the worker owns) writes each change from a thread, coalescing bursts, a fraction of
    a millisecond after the spawn; until then the new task's death signal alone covers it. A
    stale entry is harmless: reaping checks every entry before it kills. `flush` writes at once,
    blocking (start, shutdown, tests).
    """

    def __init__(self, path: Path, node_id: str) -> None:
        self.path = path
        self.node_id = node_id
        self._groups: dict[int, _Group] = {}
        self._version = 0  # of `_groups`
        self._written = -1  # the version on disk
        self._write_lock = threading.Lock()
        self._changed = asyncio.Event()

    def add(self, pgid: int, run_id: str, attempt: int) -> None:
        self._groups[pgid] = _Group(pgid, start_ticks(pgid), run_id, attempt)
        self._touch()

    def discard(self, run_id: str, attempt: int) -> None:
        """Forget the groups of one run (they have been stopped)."""
        for pgid, group in list(self._groups.items()):
            if group.run_id == run_id and group.attempt == attempt:
                del self._groups[pgid]
                self._touch()

    def groups(self) -> dict[int, tuple[str, int]]:
        return {pgid: (g.run_id, g.attempt) for pgid, g in self._groups.items()}

    def _touch(self) -> None:
        self._version += 1
        self._changed.set()

    def _snapshot(self) -> tuple[int, bytes]:
        body = {
            "v": 1,
            "node": self.node_id,
            "boot_id": boot_id(),
            "groups": [g.to_dict() for g in self._groups.values()],
        }
        return self._version, orjson.dumps(body)

    def _write(self, version: int, data: bytes) -> bool:
        """Blocking; from any thread. Never writes an older version over a newer one."""
        with self._write_lock:
            if version <= self._written:
                return True
            try:
                _atomic_write(self.path, data)
            except OSError as exc:
                log.warning("cannot record running process groups in %s: %s", self.path, exc)
                return False
            self._written = version
            return True

    def flush(self) -> None:
        """Write the file now if it changed (blocking); a write error is logged, never raised."""
        if self._written != self._version:
            self._write(*self._snapshot())

    async def keep_written(self, retry_s: float = 1.0) -> None:
        """Write every change from a thread, until cancelled."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._written == self._version:
                continue
            if not await asyncio.to_thread(self._write, *self._snapshot()):
                await asyncio.sleep(retry_s)
                self._changed.set()

    def reap(self) -> list[int]:
        """Kill what a previous life of this node left running; start an empty ledger (blocking).

        Returns the process group ids that were killed.
        """
        recorded = _read_ledger(self.path)
        killed = reap_groups(recorded, self.node_id) if recorded else []
        self._groups.clear()
        self._version += 1
        self.flush()
        return killed


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _read_ledger(path: Path) -> dict[str, Any] | None:
    try:
        raw = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("ignoring unreadable process group ledger %s: %s", path, exc)
        return None
    return raw if isinstance(raw, dict) else None


def reap_groups(recorded: Mapping[str, Any], node_id: str) -> list[int]:
    """SIGKILL every recorded group that still has a live member proven to be ours."""
    if recorded.get("boot_id") != boot_id() or boot_id() is None:
        return []  # another boot: every process of the old one is gone, and pids mean nothing
    groups = [_parse_group(g) for g in recorded.get("groups", ())]
    wanted = {g.pgid: g for g in groups if g is not None}
    if not wanted:
        return []
    members = _members_of(set(wanted))
    killed = []
    for pgid, group in wanted.items():
        if any(_proves_ours(pid, group, node_id) for pid in members.get(pgid, ())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
                log.warning(
                    "killed process group %d of run %s attempt %d, left running by this node's last life",
                    pgid,
                    group.run_id,
                    group.attempt,
                    extra={"run": group.run_id, "node": node_id},
                )
    return killed


def _parse_group(raw: Any) -> _Group | None:
    try:
        start = raw.get("start")
        start = int(start) if start is not None else None
        return _Group(int(raw["pgid"]), start, str(raw["run_id"]), int(raw["attempt"]))
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


def _proves_ours(pid: int, group: _Group, node_id: str) -> bool:
    if pid == group.pgid and group.start is not None and start_ticks(pid) == group.start:
        return True
    env = _environ(pid)
    return (
        env.get(b"RAFTSCHED_RUN_ID") == group.run_id.encode()
        and env.get(b"RAFTSCHED_ATTEMPT") == str(group.attempt).encode()
        and env.get(b"RAFTSCHED_NODE") == node_id.encode()
    )


# ---------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[bytes] | None:
    """Fields 3 and on of /proc/PID/stat (state, ppid, pgrp, ...), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (stat field 22), None if unknown."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def _members_of(pgids: set[int]) -> dict[int, list[int]]:
    """Live (not zombie) processes of each of `pgids`."""
    found: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            fields = _stat_fields(int(name))
            if fields is None or len(fields) < 3 or fields[0] in (b"Z", b"X"):
                continue
            pgrp = int(fields[2])
            if pgrp in pgids:
                found.setdefault(pgrp, []).append(int(name))
    return found


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return {}
    pairs = (item.partition(b"=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


@functools.cache
def boot_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None
