"""The bridge between PySyncObj's tick thread and the asyncio event loop.

This module and raftguard.py (the guarded transport it installs) are the only ones that import
pysyncobj. It owns:

* one `@replicated` entry point, `apply_command(data: bytes)`, forever (PySyncObj numbers
  replicated methods by position: adding one would change what old journals mean);
* `async propose(data)`: works on any node (PySyncObj forwards a follower's command to the
  leader once), turns the callback into an awaited result, retries what surely did not apply,
  and maps failures to `NoLeader` (not applied, retry later) or `Indeterminate` (may have
  applied). Retrying after an unknown outcome is safe because every command is idempotent in
  the state: API writes carry a request id, fires are unique per slot, worker reports are
  fenced by attempt;
* role and leader changes, delivered to the loop as events;
* the journal and snapshot files in the node's data directory (both set: PYSYNCOBJ.md bug 2);
* the Raft port's guard (raftguard.py) and the tick thread's pulse (`TickWatch`, for /v1/health).

Threads: PySyncObj applies entries on its tick thread; the state guards itself with its own
lock (see state.py), and listeners are told through `loop.call_soon_threadsafe`. No call in
here blocks the event loop on Raft: proposals are asynchronous, status reads are memory reads.

Snapshots: the consumer's `_serialize` returns a `_LazyDump`, which PySyncObj pickles in its
forked compaction child; only there does the state turn into orjson bytes, so compaction costs
the tick thread nothing (PYSYNCOBJ.md bug 4) and what lands on disk is plain bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import stat
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pysyncobj.syncobj
from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.journal import FileJournal, createJournal
from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.syncobj import _RAFT_STATE

from .commands import CommandType, DecodeError, decode, envelope_version
from .compaction import BACKSTOP, CompactionTurns
from .config import DEFAULT_MAX_RAFT_FRAME_BYTES
from .errors import Indeterminate, NoLeader, Unavailable
from .executors._reaper import set_parent_death_signal
from .journalcheck import check_data_dir
from .logmatch import assemble_transmission, fence_commit_index, of_an_older_term, trim_append_entries
from .raftguard import GuardedTransport, GuardSettings
from .state import State

__all__ = ["RaftSettings", "RaftStatus", "Replicator", "TickWatch"]

log = logging.getLogger(__name__)

_NOT_APPLIED = {
    FAIL_REASON.QUEUE_FULL,
    FAIL_REASON.MISSING_LEADER,
    FAIL_REASON.DISCARDED,
    FAIL_REASON.NOT_LEADER,
    FAIL_REASON.REQUEST_DENIED,
}
_REASON_NAMES = {getattr(FAIL_REASON, n): n.lower() for n in dir(FAIL_REASON) if n.isupper()}


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftSettings:
    self_addr: str
    partner_addrs: tuple[str, ...]
    secret: str
    data_dir: Path
    # The timers: no defaults here, the cluster configuration (`config.ClusterConfig`) has them.
    raft_min_timeout_s: float
    raft_max_timeout_s: float
    append_entries_period_s: float
    heartbeat_period_s: float
    auto_tick_period_s: float
    leader_fallback_timeout_s: float
    connection_timeout_s: float
    log_compaction_min_entries: int
    log_compaction_min_time_s: float
    fsync: bool
    # PySyncObj's default of 5 s between dials would delay a restarted node's return that long.
    connection_retry_s: float = 1.0
    max_raft_frame_bytes: int = DEFAULT_MAX_RAFT_FRAME_BYTES  # `[cluster] max_raft_frame_bytes`

    @property
    def tick_stall_s(self) -> float:
        """A tick older than this means the tick thread is stuck: a few election timeouts, and
        more than the longest a healthy tick takes (a snapshot install: up to 1.3 s measured)."""
        return max(2.0, 3 * self.raft_max_timeout_s)


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftStatus:
    role: str  # leader | follower | candidate
    leader: str | None  # the leader's Raft address
    term: int
    commit_index: int
    applied_index: int
    log_len: int
    connected: dict[str, bool]
    match_index: dict[str, int]
    appends_trimmed: int = 0  # AppendEntries rewritten to keep entries PySyncObj would have cut
    appends_refused: int = 0  # AppendEntries refused: they would have overwritten committed entries
    compactions: int = 0  # compactions started at this node's turns (compaction.py)
    compaction_turn: int = 0  # the log index of the last entry turn taken (0: none yet)
    tick_age_s: float = 0.0  # since the tick thread last ran its tick callbacks
    # Raft connections this node closed, by raftguard.Reason value
    rejected_connections: dict[str, int] = field(default_factory=dict)


_PING: dict[str, str] = {"type": "raftsched_ping"}

_forking_pid = 0
_fork_guard_registered = False


def _guard_forked_children() -> None:
    """PySyncObj forks to write a snapshot (`useFork`: 20-30 s at 100,000 jobs). The child held
    every socket of the node, the HTTP and Raft listening ones too, and outlived a kill -9 of its
    parent: the node, started again at once, could not bind its port ("address already in use",
    the big-table bench's restart) until the child was done. In each child of this process: die
    with the parent (SIGKILL on parent death; a half-written `.tmp` dump is ignored) and drop the
    inherited sockets (the child writes a file; the parent keeps its connections)."""
    global _fork_guard_registered
    if _fork_guard_registered or not hasattr(os, "register_at_fork"):
        return
    _fork_guard_registered = True
    os.register_at_fork(before=_note_forking_pid, after_in_child=_in_forked_child)


def _note_forking_pid() -> None:
    global _forking_pid
    _forking_pid = os.getpid()


def _in_forked_child() -> None:
    set_parent_death_signal(_forking_pid)
    # The child builds the snapshot (millions of short-lived containers) and exits: collections
    # of a heap it never frees only cost it time (a third of the dump at 100,000 jobs).
    gc.disable()
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: the sockets stay open in the child (a restart may wait for it)
        return
    for fd in fds:
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)


class _LazyDump:
    """Pickled as plain bytes; the orjson dump runs where it is pickled (the forked child)."""

    def __init__(self, state: State) -> None:
        self._state = state

    def __reduce__(self) -> tuple[type[bytes], tuple[bytes]]:
        return bytes, (self._state.dump(locked=False),)


class _Consumer(SyncObjConsumer):  # type: ignore[misc]
    def __init__(self, state: State, on_load: Callable[[], None]) -> None:
        super().__init__()
        self._state = state
        self._on_load = on_load

    @replicated  # type: ignore[untyped-decorator]
    def apply_command(self, data: bytes) -> dict[str, Any]:
        if not isinstance(data, bytes):
            return {"ok": False, "code": "bad_command", "message": "not bytes", "field": None}
        return self._state.apply(data)

    def _serialize(self) -> dict[str, Any]:
        return {"state": _LazyDump(self._state)}

    def _deserialize(self, data: dict[str, Any]) -> None:
        self._state.load(data["state"])
        self._on_load()


class _SyncedJournal(FileJournal):  # type: ignore[misc]
    """PySyncObj's journal, made durable: each change is msync'ed before PySyncObj goes on
    (and so before it acknowledges the entry), and the term/vote file is fsync'ed with its
    directory. PySyncObj itself never syncs (PYSYNCOBJ.md, Durability)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._path = path

    def add(self, command: bytes, idx: int, term: int) -> None:
        super().add(command, idx, term)
        self.flush()

    def clear(self) -> None:
        super().clear()
        self.flush()

    def deleteEntriesFrom(self, entry_from: int) -> None:  # noqa: N802 - PySyncObj's name
        super().deleteEntriesFrom(entry_from)
        self.flush()

    def setCurrentTerm(self, term: int, voted_for: Any) -> None:  # noqa: N802 - PySyncObj's name
        super().setCurrentTerm(term, voted_for)
        _fsync_path(self._path + ".meta")
        _fsync_path(os.path.dirname(os.path.abspath(self._path)))


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _journal_factory(fsync: bool) -> Callable[[str | None], Any]:
    def create(path: str | None = None) -> Any:
        return _SyncedJournal(path) if fsync and path is not None else createJournal(path)

    return create


class Replicator:
    """Owns the SyncObj. Create and `start()` it from the main thread, inside the running loop."""

    def __init__(self, settings: RaftSettings, state: State) -> None:
        self.settings = settings
        self.state = state
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sync: SyncObj | None = None
        self._appends_trimmed = 0  # counted on the tick thread, read by status()
        self._appends_refused = 0
        self._consumer = _Consumer(state, self._snapshot_loaded)
        self.role_listeners: list[Callable[[], None]] = []  # called on the loop
        self.snapshot_loaded = asyncio.Event()
        self._handoff: _Handoff | None = None  # commit results, tick thread -> loop
        self._pacer: TickPacer | None = None
        self._turns: CompactionTurns | None = None
        self._ticks = TickWatch()
        self._transport: GuardedTransport | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.settings
        s.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        check_data_dir(s.data_dir)  # raises JournalDamaged: PySyncObj would replay damage as entries
        conf = SyncObjConf(
            password=s.secret,
            autoTick=True,
            autoTickPeriod=s.auto_tick_period_s,
            appendEntriesUseBatch=True,  # bug 3: False corrupted a follower under load
            # PySyncObj's one period serves as the idle heartbeat; `_send_entries_promptly`
            # sends new entries and commit indexes every `append_entries_period_s`.
            appendEntriesPeriod=s.heartbeat_period_s,
            raftMinTimeout=s.raft_min_timeout_s,
            raftMaxTimeout=s.raft_max_timeout_s,
            leaderFallbackTimeout=s.leader_fallback_timeout_s,
            connectionTimeout=s.connection_timeout_s,
            connectionRetryTime=s.connection_retry_s,
            commandsWaitLeader=False,
            journalFile=str(s.data_dir / "raft.journal"),
            fullDumpFile=str(s.data_dir / "raft.dump"),  # bug 2: never a journal without a dump
            useFork=True,
            bindAddress=s.self_addr,
            dynamicMembershipChange=True,
            # A backstop: each node compacts at its own turns (compaction.py), before these.
            logCompactionMinEntries=BACKSTOP * s.log_compaction_min_entries,
            logCompactionMinTime=BACKSTOP * s.log_compaction_min_time_s,
            onStateChanged=self._state_changed,
        )
        _guard_forked_children()
        # The one seam PySyncObj offers for its journal is the module-level factory it calls.
        pysyncobj.syncobj.createJournal = _journal_factory(s.fsync)
        guard = GuardSettings(max_frame_bytes=s.max_raft_frame_bytes)
        self._sync = SyncObj(
            s.self_addr,
            list(s.partner_addrs),
            conf=conf,
            consumers=[self._consumer],
            transportClass=functools.partial(GuardedTransport, guard=guard),
        )
        self._transport = self._sync._SyncObj__transport
        self._ticks.stamp()
        self._sync.addOnTickCallback(self._ticks.stamp)
        self._guard_log_matching(self._sync)
        self._keep_connections_alive(self._sync)
        self._send_entries_promptly(self._sync)
        self._pacer = TickPacer(
            self._sync,
            busy_s=s.auto_tick_period_s,
            idle_s=max(s.auto_tick_period_s, s.heartbeat_period_s / 2),
        )
        self._sync.addOnTickCallback(self._pacer)
        self._turns = CompactionTurns(
            self._sync, every_entries=s.log_compaction_min_entries, every_s=s.log_compaction_min_time_s
        )
        self._sync.addOnTickCallback(self._turns)

    def stop(self) -> None:
        if self._sync is not None:
            self._sync.destroy()
            self._sync = None

    def force_compaction(self) -> None:
        self._require().forceLogCompaction()

    # ------------------------------------------------------------------ tick-thread callbacks

    def _guard_log_matching(self, sync: SyncObj) -> None:
        """Every message passes through `trim_append_entries` first (see logmatch.py): PySyncObj's
        follower would otherwise cut committed entries on a late or repeated AppendEntries."""
        handle = sync._SyncObj__onMessageReceived
        raft_log = sync._SyncObj__raftLog

        def received(node: Any, message: Any) -> None:  # runs on the tick thread
            if isinstance(message, dict) and message.get("type") == _PING["type"]:
                return  # it kept the connection alive by arriving (see `_keep_connections_alive`)
            current_term = sync._SyncObj__raftCurrentTerm
            if (
                isinstance(message, dict)
                and message.get("type") == "append_entries"
                and not of_an_older_term(message, current_term)
            ):
                message = fence_commit_index(message, sync._SyncObj__raftCommitIndex)
                if message.get("transmission") is not None:
                    whole, sync._SyncObj__recvTransmission = assemble_transmission(
                        message, sync._SyncObj__recvTransmission
                    )
                    if whole is None:
                        return
                    message = whole
                first, last = raft_log[0][1], raft_log[-1][1]

                def term_at(idx: int) -> int | None:
                    return int(raft_log[idx - first][2]) if first <= idx <= last else None

                committed = max(sync._SyncObj__raftCommitIndex, sync._SyncObj__raftLastApplied)
                trimmed = trim_append_entries(message, term_at, last, committed, current_term)
                if trimmed is None:
                    self._appends_refused += 1
                    if self._appends_refused % 100 == 1:
                        log.error(
                            "refused an AppendEntries from %s that would overwrite committed entries "
                            "(at or below %d; %d refused so far)",
                            node,
                            committed,
                            self._appends_refused,
                        )
                    return
                if trimmed is not message:
                    self._appends_trimmed += 1
                message = trimmed
            handle(node, message)

        sync._SyncObj__transport.setOnMessageReceivedCallback(received)

    def _keep_connections_alive(self, sync: SyncObj) -> None:
        """Ping every peer connection a few times per `connection_timeout_s`.

        PySyncObj drops a connection when it sends on it after `connection_timeout_s` without
        reading anything. Nothing travels between two followers, so a candidate's first
        RequestVote to the other follower closed that connection instead of arriving: both
        followers then stood as candidates, split the vote and waited for another timeout
        (failover under load 1.4-1.9 s with 0.4/1.2 s timeouts; 0.7-1.0 s with connections kept
        alive). The pings are consumed by the receiving guard (`_guard_log_matching`); a node
        without it ignores them (PySyncObj ignores message types it does not know)."""
        transport = sync._SyncObj__transport
        period = min(1.0, self.settings.connection_timeout_s / 4)
        next_ping = 0.0

        def ping() -> None:  # runs on the tick thread, as PySyncObj's own sends do
            nonlocal next_ping
            now = time.monotonic()
            if now < next_ping:
                return
            next_ping = now + period
            for node in list(transport._connections):
                transport.send(node, _PING)

        sync.addOnTickCallback(ping)

    def _send_entries_promptly(self, sync: SyncObj) -> None:
        batch, heartbeat = self.settings.append_entries_period_s, self.settings.heartbeat_period_s
        if batch < heartbeat:  # else PySyncObj's own period already sends everything
            sync.addOnTickCallback(PromptSender(sync, batch_s=batch, heartbeat_s=heartbeat))

    def _state_changed(self, old: int, new: int) -> None:
        if self._loop is not None and not self._loop.is_closed():
            for listener in self.role_listeners:
                self._loop.call_soon_threadsafe(listener)

    def _snapshot_loaded(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.snapshot_loaded.set)

    # ------------------------------------------------------------------ proposals

    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]:
        """Commit `data` and return the state's result (a rejection is a result, not an error).

        Raises NoLeader when the command surely did not apply within `timeout_s`, and
        Indeterminate when it may have; Unavailable, at once, for a command of a version the
        cluster's committed version does not cover (commands.py: an older member could not
        apply it; the state would refuse it anyway).
        """
        self._check_version(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        uncertain, delay, last_reason = False, 0.02, "no leader"
        while (remaining := deadline - loop.time()) > 0:
            if self._isolated():
                # A follower cut off from every peer would forward into the void: surely not applied.
                last_reason = "not connected to any peer"
                await asyncio.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.5)
                continue
            try:
                async with asyncio.timeout(min(remaining, 3.0)):
                    result, reason = await self._submit(data)
            except TimeoutError:
                uncertain, last_reason = True, "timed out waiting for the commit"
                continue
            if reason == FAIL_REASON.SUCCESS:
                return dict(result)
            last_reason = _REASON_NAMES.get(reason, str(reason))
            uncertain = uncertain or reason not in _NOT_APPLIED
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.5)
        if uncertain:
            raise Indeterminate(f"the outcome is unknown ({last_reason}); retry with the same request id")
        raise NoLeader(f"not applied: {last_reason}")

    def _check_version(self, data: bytes) -> None:
        try:
            version = envelope_version(data)
        except DecodeError:
            return  # the state refuses it as it refuses every malformed entry
        covered = self.state.cluster_version
        if version > covered and decode(data).type is not CommandType.SET_CLUSTER_VERSION:
            raise Unavailable(
                f"command version {version} is above the cluster's version {covered}: not applied"
            )

    async def change_membership(self, kind: str, addr: str, *, timeout_s: float = 10.0) -> None:
        """Add (`kind="add"`) or remove (`"remove"`) a voter; returns once the change is committed.

        One change at a time (Raft's single-server changes): PySyncObj refuses a second while
        one is uncommitted, which we retry until `timeout_s`. Idempotent: adding a member or
        removing a non-member returns at once.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if (addr in self.members()) == (kind == "add"):
                return
            future = loop.create_future()
            sync = self._require()
            change = sync.addNodeToCluster if kind == "add" else sync.removeNodeFromCluster
            change(addr, callback=self._callback(future))
            if self._pacer is not None:
                self._pacer.wake()
            try:
                async with asyncio.timeout(min(3.0, max(0.1, deadline - loop.time()))):
                    _, reason = await future
            except TimeoutError:
                continue
            if reason == FAIL_REASON.SUCCESS:
                return
            await asyncio.sleep(0.2)
        raise Indeterminate(f"membership change ({kind} {addr}) not confirmed in {timeout_s:g}s")

    async def wait_replicated(self, addr: str, timeout_s: float = 2.0) -> bool:
        """On the leader: wait until `addr` holds everything committed so far, plus a few heartbeats
        for it to learn the commit index (so it applies what was just committed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        target = self.status().commit_index
        while loop.time() < deadline:
            status = self.status()
            if status.match_index.get(addr, 0) >= target:
                await asyncio.sleep(4 * self.settings.append_entries_period_s)
                return True
            await asyncio.sleep(0.02)
        return False

    def members(self) -> set[str]:
        """The Raft addresses of the current voters, this node included."""
        status = self.status()
        return {self.settings.self_addr, *status.connected}

    async def transfer_leadership(self, timeout_s: float = 5.0) -> bool:
        """Hand leadership to the most caught-up follower; True once another node leads."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if not self.is_leader():
                return True
            self._require().transferLeadership(callback=lambda result, reason: None)
            await asyncio.sleep(0.3)
        return not self.is_leader()

    def _isolated(self) -> bool:
        if not self.settings.partner_addrs or self.is_leader():
            return False
        return not any(self.status().connected.values())

    def _submit(self, data: bytes) -> asyncio.Future[tuple[Any, int]]:
        future: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()
        self._consumer.apply_command(data, callback=self._callback(future))
        if self._pacer is not None:
            self._pacer.wake()  # the tick thread takes the command now, not at its next tick
        return future

    def _callback(self, future: asyncio.Future[tuple[Any, int]]) -> Callable[[Any, int], None]:
        """PySyncObj's completion callback (tick thread) that resolves `future` on its loop."""
        handoff = self._handoff
        if handoff is None or handoff.loop is not future.get_loop():
            handoff = self._handoff = _Handoff(future.get_loop())

        def done(result: Any, reason: int) -> None:
            handoff.post(future, (result, reason))

        return done

    # ------------------------------------------------------------------ status (loop thread)

    def _require(self) -> SyncObj:
        if self._sync is None:
            raise NoLeader("the Raft node is not running")
        return self._sync

    def status(self) -> RaftStatus:
        sync = self._require()
        for _ in range(5):
            try:
                raw = sync.getStatus()
                break
            except RuntimeError:  # a dict changed size on the tick thread: read again
                continue
        else:
            raw = {}
        leader = raw.get("leader")
        prefix, match = "partner_node_status_server_", "match_idx_server_"
        return RaftStatus(
            role={0: "follower", 1: "candidate", 2: "leader"}.get(raw.get("state", 0), "follower"),
            leader=str(leader) if leader is not None else None,
            term=int(raw.get("raft_term", 0)),
            commit_index=int(raw.get("commit_idx", 0)),
            applied_index=int(raw.get("last_applied", 0)),
            log_len=int(raw.get("log_len", 0)),
            connected={k[len(prefix) :]: v == 2 for k, v in raw.items() if k.startswith(prefix)},
            match_index={k[len(match) :]: int(v) for k, v in raw.items() if k.startswith(match)},
            appends_trimmed=self._appends_trimmed,
            appends_refused=self._appends_refused,
            compactions=self._turns.turns_taken if self._turns is not None else 0,
            compaction_turn=self._turns.last_turn_index if self._turns is not None else 0,
            tick_age_s=self._ticks.age_s(),
            rejected_connections=self._transport.rejections.counts() if self._transport is not None else {},
        )

    def is_leader(self) -> bool:
        return self._sync is not None and bool(self._sync._isLeader())

    def term(self) -> int:
        return int(self._require().raftCurrentTerm)

    def leader_addr(self) -> str | None:
        leader = self._require()._getLeader()
        return str(leader) if leader is not None else None

    def log_position(self) -> tuple[int, int]:
        """(applied, committed): the last index this node applied and the highest it knows is
        committed (it may not even have received it). Three integers of the tick thread, read
        without building the status: cheap per run start. Not started: (0, 1), behind."""
        sync = self._sync
        if sync is None:
            return 0, 1
        applied = int(sync._SyncObj__raftLastApplied)
        committed = max(int(sync._SyncObj__raftCommitIndex), int(sync._SyncObj__leaderCommitIndex or 0))
        return applied, committed

    def tick_alive(self) -> bool:
        """The tick thread runs and has ticked within `tick_stall_s`."""
        if self._sync is None or not self._sync.tick_thread_alive():
            return False
        return self._ticks.age_s() <= self.settings.tick_stall_s

    async def wait_applied(self, index: int, timeout_s: float = 5.0) -> None:
        """Wait until this node has applied log index `index` (for consistent reads)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.status().applied_index < index:
            if loop.time() > deadline:
                raise NoLeader("this node is behind the log")
            await asyncio.sleep(0.005)


class TickWatch:
    """The tick thread's pulse: `stamp` is an on-tick callback, `age_s` any thread's reading.
    A tick that never ends (a read loop, a long snapshot install) shows as a growing age."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._last = clock()

    def stamp(self) -> None:
        self._last = self.clock()

    def age_s(self) -> float:
        return max(0.0, self.clock() - self._last)


class PromptSender:
    """On the leader, at the end of each tick: send new entries, and a commit index the followers
    have not heard, `batch_s` after the last send; an idle leader only sends heartbeats, every
    `heartbeat_s` (PySyncObj's own `appendEntriesPeriod`).

    PySyncObj has one period for both: at 0.02 s (the commit latency fire-ahead and the API need)
    an idle 3-node cluster spent 8-10 % of a core per node on 50 heartbeats a second to each
    follower, each pickled, encrypted and answered. Sending through PySyncObj's own
    `__sendAppendEntries`, on the tick thread, keeps its batching (`appendEntriesUseBatch`, bug
    3) and its bookkeeping. A follower still catching up (behind, or receiving a snapshot) has
    entries it was not sent, so it is served every `batch_s`, as before."""

    def __init__(
        self, sync: Any, *, batch_s: float, heartbeat_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.sync, self.batch_s, self.heartbeat_s, self.clock = sync, batch_s, heartbeat_s, clock
        self._seen_deadline = 0.0  # PySyncObj's next-heartbeat time when last looked at
        self._commit_sent = 0
        self.sends = 0

    def __call__(self) -> None:
        sync = self.sync
        if sync._SyncObj__raftState != _RAFT_STATE.LEADER:
            return
        deadline = sync._SyncObj__newAppendEntriesTime  # each send sets it to now + heartbeat_s
        commit = sync._SyncObj__raftCommitIndex  # a leader moves it at the start of a tick, before sending
        if deadline != self._seen_deadline:  # PySyncObj sent in this tick, with this commit index
            self._seen_deadline, self._commit_sent = deadline, commit
        if self.clock() < deadline - self.heartbeat_s + self.batch_s:
            return
        last = sync._SyncObj__getCurrentLogIndex()
        next_index, connected = sync._SyncObj__raftNextIndex, sync._SyncObj__connectedNodes
        others = [node for node in sync._SyncObj__otherNodes if node in connected]
        behind = any(next_index.get(node, 0) <= last for node in others)
        if behind or commit > self._commit_sent:
            sync._SyncObj__sendAppendEntries()
            self.sends += 1
            self._seen_deadline, self._commit_sent = sync._SyncObj__newAppendEntriesTime, commit


class TickPacer:
    """PySyncObj's tick period, chosen per tick: `busy_s` on a leader that has appended entries in
    the last `busy_for_s` (its sends of new entries wait for a tick, see PromptSender), `idle_s`
    otherwise; and a pipe on which another thread wakes the tick thread when it queues a command.

    A tick polls the sockets and runs every timer; at 100 ticks a second an idle node spent
    1-2 % of a core on ticks alone. Messages wake the tick thread whatever the period, and
    commands queued from the loop wake it through the pipe, so the period only bounds how late
    timers run: an election deadline by `idle_s` (a fraction of `raft_min_timeout_s`), a
    heartbeat by `idle_s` (after `heartbeat_period_s`). PySyncObj reads `autoTickPeriod` from
    its configuration before each tick. The pipe lives as long as the process."""

    def __init__(
        self,
        sync: Any,
        *,
        busy_s: float,
        idle_s: float,
        busy_for_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sync, self.clock = sync, clock
        self.busy_s, self.idle_s, self.busy_for_s = busy_s, idle_s, busy_for_s
        self._last_index = -1
        self._busy_until = 0.0
        self._write_fd: int | None = None

    def __call__(self) -> None:
        sync = self.sync
        if self._write_fd is None:
            self._subscribe_pipe()
        now = self.clock()
        if sync._SyncObj__raftState == _RAFT_STATE.LEADER:
            last = sync._SyncObj__getCurrentLogIndex()
            if last != self._last_index:
                self._last_index, self._busy_until = last, now + self.busy_for_s
        else:
            self._busy_until = 0.0
        period = self.busy_s if now < self._busy_until else self.idle_s
        conf = sync._SyncObj__conf
        if conf.autoTickPeriod != period:
            conf.autoTickPeriod = period

    def _subscribe_pipe(self) -> None:
        """On the tick thread, which owns the poller."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        os.set_blocking(write_fd, False)

        def drain(descr: int, event_mask: int) -> None:
            with contextlib.suppress(BlockingIOError):
                while os.read(read_fd, 4096):
                    pass

        self.sync._poller.subscribe(read_fd, drain, POLL_EVENT_TYPE.READ)
        self._write_fd = write_fd

    def wake(self) -> None:
        """Any thread: make the tick thread's current poll return."""
        if self._write_fd is not None:
            with contextlib.suppress(OSError):  # full (a wake-up is pending anyway)
                os.write(self._write_fd, b"w")


class _Handoff:
    """Commit results from the tick thread to the loop, one wake-up of the loop per batch: a
    `call_soon_threadsafe` each wrote to the loop's self-pipe once per command (7-11 % of the
    leader's tick thread at 1,000 runs/s), where one tick resolves several."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Future[tuple[Any, int]], tuple[Any, int]]] = []

    def post(self, future: asyncio.Future[tuple[Any, int]], value: tuple[Any, int]) -> None:
        with self._lock:
            first = not self._pending
            self._pending.append((future, value))
        if first and not self.loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for future, value in pending:
            _resolve(future, value)


def _resolve(future: asyncio.Future[tuple[Any, int]], value: tuple[Any, int]) -> None:
    if not future.done():
        future.set_result(value)


def new_request_id() -> str:
    return uuid.uuid4().hex
