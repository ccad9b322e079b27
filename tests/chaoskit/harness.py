"""ChaosCluster: tests/cluster.py's Cluster with the fault vocabulary of TESTING.md.

- every node runs under its own test-only group id (numeric, no group entry to create or remove;
  the uid stays 0 because the interpreter lives under /root, mode 0700), so that iptables can tell
  nodes apart on `lo` with `-m owner --gid-owner` (TESTING.md recipe (a) with gids for uids:
  PySyncObj does not bind its outgoing sockets, so every connection leaves from 127.0.0.1). A
  mangle rule marks each connection with the gid of the node that opened it (CONNMARK); a cut
  drops, in OUTPUT on `lo`, the packets of every connection between the two nodes in both
  directions (opened by A to B's Raft port, or by B to A's). The admin API stays reachable, as
  Jepsen's control node reaches every node;
- `isolate(node)`, `partition(a, b)`, `split(side_a, side_b)`, `heal()`: silent cuts (DROP);
  `isolate_rejecting(node)`: a cut that answers with TCP resets (REJECT); every rule is tagged
  `-m comment --comment raftsched-chaos-<pid>-<n>` and removed in `close()`; rules left by a
  harness that was killed (its pid gone) are removed when the next one starts;
- `clock_offset(node, s)`: libfaketime with a constant offset from the node's next start on
  (never a step: PySyncObj needs a clock that does not go back); the offset sticks to the node;
- `damage_journal(node, mode)` while the node is stopped: truncate mid-record or flip bytes;
- `observe()`: a thread per node polling /v1/status (role, term, leader) for failover times and
  two-leader windows, and /proc for CPU and memory.

Without root (or without iptables / faketime) the harness still runs; `partition_unavailable()`
and `clock_unavailable()` say why a fault cannot be injected, so tests skip with that message.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster import Cluster

__all__ = [
    "ChaosCluster",
    "Firewall",
    "Observer",
    "clock_unavailable",
    "make_root",
    "partition_unavailable",
]

TAG = "raftsched-chaos-"
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
GID_BASE = 300_000  # test-only gids: no group entries, far above any real group


def _iptables() -> str | None:
    for candidate in (shutil.which("iptables"), "/usr/sbin/iptables", "/sbin/iptables"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def partition_unavailable() -> str | None:
    """Why partitions cannot be injected here, or None when they can."""
    if os.geteuid() != 0:
        return "partitions need root (iptables rules and per-node gids); run as root"
    if _iptables() is None:
        return "iptables is missing: run scripts/install-chaos-tools as root"
    return None


def clock_unavailable() -> str | None:
    if not os.path.exists(LIBFAKETIME):
        return f"libfaketime is missing ({LIBFAKETIME}): run scripts/install-chaos-tools as root"
    return None


def make_root(prefix: str = "raftsched-chaos-") -> Path:
    """A run directory that other uids can traverse (pytest's tmp_path is 0700 under root)."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Firewall:
    """iptables rules on `lo`, each tagged with this run's comment; `remove_all()` removes them."""

    def __init__(self) -> None:
        self.binary = _iptables() or "iptables"
        self.comment = f"{TAG}{os.getpid()}-{random.randrange(1 << 30)}"
        self.rules: list[tuple[str, str, list[str]]] = []
        self.lock = threading.Lock()

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-w", "5", *args], capture_output=True, text=True, check=check, timeout=30
        )

    def add(self, table: str, chain: str, spec: list[str]) -> None:
        """Append `spec` (matches, then `-j TARGET` and the target's options) with this run's tag
        among the matches: a target's options must follow `-j` (REJECT's `--reject-with`)."""
        at = spec.index("-j")
        full = [*spec[:at], "-m", "comment", "--comment", self.comment, *spec[at:]]
        with self.lock:
            self._run(["-t", table, "-A", chain, *full])
            self.rules.append((table, chain, full))

    def remove(self, predicate: Any = None) -> int:
        """Remove this run's rules (those matching `predicate(table, chain, spec)`); newest first."""
        removed = 0
        with self.lock:
            keep = []
            for table, chain, spec in reversed(self.rules):
                if predicate is not None and not predicate(table, chain, spec):
                    keep.append((table, chain, spec))
                    continue
                self._run(["-t", table, "-D", chain, *spec], check=False)
                removed += 1
            self.rules = list(reversed(keep))
        return removed

    def remove_all(self) -> int:
        return self.remove()

    @classmethod
    def remove_leftovers(cls) -> list[str]:
        """Delete rules tagged by a chaos harness whose process is gone (a run that was killed)."""
        binary = _iptables()
        if binary is None or os.geteuid() != 0:
            return []
        removed = []
        for table in ("filter", "mangle"):
            listing = subprocess.run(
                [binary, "-w", "5", "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout
            for line in listing.splitlines():
                if TAG not in line or not line.startswith("-A "):
                    continue
                words = shlex.split(line)
                tag = words[words.index("--comment") + 1] if "--comment" in words else ""
                try:
                    owner = int(tag[len(TAG) :].split("-")[0])
                except ValueError:
                    owner = -1
                if owner > 0 and _alive(owner) and owner != os.getpid():
                    continue  # another chaos run, still going: leave its rules alone
                subprocess.run([binary, "-w", "5", "-t", table, "-D", *words[1:]], check=False)
                removed.append(f"{table}: {line}")
        return removed


@dataclass
class Sample:
    mono: float
    node: str
    ok: bool
    role: str | None = None
    term: int | None = None
    scheduler_term: int | None = None
    leader: str | None = None


class Observer:
    """Polls every node's /v1/status (each node its own thread, so a paused one delays no other),
    and /proc for CPU seconds and resident memory."""

    def __init__(self, cluster: ChaosCluster, period_s: float = 0.1) -> None:
        self.cluster = cluster
        self.period_s = period_s
        self.samples: list[Sample] = []
        self.resources: dict[str, dict[str, float]] = {}
        self._cpu_base: dict[tuple[str, int], float] = {}
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self.lock = threading.Lock()

    def start(self) -> None:
        for node in self.cluster.ids:
            t = threading.Thread(target=self._poll, args=(node,), daemon=True, name=f"observe-{node}")
            self._threads[node] = t
            t.start()
        t = threading.Thread(target=self._resources, daemon=True, name="observe-proc")
        self._threads["proc"] = t
        t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads.values():
            t.join(5)

    def _poll(self, node: str) -> None:
        while not self._stop.is_set():
            if node not in self.cluster.procs:
                self._stop.wait(self.period_s)
                continue
            now = time.monotonic()
            try:
                code, st = self.cluster.api(node, "GET", "/v1/status", timeout=0.5)
            except (OSError, ValueError):
                code, st = 0, None
            if code == 200 and st:
                sample = Sample(
                    now, node, True, st["role"], st["term"], st.get("scheduler_term"), st["leader"]
                )
            else:
                sample = Sample(now, node, False)
            with self.lock:
                self.samples.append(sample)
            self._stop.wait(self.period_s)

    def _resources(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        while not self._stop.is_set():
            with contextlib.suppress(RuntimeError):
                procs = list(self.cluster.procs.items())
            for node, proc in procs:
                try:
                    stat = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                    cpu = (int(stat[11]) + int(stat[12])) / tick
                    rss_kb = next(
                        int(line.split()[1])
                        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                        if line.startswith("VmRSS:")
                    )
                except (OSError, StopIteration, IndexError, ValueError):
                    continue
                with self.lock:
                    r = self.resources.setdefault(node, {"cpu_s": 0.0, "max_rss_mb": 0.0})
                    key = (node, proc.pid)
                    r["cpu_s"] += cpu - self._cpu_base.get(key, 0.0)
                    self._cpu_base[key] = cpu
                    r["max_rss_mb"] = max(r["max_rss_mb"], rss_kb / 1024)
            self._stop.wait(1.0)

    def snapshot(self) -> list[Sample]:
        with self.lock:
            return list(self.samples)


@dataclass
class ChaosCluster(Cluster):
    """A Cluster whose nodes run under their own gids, with partitions, clock offsets and damage."""

    use_gids: bool | None = None  # each node under its own gid; None: when running as root
    offsets: dict[str, float] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.use_gids is None:
            self.use_gids = os.geteuid() == 0
        base = GID_BASE + (os.getpid() % 20_000) * 16
        self.gids = {node: base + 1 + i for i, node in enumerate(self.ids)}
        self.gt_dir = self.root / "gt"
        self.gt_dir.mkdir(exist_ok=True)
        self.gt_dir.chmod(0o1777)
        (self.root / "data").mkdir(exist_ok=True)
        self.firewall: Firewall | None = None
        self.cuts: set[tuple[str, str]] = set()
        self.observer = Observer(self)
        (self.root / "harness.pid").write_text(str(os.getpid()))
        if partition_unavailable() is None and self.use_gids:
            Firewall.remove_leftovers()
            self.firewall = Firewall()
            for node in self.ids:
                gid = str(self.gids[node])
                self.firewall.add(
                    "mangle",
                    "OUTPUT",
                    [
                        "-o",
                        "lo",
                        "-p",
                        "tcp",
                        "-m",
                        "owner",
                        "--gid-owner",
                        gid,
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "NEW",
                        "-j",
                        "CONNMARK",
                        "--set-mark",
                        gid,
                    ],
                )

    # ------------------------------------------------------------ processes

    def data_dir(self, node: str) -> Path:
        return self.root / "data" / node

    def journal(self, node: str) -> Path:
        return self.data_dir(node) / "raft.journal"

    def _prepare(self, node: str) -> None:
        d = self.data_dir(node)
        d.mkdir(parents=True, exist_ok=True)

    def command(self, node: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "raftsched",
            "node",
            "--config",
            str(self.config),
            "--node",
            node,
            "--log-level",
            "info",
        ]

    def start(self, *nodes: str) -> None:
        for node in nodes or self.ids:
            self._prepare(node)
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOME": str(self.data_dir(node))}
            src = os.environ.get("RAFTSCHED_CHAOS_SRC")  # test another checkout (a commit, not the tree)
            if src:
                env["PYTHONPATH"] = src
            offset = self.offsets.get(node)
            if offset:
                env.update(LD_PRELOAD=LIBFAKETIME, FAKETIME=f"{offset:+.3f}")
            extra: dict[str, Any] = {}
            if self.use_gids:
                # uid 0 keeps reading the interpreter under /root; the node's own gid tells it apart
                extra = {"group": self.gids[node], "extra_groups": []}
            with (self.root / f"{node}.log").open("ab") as log:
                log.write(f"=== start {time.strftime('%H:%M:%S')} offset={offset or 0}\n".encode())
                log.flush()
                self.procs[node] = subprocess.Popen(
                    self.command(node), stdout=log, stderr=subprocess.STDOUT, cwd=self.root, env=env, **extra
                )
            self._write_pids()

    def _write_pids(self) -> None:
        with contextlib.suppress(OSError, RuntimeError):
            pids = " ".join(str(p.pid) for p in list(self.procs.values()))
            (self.root / "node.pids").write_text(pids)

    def note(self, kind: str, **details: Any) -> dict[str, Any]:
        """Record a fault in the history (monotonic and wall time)."""
        entry = {"kind": kind, "mono": time.monotonic(), "wall_ms": time.time() * 1000, **details}
        self.faults.append(entry)
        return entry

    def kill(self, node: str) -> None:
        self.note("kill", node=node)
        super().kill(node)

    def stop(self, node: str, timeout: float = 20) -> int:
        self.note("stop", node=node)
        return super().stop(node, timeout)

    def pause(self, node: str) -> None:
        self.note("pause", node=node)
        super().pause(node)

    def resume(self, node: str) -> None:
        self.note("resume", node=node)
        super().resume(node)

    def restart(self, node: str) -> None:
        if node in self.procs:
            self.kill(node)
        self.note("start", node=node)
        self.start(node)

    def exit_status(self, node: str, timeout: float = 10) -> int | None:
        """The status of a node that exited by itself (None while it runs)."""
        proc = self.procs.get(node)
        if proc is None:
            return None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        del self.procs[node]
        return code

    # ------------------------------------------------------------ partitions

    def partition_ready(self) -> str | None:
        if self.firewall is None:
            return partition_unavailable() or "nodes do not run under their own gids"
        return None

    def _cut(self, a: str, b: str) -> None:
        """Drop every packet of every connection between a and b (either opened it)."""
        self._drop(a, b)
        self._drop(b, a)

    def _drop(self, src: str, dst: str) -> None:
        """Drop the packets src sends to dst on their Raft connections, whichever side opened one
        (its connmark is the opener's gid): dst's packets still reach src."""
        assert self.firewall is not None, self.partition_ready()
        if (src, dst) in self.cuts:
            return
        g_src, g_dst = str(self.gids[src]), str(self.gids[dst])
        r_src, r_dst = str(self.ports[src][0]), str(self.ports[dst][0])
        for mark, port_key, port in ((g_src, "--dport", r_dst), (g_dst, "--sport", r_src)):
            self.firewall.add(
                "filter",
                "OUTPUT",
                [
                    "-o",
                    "lo",
                    "-p",
                    "tcp",
                    "-m",
                    "connmark",
                    "--mark",
                    mark,
                    "-m",
                    "tcp",
                    port_key,
                    port,
                    "-j",
                    "DROP",
                ],
            )
        self.cuts.add((src, dst))

    def cut_one_way(self, src: str, dst: str) -> None:
        """An asymmetric cut: what src sends to dst is lost, what dst sends to src arrives."""
        self.note("cut", nodes=[src, dst], src=src, dst=dst)
        self._drop(src, dst)

    def partition(self, a: str, b: str) -> None:
        self.note("partition", nodes=[a, b])
        self._cut(a, b)

    def split(self, side_a: list[str], side_b: list[str]) -> None:
        self.note("split", side_a=list(side_a), side_b=list(side_b))
        for a in side_a:
            for b in side_b:
                self._cut(a, b)

    def isolate(self, node: str) -> None:
        self.note("isolate", node=node)
        for other in self.ids:
            if other != node:
                self._cut(node, other)

    def isolate_rejecting(self, node: str) -> None:
        """Cut `node` off with TCP resets instead of silence (`REJECT --reject-with tcp-reset`):
        every packet to its Raft or HTTP port is answered with a reset (a connect is refused, a
        connection is reset), and so is every packet it sends to another node's ports. To its
        peers it looks exactly like a dead process (docs/design.md, "Death detection"), though it
        runs on. The admin API cannot reach it either. `heal()` removes the rules."""
        assert self.firewall is not None, self.partition_ready()
        self.note("isolate", node=node, reject=True)  # the checkers' fault windows: an isolation
        own = ",".join(str(port) for port in self.ports[node])
        others = ",".join(str(port) for other in self.ids if other != node for port in self.ports[other])
        reset = ["-j", "REJECT", "--reject-with", "tcp-reset"]
        self.firewall.add(
            "filter", "INPUT", ["-i", "lo", "-p", "tcp", "-m", "multiport", "--dports", own, *reset]
        )
        self.firewall.add(
            "filter",
            "OUTPUT",
            [
                "-o",
                "lo",
                "-p",
                "tcp",
                "-m",
                "owner",
                "--gid-owner",
                str(self.gids[node]),
                "-m",
                "multiport",
                "--dports",
                others,
                *reset,
            ],
        )

    def heal(self) -> None:
        self.note("heal")
        if self.firewall is not None:
            self.firewall.remove(lambda table, chain, spec: table == "filter")
        self.cuts.clear()

    # ------------------------------------------------------------ clocks and disks

    def clock_offset(self, node: str, seconds: float, restart: bool = True) -> None:
        """A constant offset (wall and monotonic, libfaketime) from the node's next start on."""
        reason = clock_unavailable()
        assert reason is None, reason
        self.offsets[node] = seconds
        self.note("clock", node=node, offset_s=seconds)
        if restart and node in self.procs:
            self.stop(node)
            self.start(node)

    def damage_journal(self, node: str, mode: str, rng: random.Random | None = None) -> dict[str, Any]:
        """Damage a stopped node's journal: `truncate` (cut inside the last record), `flip` (invert a
        byte inside a record's payload) or `flip-json` (change one digit inside a command's JSON).
        Returns what was done."""
        assert node not in self.procs, "stop the node first"
        rng = rng or random.Random(0)
        path = self.journal(node)
        data = bytearray(path.read_bytes())
        last = struct.unpack("<I", data[36:40])[0]  # PySyncObj's last-record offset, after the header
        records = []
        offset = 40
        while offset < last:
            size = struct.unpack("<I", data[offset : offset + 4])[0]
            records.append((offset, size))
            offset += size + 8
        info: dict[str, Any] = {"node": node, "mode": mode, "records": len(records), "size": len(data)}
        if mode == "truncate":
            cut = records[-1][0] + 4 + records[-1][1] // 2 if records else 40
            with path.open("r+b") as f:
                f.truncate(cut)
            info["truncated_to"] = cut
        elif mode == "flip":
            if not records:
                raise ValueError("the journal has no records to flip")
            start, size = records[rng.randrange(max(1, len(records) // 2), len(records))]
            payload = start + 4 + 16  # after the length and the (idx, term) pair
            where = rng.randrange(payload, start + 4 + size)
            data[where] ^= 0xFF
            path.write_bytes(bytes(data))
            info["flipped_at"] = where
        elif mode == "flip-json":
            # The quietest damage: one digit of a `now_ms` in the newest record that has one, so the
            # entry still decodes, as a different command.
            for start, size in reversed(records):
                at = data.find(b'"now_ms":', start, start + 4 + size)
                if at >= 0:
                    where = at + len(b'"now_ms":') + 3
                    data[where] = ord("1") if data[where] != ord("1") else ord("2")
                    path.write_bytes(bytes(data))
                    info["flipped_at"] = where
                    break
            else:
                raise ValueError("no record with now_ms to flip")
        else:
            raise ValueError(f"unknown damage mode {mode!r}")
        self.note("journal", **info)
        return info

    # ------------------------------------------------------------ membership

    def add_member(self, node: str, via: str, timeout: float = 30) -> tuple[int, Any]:
        """Start a node outside the members and add it through POST /v1/nodes."""
        self.note("member_add", node=node)
        self.start(node)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.status(node) is None:
            time.sleep(0.2)
        return self.api(via, "POST", "/v1/nodes", self.node_body(node), timeout=timeout)

    def remove_member(self, node: str, via: str) -> tuple[int, Any]:
        self.note("member_remove", node=node)
        return self.api(via, "DELETE", f"/v1/nodes/{node}")

    # ------------------------------------------------------------ teardown

    def close(self) -> None:
        self.observer.stop()
        for node in list(self.procs):
            with contextlib.suppress(Exception):
                self.procs[node].send_signal(signal.SIGCONT)
        super().close()
        if self.firewall is not None:
            self.firewall.remove_all()
        with contextlib.suppress(OSError):
            (self.root / "node.pids").unlink()


def kill_orphans_of_dead_runs() -> list[int]:
    """Kill, by pid, node processes left by a chaos harness that was itself killed."""
    killed = []
    for root in Path("/tmp").glob("raftsched-chaos-*"):
        try:
            owner = int((root / "harness.pid").read_text())
            pids = [int(p) for p in (root / "node.pids").read_text().split()]
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        for pid in pids:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(root / "cluster.ini").encode() in cmdline:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
    return killed
