"""The Replicator on real PySyncObj nodes: one process per node, 127.0.0.1 only.

Each node is tests/integration/raft_driver.py (a State + a Replicator on an asyncio loop) in its
own process, driven over stdin/stdout JSON lines. One process per node rather than three
SyncObj in this process because: PySyncObj's tick thread is tied to the thread that built the
SyncObj; compaction forks the whole process (a fork of a process with three tick threads and
pytest's own threads copies their locks: PYSYNCOBJ.md bug 5); `Replicator.start` patches a
module global of pysyncobj (the journal factory), which nodes in one process would share; and
only a separate process can be killed with SIGKILL to test what survives a crash. Every process
is stopped by PID in the fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftsched.commands import CommandType, encode
from raftsched.state import State

from cluster import free_ports
from statekit import T0, job_spec

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("raft_driver.py")
ROOT = Path(__file__).resolve().parents[2]
SECRET = "replication-test-secret-" + "q7Zk" * 10
EMPTY_DIGEST = "0:" + "00" * 16


# ---------------------------------------------------------------------------- commands


def put_job(job_id: str, rid: str | None = None) -> bytes:
    body = {"spec": job_spec(job_id), "now_ms": T0, "mode": "create", "next_nominal_ms": T0 + 1000}
    return encode(CommandType.PUT_JOB, body, rid=rid)


def register_node(node: str) -> bytes:
    return encode(
        CommandType.REGISTER_NODE,
        {
            "node": node,
            "http": f"http://{node}",
            "raft": f"{node}:1",
            "tags": {},
            "capacity": 4,
            "now_ms": T0,
        },
    )


def run_history(incarnation: int, nodes: tuple[str, ...] = ("w1", "w2")) -> list[bytes]:
    """Commands that leave runs, retries, counters and summaries in the state: a snapshot of it
    carries every kind of record. `incarnation`: how many jobs were created before, plus one."""
    cmds = [register_node(n) for n in nodes]
    cmds.append(encode(CommandType.BEGIN_TERM, {"term": 1, "leader": nodes[0], "now_ms": T0}))
    spec = job_spec("r", overlap="allow", retries={"max": 1, "initial_delay": 1, "jitter": 0.5})
    cmds.append(
        encode(
            CommandType.PUT_JOB,
            {"spec": spec, "now_ms": T0, "mode": "create", "next_nominal_ms": T0 + 1000},
            rid="put-r",
        )
    )
    for k in range(1, 7):
        nominal, node = T0 + 1000 * k, nodes[k % len(nodes)]
        item = {
            "job_id": "r",
            "incarnation": incarnation,
            "nominal_ms": nominal,
            "due_ms": nominal,
            "nodes": [node],
            "next_nominal_ms": nominal + 1000,
        }
        cmds.append(
            encode(CommandType.FIRE_RUNS, {"term": 1, "now_ms": nominal - 500, "fires": [item], "skips": []})
        )
        cmds.append(
            encode(
                CommandType.START_RUNS,
                {
                    "node": node,
                    "now_ms": nominal,
                    "items": [{"run_id": f"r@{nominal}", "attempt": 1, "started_ms": nominal + 3}],
                },
            )
        )
        outcome = "failed" if k % 3 == 0 else "succeeded"  # a failure moves the run to its retry
        cmds.append(
            encode(
                CommandType.FINISH_RUNS,
                {
                    "node": node,
                    "now_ms": nominal + 50,
                    "items": [
                        {
                            "run_id": f"r@{nominal}",
                            "attempt": 1,
                            "outcome": outcome,
                            "finished_ms": nominal + 50,
                            "exit_code": 0 if outcome == "succeeded" else 1,
                            "output": f"out {k}",
                            "error": "boom",
                        }
                    ],
                },
            )
        )
    return cmds


# ---------------------------------------------------------------------------- harness


class Node:
    """One driver process; `call` sends a request and waits (bounded) for its reply."""

    def __init__(self, name: str, cfg: dict[str, Any], log_path: Path) -> None:
        self.name = name
        self.cfg = cfg
        self.addr: str = cfg["self_addr"]
        self.data_dir = Path(cfg["data_dir"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._reader: threading.Thread | None = None
        self._next_id = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(DRIVER), json.dumps(self.cfg)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"},
            )
        self._replies = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc, self._replies), daemon=True)
        self._reader.start()
        first = self._replies.get(timeout=20)
        assert first is not None and first.get("ready"), f"{self.name} did not start\n{self.logs()}"

    @staticmethod
    def _read(proc: subprocess.Popen[bytes], replies: queue.Queue[dict[str, Any] | None]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(Exception):
            for line in proc.stdout:
                with contextlib.suppress(ValueError):
                    replies.put(json.loads(line))
        replies.put(None)

    def call(self, op: str, timeout: float = 10.0, **params: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None and self.running, f"{self.name} is down"
        self._next_id += 1
        want = self._next_id
        self.proc.stdin.write((json.dumps({"id": want, "op": op, **params}) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                reply = self._replies.get(timeout=remaining)
            except queue.Empty:
                break
            if reply is None:
                raise AssertionError(f"{self.name} exited during {op}\n{self.logs()}")
            if reply.get("id") == want:
                return reply
        raise AssertionError(f"{self.name}: no reply to {op} within {timeout} s\n{self.logs()}")

    def status(self) -> dict[str, Any]:
        for _ in range(3):  # a read racing the tick thread may fail: read again
            st = self.call("status", timeout=5)
            if "error" not in st:
                return st
            time.sleep(0.01)
        raise AssertionError(f"{self.name}: status failed: {st}\n{self.logs()}")

    def propose(self, data: bytes, timeout_s: float = 10.0) -> dict[str, Any]:
        """The raw reply: {"result": ...} or {"error": class name, "message": ...}, and "elapsed"."""
        return self.call("propose", timeout=timeout_s + 10, data=data.decode(), timeout_s=timeout_s)

    def kill(self) -> None:
        """SIGKILL by PID: nothing is flushed, the journal keeps what the page cache holds."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        self._close(proc)

    def stop(self) -> None:
        """A clean stop (Replicator.stop), SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        with contextlib.suppress(Exception):
            if self.running:
                self.call("stop", timeout=5)
            self.proc.wait(10)
        self.kill()

    def _close(self, proc: subprocess.Popen[bytes]) -> None:
        for pipe in (proc.stdin, proc.stdout):
            with contextlib.suppress(Exception):
                if pipe is not None:
                    pipe.close()
        if self._reader is not None:
            self._reader.join(5)
            self._reader = None

    def logs(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- {self.name} log ---\n{text[-4000:]}"


class RaftCluster:
    def __init__(
        self, root: Path, size: int = 3, secrets: dict[str, str] | None = None, **settings: Any
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(size)
        self.names = [f"n{i + 1}" for i in range(size)]
        addrs = {name: f"127.0.0.1:{port}" for name, port in zip(self.names, ports, strict=True)}
        self.nodes: dict[str, Node] = {}
        for name in self.names:
            cfg = {
                "self_addr": addrs[name],
                "partner_addrs": [a for n, a in addrs.items() if n != name],
                "secret": (secrets or {}).get(name, SECRET),
                "data_dir": str(root / name),
                **settings,
            }
            self.nodes[name] = Node(name, cfg, root / f"{name}.log")
        self.by_addr = {addr: name for name, addr in addrs.items()}

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    def start(self, *names: str) -> None:
        """Start nodes one after the other, lowest Raft address first.

        PySyncObj dials only from the higher address to the lower one and retries a failed dial
        after `connectionRetryTime` (5 s; RaftSettings does not set it). A node started after its
        lower peers are bound connects at once; in another order the cluster waits up to 5 s."""
        for name in sorted(names or self.names, key=lambda n: self.nodes[n].addr):
            self.nodes[name].start()

    def running(self) -> list[str]:
        return [n for n in self.names if self.nodes[n].running]

    def close(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.kill()

    def logs(self) -> str:
        return "\n".join(node.logs() for node in self.nodes.values())

    def wait_leader(self, among: list[str] | None = None, timeout: float = 20) -> str:
        """The name of the leader that every node of `among` (default: all running) follows."""
        among = among or self.running()
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = {n: self.nodes[n].status() for n in among}
            leaders = {st["leader"] for st in seen.values()}
            if len(leaders) == 1 and (addr := leaders.pop()) in self.by_addr:
                name = self.by_addr[addr]
                if name in seen and seen[name]["role"] == "leader":
                    return name
            time.sleep(0.1)
        raise AssertionError(
            f"no leader: { {n: (s['role'], s['leader']) for n, s in seen.items()} }\n" + self.logs()
        )

    def propose_ok(self, name: str, data: bytes, timeout_s: float = 10.0) -> dict[str, Any]:
        reply = self.nodes[name].propose(data, timeout_s)
        assert "result" in reply, f"propose on {name} failed: {reply}\n{self.logs()}"
        result: dict[str, Any] = reply["result"]
        return result

    def wait_converged(self, among: list[str] | None = None, timeout: float = 20) -> dict[str, Any]:
        """Wait until the nodes have applied everything committed and hold the same state.

        Returns one node's status; the same digest (count + rolling hash of applied entries) and
        the same full state dump (hashed) on every node."""
        among = among or self.running()
        deadline = time.monotonic() + timeout
        seen: dict[str, Any] = {}
        while time.monotonic() < deadline:
            seen = {n: self.nodes[n].status() for n in among}
            caught_up = all(st["applied_index"] >= st["commit_index"] for st in seen.values())
            if caught_up and len({(st["digest"], st["dump_sha"]) for st in seen.values()}) == 1:
                return seen[among[0]]
            time.sleep(0.1)
        raise AssertionError(f"not converged: { {n: s['digest'] for n, s in seen.items()} }\n" + self.logs())

    def compact(self, names: list[str], timeout: float = 15) -> None:
        """Force a compaction on each node and wait until its forked child has written raft.dump,
        been reaped, and the journal was truncated to the snapshot."""
        before = {n: self.nodes[n].status()["first_log_index"] for n in names}
        for n in names:
            assert "error" not in self.nodes[n].call("compact")
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for n in list(pending):
                st = self.nodes[n].status()
                truncated = (st["first_log_index"] or 0) > (before[n] or 1)
                if st["dump_file"] and not st["serializing"] and truncated:
                    pending.discard(n)
            time.sleep(0.05)
        assert not pending, f"compaction did not finish on {sorted(pending)}\n{self.logs()}"


@pytest.fixture
def raft(tmp_path: Path) -> Iterator[Callable[..., RaftCluster]]:
    made: list[RaftCluster] = []

    def factory(**kwargs: Any) -> RaftCluster:
        cluster = RaftCluster(tmp_path / f"c{len(made)}", **kwargs)
        made.append(cluster)
        return cluster

    yield factory
    for cluster in made:
        cluster.close()


def _followers(cluster: RaftCluster, leader: str) -> list[str]:
    return [n for n in cluster.names if n != leader]


# ---------------------------------------------------------------------------- tests


def test_follower_proposal_commits_on_every_node(raft: Callable[..., RaftCluster]) -> None:
    c = raft()
    c.start()
    leader = c.wait_leader()
    follower = _followers(c, leader)[0]

    assert c.propose_ok(follower, register_node("n1")) == {"ok": True}
    created = c.propose_ok(follower, put_job("j1", rid="req-1"))
    assert created == {"ok": True, "job_id": "j1", "version": 1, "created": True}
    # A retry with the same request id is answered from the state's table, not applied again.
    again = c.propose_ok(follower, put_job("j1", rid="req-1"))
    assert again == {**created, "duplicate": True}
    # Without a request id the second create is a rejection value, not an error.
    assert c.propose_ok(leader, put_job("j1"))["code"] == "already_exists"

    st = c.wait_converged()
    assert st["jobs"] == {"j1": 1}
    assert st["digest"].startswith("4:")


def test_exception_inside_a_command_does_not_wedge_the_cluster(raft: Callable[..., RaftCluster]) -> None:
    c = raft()
    c.start()
    leader = c.wait_leader()
    follower = _followers(c, leader)[0]

    # put_job without now_ms: JobSpec parses, then the handler raises KeyError('now_ms').
    no_time = encode(CommandType.PUT_JOB, {"spec": job_spec("broken"), "mode": "create"})
    bad = c.propose_ok(follower, no_time)
    assert bad == {"ok": False, "code": "internal", "message": "KeyError: 'now_ms'", "field": None}

    # fire_runs in the current term whose fire item lacks job_id: raises inside _slot_job.
    begin = encode(CommandType.BEGIN_TERM, {"term": 1, "leader": "n1", "now_ms": T0})
    assert c.propose_ok(leader, begin)["ok"]
    no_job = encode(
        CommandType.FIRE_RUNS, {"term": 1, "now_ms": T0, "fires": [{"incarnation": 1}], "skips": []}
    )
    bad = c.propose_ok(follower, no_job)
    assert bad["code"] == "internal" and "KeyError" in bad["message"]

    # The log moves on: later commands commit and apply everywhere, exactly once.
    assert c.propose_ok(follower, put_job("after"))["ok"]
    assert c.propose_ok(leader, put_job("after-2"))["ok"]
    st = c.wait_converged()
    assert st["jobs"] == {"after": 1, "after-2": 1}
    assert st["digest"].startswith("5:")
    for name in c.names:
        node = c[name].status()
        assert node["tick_alive"] and node["applied_index"] == node["commit_index"], node


@pytest.mark.parametrize("fsync", [False, True], ids=["page-cache", "fsync"])
def test_restart_of_every_node_after_compaction_keeps_the_state(
    raft: Callable[..., RaftCluster], fsync: bool
) -> None:
    c = raft(fsync=fsync)
    c.start()
    leader = c.wait_leader()
    assert c[leader].status()["journal"] == ("_SyncedJournal" if fsync else "FileJournal")
    for i in range(8):
        assert c.propose_ok(leader, put_job(f"j{i}"))["ok"]
    history = run_history(incarnation=9)
    for cmd in history:
        result = c.propose_ok(leader, cmd)
        assert result["ok"] and result.get("fired", [1]) and result.get("accepted", [1]), result
    c.wait_converged()
    c.compact(c.names)
    # Entries after the snapshot: a restart must load the dump and replay the journal on top.
    follower = _followers(c, leader)[0]
    for i in range(8, 11):
        assert c.propose_ok(follower, put_job(f"j{i}"))["ok"]
    before = c.wait_converged()
    applied = 8 + len(history) + 3
    assert len(before["jobs"]) == 12 and before["runs"] == 6 and before["digest"].startswith(f"{applied}:")
    assert all((c[n].status()["first_log_index"] or 0) > 1 for n in c.names), "the journal was not truncated"

    for name in c.names:
        c[name].kill()
    c.start()
    c.wait_leader()
    after = c.wait_converged()
    assert (after["digest"], after["dump_sha"], after["jobs"]) == (
        before["digest"],
        before["dump_sha"],
        before["jobs"],
    )
    assert all(c[n].status()["snapshot_loaded"] for n in c.names), "state came back without the dump"
    # And the restarted cluster takes writes.
    assert c.propose_ok(c.wait_leader(), put_job("later"))["ok"]
    assert c.wait_converged()["digest"].startswith(f"{applied + 1}:")


def test_single_node_restart_after_compaction_catches_up(raft: Callable[..., RaftCluster]) -> None:
    c = raft()
    c.start()
    leader = c.wait_leader()
    for i in range(6):
        assert c.propose_ok(leader, put_job(f"j{i}"))["ok"]
    c.wait_converged()
    c.compact(c.names)
    victim, other = _followers(c, leader)
    assert c.propose_ok(leader, put_job("j6"))["ok"]  # in the victim's journal after its dump
    c.wait_converged()

    c[victim].kill()
    for i in range(7, 15):
        assert c.propose_ok(other, put_job(f"j{i}"))["ok"]
    ahead = c.wait_converged([leader, other])

    c[victim].start()
    st = c.wait_converged(timeout=20)
    assert (st["digest"], st["dump_sha"]) == (ahead["digest"], ahead["dump_sha"])
    caught_up = c[victim].status()
    assert caught_up["jobs"] == {f"j{i}": 1 for i in range(15)}
    assert caught_up["snapshot_loaded"]  # its own raft.dump, then its journal, then the leader's entries


def test_lagging_follower_installs_a_snapshot(raft: Callable[..., RaftCluster]) -> None:
    c = raft(log_compaction_min_entries=20)
    c.start()
    leader = c.wait_leader()
    lagging, other = _followers(c, leader)
    for i in range(3):
        assert c.propose_ok(leader, put_job(f"j{i}"))["ok"]
    at_stop = c.wait_converged()
    c[lagging].kill()
    assert not (c[lagging].data_dir / "raft.dump").exists(), "the follower compacted before the test meant it"

    # Enough entries that the others compact past everything the lagging follower has, with
    # runs, retries and counters in the snapshot.
    for k, cmd in enumerate(run_history(incarnation=4)):
        result = c.propose_ok(other if k % 2 else leader, cmd)
        assert result["ok"] and result.get("fired", [1]) and result.get("accepted", [1]), result
    for i in range(3, 40):
        assert c.propose_ok(other if i % 2 else leader, put_job(f"j{i}"))["ok"]
    deadline = time.monotonic() + 15
    while (c[leader].status()["first_log_index"] or 0) <= at_stop["commit_index"] + 1:
        assert time.monotonic() < deadline, f"the leader did not compact\n{c.logs()}"
        time.sleep(0.05)
    ahead = c.wait_converged([leader, other])

    # The leader's dump file was written by the forked child: the state in it is plain orjson bytes.
    with gzip.open(c[leader].data_dir / "raft.dump", "rb") as f:
        dumped = pickle.load(f)
    snapshot = dumped[0][1]["state"]
    assert type(snapshot) is bytes
    probe = State()
    probe.load(snapshot)
    assert len(probe.jobs) >= 10 and probe.runs["r@1800000003000"].attempt == 2  # retried

    c[lagging].start()
    st = c.wait_converged(timeout=20)
    assert (st["digest"], st["dump_sha"]) == (ahead["digest"], ahead["dump_sha"])
    caught_up = c[lagging].status()
    assert caught_up["snapshot_loaded"], "the follower caught up without a snapshot"
    assert caught_up["dump_file"]  # the transmitted snapshot, kept as its own dump
    assert caught_up["jobs"] == {"r": 1, **{f"j{i}": 1 for i in range(40)}}
    assert caught_up["runs"] == 6
    # It keeps following after the install.
    assert c.propose_ok(lagging, put_job("after"))["ok"]
    assert c.wait_converged()["jobs"]["after"] == 1


def test_no_quorum_on_the_old_leader_is_no_leader(raft: Callable[..., RaftCluster]) -> None:
    """The survivor is the leader: after leaderFallbackTimeout (0.5 s by default) without answers from a
    majority it steps down and knows no leader, so every attempt fails at once with
    MISSING_LEADER (surely not applied): propose raises NoLeader at its deadline."""
    c = raft()
    c.start()
    leader = c.wait_leader()
    assert c.propose_ok(leader, put_job("j0"))["ok"]
    before = c.wait_converged()
    for name in _followers(c, leader):
        c[name].kill()

    deadline = time.monotonic() + 5
    while (st := c[leader].status())["role"] != "follower" or st["leader"] is not None:
        assert time.monotonic() < deadline, f"the isolated leader did not step down: {st}"
        time.sleep(0.05)
    reply = c[leader].propose(put_job("j1"), timeout_s=2)
    assert reply.get("error") == "NoLeader", reply
    assert "missing_leader" in reply["message"] or "not connected to any peer" in reply["message"]
    assert 1.9 <= reply["elapsed"] < 3.0, reply
    assert c[leader].status()["digest"] == before["digest"]


def test_no_quorum_on_an_isolated_follower_is_not_applied(raft: Callable[..., RaftCluster]) -> None:
    """The survivor is a follower: PySyncObj starts an election only when connected to some peer
    and never clears the leader otherwise, so it would keep forwarding to the dead leader, where
    the send is dropped silently. `propose` sees that no peer is connected and does not submit:
    the answer is a definite NoLeader (not applied), not a time-out counted as Indeterminate."""
    c = raft()
    c.start()
    leader = c.wait_leader()
    survivor, other = _followers(c, leader)
    assert c.propose_ok(survivor, put_job("j0"))["ok"]
    before = c.wait_converged()
    c[leader].kill()
    c[other].kill()
    time.sleep(0.3)

    reply = c[survivor].propose(put_job("j1"), timeout_s=2)
    assert reply.get("error") == "NoLeader", reply
    assert "not connected to any peer" in reply["message"]
    assert 1.9 <= reply["elapsed"] < 3.0, reply
    st = c[survivor].status()
    assert st["leader"] == c[leader].addr and not any(st["connected"].values()), st
    assert st["digest"] == before["digest"]


def test_node_with_another_secret_cannot_join(raft: Callable[..., RaftCluster]) -> None:
    c = raft(secrets={"n3": "another-secret-" + "Zp4w" * 10})
    c.start()
    leader = c.wait_leader(among=["n1", "n2"])
    for i in range(5):
        assert c.propose_ok(leader, put_job(f"j{i}"))["ok"]
    good = c.wait_converged(["n1", "n2"])
    assert len(good["jobs"]) == 5

    time.sleep(1.5)  # heartbeats every 20 ms, reconnect attempts: n3 had every chance to get entries
    intruder = c["n3"].status()
    assert intruder["digest"] == EMPTY_DIGEST and intruder["jobs"] == {}, intruder
    assert intruder["leader"] is None and intruder["term"] == 0, intruder
    assert not any(intruder["connected"].values()), intruder
    for name in ("n1", "n2"):
        st = c[name].status()
        assert st["connected"][c["n3"].addr] is False, st
        assert st["digest"] == good["digest"]
    # Nor can it write: it knows no leader.
    reply = c["n3"].propose(put_job("evil"), timeout_s=1)
    assert reply.get("error") == "NoLeader", reply
    assert "evil" not in c.wait_converged(["n1", "n2"])["jobs"]
