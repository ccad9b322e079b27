"""The composition root: one node = Raft + state + scheduler + worker + admin API.

Shutdown order on SIGTERM/SIGINT: stop taking runs and give running ones `shutdown_grace_s`
(the worker drains and reports), stop the scheduler, close the API, then stop Raft. SIGKILL
at any moment loses nothing committed: the journal is written before an entry is acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import io
import logging
import os
import resource
import signal
import ssl
import time
from collections.abc import Iterator, Mapping
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__, datadir
from .api.app import ApiRunner, Services, make_app
from .api.browsers import BrowserPolicy
from .api.connections import ConnectionGuard, ConnectionLimits
from .api.outputs import OUTPUT_DIR
from .clock import Clock, SystemClock
from .clockwatch import ClockWatch, ClockWatchSettings
from .commands import VERSION as COMMAND_VERSION
from .commands import Command, CommandType, encode
from .config import ClusterConfig, NodeConfig, is_loopback_host
from .courier import Courier, CourierSettings
from .deathwatch import refuses_connections
from .errors import ConfigError, RaftschedError
from .executors import ExecPolicy, Executor, executor_for, task_umask, task_user
from .executors.alerts import AlertSender
from .executors.http import HttpExecutor
from .executors.message import MessageExecutor
from .executors.publishers import BrokerSpec
from .model import TaskType
from .records import NodePolicy, NodeRecord
from .replication import RaftSettings, Replicator
from .scheduler import Scheduler, SchedulerSettings
from .secretstore import SecretStore
from .state import State
from .transitions import log_transition
from .worker import Worker, WorkerSettings

__all__ = ["Node", "exec_policy", "private_umask", "published_policy", "run_node"]

log = logging.getLogger(__name__)

# Beyond the drain's grace, a stop has: the hand-over (a 2 s proposal, a 3 s transfer), the last
# reports (5 s), the API's in-flight requests (API_SHUTDOWN_S) and Raft's close.
API_SHUTDOWN_S = 2.0
HAND_BACK_S = 2.0  # a stopping node's hand-back of its unstarted runs: best effort, this long
STOP_OVERRUN_S = 20.0


class _Leadership:
    def __init__(self, raft: Replicator) -> None:
        self.raft = raft

    def is_leader(self) -> bool:
        return self.raft.is_leader()

    def term(self) -> int:
        return self.raft.term()

    def connected_partners(self) -> dict[str, bool]:
        return self.raft.status().connected

    async def change_membership(self, kind: str, addr: str) -> None:
        await self.raft.change_membership(kind, addr)

    async def transfer_leadership(self) -> bool:
        return await self.raft.transfer_leadership()

    async def wait_replicated(self, addr: str) -> bool:
        return await self.raft.wait_replicated(addr)


class Node:
    def __init__(self, cluster: ClusterConfig, node: NodeConfig, clock: Clock | None = None) -> None:
        self.policy = exec_policy(cluster, node, os.environ)  # first: a bad run_as stops the node here
        self.cluster, self.node = cluster, node
        self.clock: Clock = clock or SystemClock()
        self.state = State()
        self.raft = Replicator(_raft_settings(cluster, node), self.state)
        self.scheduler_wake, self.worker_wake = asyncio.Event(), asyncio.Event()
        self._wake_pending = False
        self._executors: dict[TaskType, Executor] = {}
        self._session: aiohttp.ClientSession | None = None  # the clock probes' (made in run())
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------------ wiring

    def _on_applied(self, cmd: Command, result: dict[str, Any]) -> None:
        """Tick thread: coalesce wake-ups into one loop callback at a time."""
        if not self._wake_pending:
            self._wake_pending = True
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._wake_pending = False
        self.worker_wake.set()
        self.scheduler_wake.set()

    def _executor(self, task_type: TaskType) -> Executor:
        if task_type not in self._executors:
            self._executors[task_type] = executor_for(task_type, self.policy)
        return self._executors[task_type]

    def _alert_sender(self) -> AlertSender:
        """Alerts go out through this node's HTTP and message executors (their fences, pools)."""
        http, messages = self._executor(TaskType.HTTP), self._executor(TaskType.MESSAGE)
        assert isinstance(http, HttpExecutor) and isinstance(messages, MessageExecutor)
        return AlertSender(self.policy, http, messages)

    def _caught_up(self) -> bool:
        """A leader is known and this node has applied everything committed (after a restart,
        the log replays first)."""
        status = self.raft.status()
        return status.leader is not None and status.applied_index >= status.commit_index

    async def _barrier(self) -> object:
        """Commit a no-op: once it returns, this node has applied everything committed before."""
        return await self.raft.propose(
            encode(CommandType.NOOP, {"now_ms": self.clock.now_ms()}), timeout_s=3.0
        )

    async def propose(self, data: bytes) -> dict[str, Any]:
        return await self.raft.propose(data)

    # ------------------------------------------------------------------ lifecycle

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.state.listeners.extend((self._on_applied, log_transition))
        self.raft.role_listeners.append(self.scheduler_wake.set)
        self.raft.start()
        c, n = self.cluster, self.node
        scheduler = Scheduler(
            SchedulerSettings(
                node_id=n.id,
                lookahead_s=c.lookahead_s,
                node_timeout_s=c.node_timeout_s,
                history_per_job=c.history_per_job,
                output_tail_bytes=c.output_tail_bytes,
            ),
            self.state,
            _Leadership(self.raft),
            self.propose,
            self.clock,
            self.scheduler_wake,
            probe=refuses_connections,
        )
        worker = Worker(
            WorkerSettings(
                node_id=n.id,
                capacity=n.capacity,
                shutdown_grace_s=n.shutdown_grace_s,
                output_dir=c.node_data_dir(n.id) / "outputs",
                fsync=c.fsync,
            ),
            self.state,
            self.propose,
            self.clock,
            self._executor,
            self.worker_wake,
            ready=self._caught_up,
            barrier=self._barrier,
            log_position=self.raft.log_position,
        )
        clocks = ClockWatch(
            ClockWatchSettings(
                node_id=n.id, max_offset_s=c.max_clock_offset_s, period_s=c.clock_check_period_s
            ),
            self.state,
            self.propose,
            self.clock,
            self._probe_time,
            leading=lambda: scheduler.active_term,
            hand_over=self.raft.transfer_leadership,
        )
        courier = Courier(
            CourierSettings(node_id=n.id), self.state, self.propose, self.clock, self._alert_sender()
        )
        # First, so that `_on_applied`'s wake-up finds the change noted; a new list, since the tick
        # thread may be iterating the old one.
        self.state.listeners = [worker.on_applied, *self.state.listeners]
        runner = await self._start_http()
        session = self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2.0), trust_env=False, cookie_jar=aiohttp.DummyCookieJar()
        )
        log.info("node %s up: api %s, raft %s", n.id, n.http_url, n.raft_addr)
        try:
            async with asyncio.TaskGroup() as group:
                clocks_task = group.create_task(clocks.run())
                scheduler_task = group.create_task(scheduler.run())
                register_task = group.create_task(self._register_loop())
                worker_task = group.create_task(worker.run())
                courier_task = group.create_task(courier.run())
                freeze_task = group.create_task(self._freeze_heap())
                await self.stopping.wait()
                _arm_stop_watchdog(n.shutdown_grace_s)
                freeze_task.cancel()
                log.info("node %s stopping: draining runs for up to %ss", n.id, n.shutdown_grace_s)
                register_task.cancel()
                with _stage("hand-over"):
                    await self._hand_over(worker)
                # Its log is the most caught-up: a stopping node can win the next election again.
                handing_task = group.create_task(self._keep_handing_over())
                with _stage("drain"):
                    await worker.drain(n.shutdown_grace_s)
                handing_task.cancel()
                courier_task.cancel()
                scheduler_task.cancel()
                clocks_task.cancel()
                worker_task.cancel()
                cancelled = time.monotonic()
            log.info("stop: tasks ended in %.3f s", time.monotonic() - cancelled)
        finally:
            with _stage("close"):
                await session.close()
                await runner.cleanup()
                for executor in self._executors.values():
                    await executor.close()
                self.raft.stop()
            log.info("node %s stopped", n.id)

    async def _freeze_heap(self) -> None:
        """Once caught up, move what the node holds (code, configuration, the replayed state) out of
        the cyclic garbage collector's sight: a full collection is a pause of the whole process
        (50-70 ms at 1,000 jobs and their history), and then walks only what changed since.
        Objects frozen are still freed when their last reference goes."""
        while not self._caught_up():  # noqa: ASYNC110 - Raft indexes, polled: no event to wait on
            await asyncio.sleep(0.1)
        gc.collect()
        gc.freeze()
        log.info("heap frozen: %d objects", gc.get_freeze_count())

    async def _probe_time(self, node: NodeRecord) -> float:
        """A peer's wall clock, from its `GET /v1/health` (open without a token)."""
        if self._session is None:
            raise ValueError("the node is not running")
        try:
            async with self._session.get(node.http + "/v1/health") as resp:
                body = await resp.json(content_type=None)
            return float(body["time_ms"])
        except (aiohttp.ClientError, KeyError, TypeError) as exc:
            raise ValueError(f"no time from {node.http}: {exc}") from exc

    async def _start_http(self) -> web.AppRunner:
        services = Services(
            node_id=self.node.id,
            state=self.state,
            raft=self.raft,
            clock=self.clock,
            api_token=self.cluster.api_token,
            max_body_bytes=self.cluster.max_body_bytes,
            browsers=BrowserPolicy.build(
                loopback_bind=is_loopback_host(self.node.http_host),
                allowed_origins=self.cluster.allowed_origins,
            ),
            connections=ConnectionGuard(_connection_limits(self.cluster)),
        )
        runner = ApiRunner(
            make_app(services),
            access_log=None,
            shutdown_timeout=API_SHUTDOWN_S,
            keepalive_timeout=self.cluster.api_idle_timeout_s,
        )
        runner.app[OUTPUT_DIR] = self.cluster.node_data_dir(self.node.id) / "outputs"
        await runner.setup()
        assert runner.server is not None  # setup() made it
        services.connections.install(runner.server)
        context = None
        if self.node.tls_cert is not None and self.node.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.node.tls_cert, self.node.tls_key)
        site = web.TCPSite(
            runner, self.node.http_host, self.node.http_port, ssl_context=context, reuse_address=True
        )
        await site.start()
        return runner

    async def _hand_over(self, worker: Worker) -> None:
        """Before draining: take no new runs and hand back those not started (committed, so the
        leader moves them at once) and, if leading, hand leadership over, so that the cluster keeps
        firing during the drain. A hand-back the cluster refuses falls back to a plain drain; one
        not committed within HAND_BACK_S (no quorum) leaves the runs for the leader to move once
        this node is found down, or to the stale-run rule after a restart."""
        if await worker.hand_back(HAND_BACK_S) is False:  # refused (None: not committed in time)
            with contextlib.suppress(RaftschedError):
                await self._drain_self()
        if self.raft.is_leader() and self.raft.settings.partner_addrs:
            handed = await self.raft.transfer_leadership(timeout_s=3.0)
            if handed:
                log.info("leadership handed over")
            else:
                log.warning("leadership not handed over (no caught-up peer)")

    async def _drain_self(self) -> None:
        await self.raft.propose(
            encode(
                CommandType.DRAIN_NODE,
                {"node": self.node.id, "draining": True, "now_ms": self.clock.now_ms(), "actor": "shutdown"},
            ),
            timeout_s=2.0,
        )

    async def _keep_handing_over(self) -> None:
        """While this node drains, it does not lead: elected again, it hands leadership over again."""
        while self.raft.settings.partner_addrs:
            await asyncio.sleep(0.5)
            if self.raft.is_leader():
                log.info("elected while stopping: handing leadership over again")
                await self.raft.transfer_leadership(timeout_s=3.0)

    async def _register_loop(self) -> None:
        """Keep this node's record (address, tags, capacity, version, the highest command version
        it applies, its policy) current in the state."""
        n = self.node
        policy = published_policy(self.policy)
        while True:
            with self.state.lock:
                record = self.state.nodes.get(n.id)
                removed = n.id in self.state.removed and record is None
                published = self.state.published.get(n.id, 1)
            if removed:
                log.info("node %s was removed from the cluster: stopping", n.id, extra={"node": n.id})
                self.stopping.set()
                return
            wanted = (n.http_url, n.raft_addr, n.tags, n.capacity, __version__, COMMAND_VERSION, policy)
            have = (
                (
                    record.http,
                    record.raft,
                    record.tags,
                    record.capacity,
                    record.version,
                    published,
                    record.policy,
                )
                if record
                else None
            )
            # A draining record that is not leaving is this node's own drain from its last SIGTERM:
            # registering again takes runs again.
            stale = have != wanted or (record is not None and record.draining and not record.leaving)
            if stale and self.raft.status().leader is not None:
                with contextlib.suppress(RaftschedError):
                    await self.propose(
                        encode(
                            CommandType.REGISTER_NODE,
                            {
                                "node": n.id,
                                "http": n.http_url,
                                "raft": n.raft_addr,
                                "tags": n.tags,
                                "capacity": n.capacity,
                                "version": __version__,
                                "commands": COMMAND_VERSION,
                                "now_ms": self.clock.now_ms(),
                                "policy": policy.to_dict(),
                            },
                        )
                    )
            await asyncio.sleep(0.2 if stale else 2.0)


def _connection_limits(cluster: ClusterConfig) -> ConnectionLimits:
    return ConnectionLimits(
        header_timeout_s=cluster.api_header_timeout_s,
        idle_timeout_s=cluster.api_idle_timeout_s,
        max_connections=cluster.api_max_connections,
        max_connections_per_client=cluster.api_max_connections_per_client,
    )


def exec_policy(cluster: ClusterConfig, node: NodeConfig, environ: Mapping[str, str]) -> ExecPolicy:
    """The fences and secrets of this node's runs. Raises ConfigError for a `run_as` this node
    cannot switch to (unknown user, or no privilege): a node must not start and then fail every
    task. Secrets are read once, here, at start: one added later (environment, secrets_file or
    [secrets]) needs a restart of the node."""
    secrets = SecretStore.build(
        environ=environ, file_values=node.file_secrets, section_values=cluster.secrets
    )
    return ExecPolicy(
        allow_shell=node.allow_shell,
        command_allow=node.command_allow,
        run_as=task_user(node.run_as, node.id) if node.run_as is not None else None,
        umask=task_umask(),
        python_allow=node.python_allow,
        python_path=tuple(str(entry) for entry in node.python_path),
        http_allow=node.http_allow,
        output_tail_bytes=cluster.output_tail_bytes,
        output_max_bytes=node.output_max_bytes,
        secrets=secrets,
        brokers=_brokers(cluster, node, secrets),
        message_max_bytes=node.message_max_bytes,
    )


def _brokers(cluster: ClusterConfig, node: NodeConfig, secrets: SecretStore) -> dict[str, BrokerSpec]:
    """The `[broker]` sections that name this node, each password resolved now: a node must not
    start and then fail every message to a broker whose secret it lacks."""
    specs: dict[str, BrokerSpec] = {}
    for broker in cluster.brokers.values():
        if not broker.serves(node.id):
            continue
        password = None
        if broker.password_secret is not None:
            password = secrets.get(broker.password_secret)
            if password is None:
                raise ConfigError(
                    f"broker {broker.name}",
                    "password_secret",
                    f"secret {broker.password_secret!r} is not set",
                )
        specs[broker.name] = BrokerSpec(
            name=broker.name,
            url=broker.url,
            password=password,
            tls_ca=str(broker.tls_ca) if broker.tls_ca else None,
            tls_cert=str(broker.tls_cert) if broker.tls_cert else None,
            tls_key=str(broker.tls_key) if broker.tls_key else None,
        )
    return specs


def published_policy(policy: ExecPolicy) -> NodePolicy:
    """What this node tells the cluster it runs (`eligibility` judges new jobs by it): its fences
    and the names of its secrets, never their values. `command_allow` lists each directory as
    configured and through `realpath` on this host, so that a path written either way is known."""
    dirs = {d for configured in policy.command_allow for d in (configured, os.path.realpath(configured))}
    return NodePolicy(
        run_tasks=True,
        allow_shell=policy.allow_shell,
        command_allow=tuple(sorted(dirs)),
        python_allow=tuple(sorted(policy.python_allow)),
        http_allow=tuple(sorted(str(net) for net in policy.http_allow)),
        secrets=tuple(sorted(policy.secrets.names)),
        brokers=tuple(sorted(policy.brokers)),
    )


def _raft_settings(cluster: ClusterConfig, node: NodeConfig) -> RaftSettings:
    partners = tuple(cluster.nodes[m].raft_addr for m in cluster.members if m != node.id)
    return RaftSettings(
        self_addr=node.raft_addr,
        partner_addrs=partners,
        secret=cluster.secret,
        data_dir=cluster.node_data_dir(node.id),
        raft_min_timeout_s=cluster.raft_min_timeout_s,
        raft_max_timeout_s=cluster.raft_max_timeout_s,
        append_entries_period_s=cluster.append_entries_period_s,
        heartbeat_period_s=cluster.heartbeat_period_s,
        auto_tick_period_s=cluster.auto_tick_period_s,
        leader_fallback_timeout_s=cluster.leader_fallback_timeout_s,
        connection_timeout_s=cluster.connection_timeout_s,
        log_compaction_min_entries=cluster.log_compaction_min_entries,
        log_compaction_min_time_s=cluster.log_compaction_min_time_s,
        fsync=cluster.fsync,
        max_raft_frame_bytes=cluster.max_raft_frame_bytes,
    )


@contextlib.contextmanager
def _stage(name: str) -> Iterator[None]:
    """Log how long one step of the shutdown took: a stop that overruns shows where."""
    began = time.monotonic()
    try:
        yield
    finally:
        log.info("stop: %s ended in %.3f s", name, time.monotonic() - began)


def _arm_stop_watchdog(grace_s: float) -> None:
    """A stop that hangs past its grace (plus the hand-over's and the last reports' bounds) dumps
    every thread's stack to stderr and exits: a supervisor waiting on the process must not wait
    forever, and the dump says what held it."""
    faulthandler.dump_traceback_later(grace_s + STOP_OVERRUN_S, exit=True)


def _dump_tasks() -> None:
    """Where each asyncio task waits: a thread dump shows only the loop's `select`."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        task.print_stack(limit=8, file=out)
    log.warning("asyncio tasks (SIGUSR1):\n%s", out.getvalue())


FDS_PER_RUN = 3  # a shell run's pipes and process; an HTTP run holds one socket
FDS_SPARE = 256  # Raft connections, API clients, the journal, outputs
FDS_WANTED = 1 << 20  # Linux's default ceiling (fs.nr_open)


def raise_open_files_limit(capacity: int) -> int:
    """Lift the soft limit of open files to the hard one and return it. Many systems start
    processes at 1,024, which a node running `capacity` runs at once can pass (an aligned burst
    of HTTP tasks opens a socket per run); the hard limit is what the operator allows."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = FDS_WANTED if hard == resource.RLIM_INFINITY else min(hard, FDS_WANTED)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    except (OSError, ValueError) as exc:
        log.warning("cannot raise the open files limit: %s", exc)
        return -1
    needed = FDS_PER_RUN * capacity + FDS_SPARE
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "open files limit %d is below what capacity %d may need (%d): raise the hard limit "
            "(ulimit -Hn, LimitNOFILE=) or lower capacity",
            soft,
            capacity,
            needed,
            extra={"limit": soft, "capacity": capacity},
        )
    return int(soft)


def private_umask() -> int:
    """Make what the node writes its user's only (umask 0o077: files 0600, directories 0700),
    after remembering the umask it was started with, which its tasks keep (`task_umask`).
    Returns that one. Idempotent; call it before the node writes anything (the CLI does, before
    the config may write a secret)."""
    started = task_umask()
    os.umask(datadir.PRIVATE_UMASK)
    return started


async def run_node(cluster: ClusterConfig, node: NodeConfig) -> int:
    """Run until SIGTERM/SIGINT; return the exit status. Raises ConfigError, before anything
    starts, for a data directory others could write or read (see `datadir`)."""
    private_umask()
    datadir.prepare(cluster.data_dir, cluster.node_data_dir(node.id))
    raise_open_files_limit(node.capacity)
    instance = Node(cluster, node)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, instance.stopping.set)
    # `kill -USR1`: every thread's stack (at once, even with the loop stuck), then every task's.
    loop.add_signal_handler(signal.SIGUSR1, _dump_tasks)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=True)
    await instance.run()
    return 0
