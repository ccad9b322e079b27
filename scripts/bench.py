"""How well raftsched starts work on time, side by side with the peers, in one run.

    python scripts/bench.py [--quick | --smoke] [--only spread,failover,api,api_idle,burst,big]
                            [--sizes 1000,2000] [--window S] [--peers aps-memory,floor] [--nodes 3]
                            [--profile] [--count-calls] [--rev HEAD|worktree] [--out FILE] [--keep]

Workloads (issue 6; targets in DESIGN.md §6), each printing a table and going into the JSON:

- sink: the ground-truth HTTP sink measured alone first (it must never be the bottleneck).
- spread: N jobs `every: 1` with phases spread over the second (full run: N = 1,000, 250, 2,000,
  5,000), task = one HTTP GET to the sink. Lateness = arrival at the sink - due, p50/p99/max over
  the runs due in the window, and from raftsched's own run records (`started_at - due_at`, a sample
  of jobs); runs/s achieved vs expected; missed; duplicates; CPU % and RSS of every process, and
  the CPU the rest of the (shared) machine used meanwhile.
- burst: N jobs due in the same millisecond, `every: 10` (N = 1,000 and 10,000), two bursts.
- failover: kill -9 of the leader every ~15 s during spread (N = first size): kill -> first entry
  committed in the new term, -> new scheduler term begun; lateness of the runs due meanwhile.
- api: job creation (POST /v1/jobs) latency and throughput with concurrent clients, on the leader
  and on a follower, while the spread workload runs (after the failovers), with the clients' CPU
  (they share the machine) and how late the runs due meanwhile started; api_idle: the same on an
  empty cluster.
- big: 100,000 hourly cron jobs (none due during the test): memory per node, snapshot size and
  write time, node restart time, wiped-node catch-up time, GET /v1/jobs page latency, idle CPU.

Peers, same workload, same sink, same measurement, each its own process: APScheduler 3
(AsyncIOScheduler, memory store; and SQLAlchemy store on SQLite) and a bare asyncio timer heap
(the floor). Ratios are printed next to absolute figures. `--quick` runs spread at 1,000 with the
peers, two failovers and a short API test (about 2 minutes when the cluster keeps up, longer when
it is overloaded), and ends with one JSON line: lateness_p99_ms, peer_lateness_p99_ms, runs_per_s,
missed, failover_s (and a few more). `--smoke` is a tiny version for the test suite. `--profile`
(on by default in the full run) samples the leader and a follower with py-spy after each raftsched
spread window; `--count-calls` runs the nodes with call counters (benchlib/node.py) instead.

raftsched runs as 3 node processes on 127.0.0.1 (the tests' harness, nodes at their default log
level), importing a `git archive` of `--rev`; lookahead_s = 3, node_timeout_s = 2, capacity 1,024
per node (the peers run every due task at once; at 256 the aligned bursts queued on raftsched
alone), overlap `allow` (the task never overlaps itself; it lets fire-ahead commit every slot in
the lookahead). Every process it starts it stops by PID; all traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # before scripts/, which has a cluster.py of its own

from benchlib import measure as m  # noqa: E402
from benchlib import plot  # noqa: E402
from benchlib import profile as prof  # noqa: E402

from cluster import Cluster  # noqa: E402

PEERS = ("aps-memory", "aps-sqlite", "floor")
CAPACITY = 1024  # runs at once per node: the peers do not bound it either


class BenchCluster(Cluster):
    """The test harness's cluster, with nodes at their default log level (WARNING): the tests run
    them at INFO, which logs every run transition on every node (3 lines per run, on the tick thread)."""

    log_level = "warning"
    count_calls = False  # call counters in the nodes (benchlib.node; not for timing)
    code_dir: Path | None = None  # the raftsched snapshot the nodes import (None: the work tree)

    def start(self, *nodes: str) -> None:
        for node in nodes or self.ids:
            log = (self.root / f"{node}.log").open("ab")
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(HERE)}
            if self.count_calls:
                env["BENCH_COUNTS_FILE"] = str(self.root / f"{node}.counts.json")
            if self.code_dir is not None:
                env["BENCH_CODE_DIR"] = str(self.code_dir)
            self.procs[node] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchlib.node",
                    "node",
                    "--config",
                    str(self.config),
                    "--node",
                    node,
                    "--log-level",
                    self.log_level,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env=env,
            )
            log.close()

    def counts(self) -> dict[str, Any]:
        out = {}
        for node in self.ids:
            path = self.root / f"{node}.counts.json"
            if path.exists():
                try:
                    out[node] = json.loads(path.read_text())
                except ValueError:
                    continue
        return out


def count_rates(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Calls per second and microseconds per call of each counted function, per node, over a window."""
    out: dict[str, Any] = {}
    for node, a in after.items():
        b = before.get(node)
        if not b or a["t"] <= b["t"]:
            continue
        secs = a["t"] - b["t"]
        rows = {}
        for key, (calls, total) in ((k, v) for k, v in a.items() if k[0] != "_" and k != "t"):
            c0, t0 = b.get(key, [0, 0.0])
            n = calls - c0
            if n:
                rows[key.partition(":")[2]] = {
                    "calls_per_s": round(n / secs, 1),
                    "us_per_call": round(1e6 * (total - t0) / n, 1),
                    "cpu_pct": round(100 * (total - t0) / secs, 1),
                }
        out[node] = dict(sorted(rows.items(), key=lambda kv: -kv[1]["calls_per_s"]))
    return out


T_START = time.monotonic()


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - T_START:6.1f}s] {msg}", flush=True)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sample_node_loads(cluster: Cluster, node: str, until_ms: int, period_s: float = 0.2) -> dict[str, Any]:
    """Until `until_ms`, what routing sees on `node`: each node's `running` (executing, the load
    least-loaded compares) and `pending` runs, every `period_s`: mean and max per node."""
    seen: dict[str, dict[str, list[int]]] = {}
    while now_ms() < until_ms:
        try:
            code, body = cluster.api(node, "GET", "/v1/nodes", timeout=2)
        except OSError:
            code, body = 0, None
        if code == 200:
            for item in body["items"]:
                mine = seen.setdefault(item["id"], {"running": [], "pending": []})
                mine["running"].append(item.get("running", 0))
                mine["pending"].append(item.get("pending", 0))
        time.sleep(period_s)
    return {
        n: {k: {"mean": round(sum(v) / len(v), 1), "max": max(v)} for k, v in kinds.items() if v}
        for n, kinds in sorted(seen.items())
    }


def _health_code(cluster: Cluster, node: str) -> int | None:
    """A node busy loading a snapshot may not answer in time: not healthy yet, not a failure."""
    try:
        return int(cluster.api(node, "GET", "/v1/health", timeout=5)[0])
    except OSError:  # urllib's timeouts and refusals
        return None


def sleep_until(epoch_ms: float) -> None:
    delay = epoch_ms / 1000 - time.time()
    if delay > 0:
        time.sleep(delay)


def aps_available() -> bool:
    try:
        import apscheduler  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------- the workload's jobs


def phases(n: int, aligned: bool) -> list[int]:
    return [0 if aligned else (i * 1000) // n for i in range(n)]


def next_slot(start_ms: int, period_ms: int, after_ms: int) -> int:
    k = max(1, (after_ms - start_ms) // period_ms + 1)
    return start_ms + k * period_ms


def expected_slots(n: int, aligned: bool, anchor: int, period_ms: int, lo: int, hi: int) -> int:
    """Slots anchor + phase_i + k * period (k >= 1) that fall in [lo, hi), over every job."""
    total = 0
    for phase in phases(n, aligned):
        start = anchor + phase
        first = next_slot(start, period_ms, lo - 1)
        if first < hi:
            total += (hi - 1 - first) // period_ms + 1
    return total


def interval_jobs(n: int, period: float, anchor: int, aligned: bool, url: str) -> list[dict[str, Any]]:
    period_ms = int(period * 1000)
    t = now_ms()
    items = []
    for i, phase in enumerate(phases(n, aligned)):
        start = anchor + phase
        spec = {
            "id": f"job-{i:06d}",
            "schedule": {"every": period, "start_at": iso(start)},
            "task": {"type": "http", "method": "GET", "url": url},
            "overlap": "allow",
        }
        items.append({"spec": spec, "next_fire_at": iso(next_slot(start, period_ms, t))})
    return items


def restore(cluster: Cluster, node: str, items: list[dict[str, Any]], chunk: int, label: str) -> float:
    started = time.monotonic()
    for first in range(0, len(items), chunk):
        doc = {"format": "raftsched-backup", "version": 1, "jobs": items[first : first + chunk]}
        code, body = cluster.api(node, "POST", "/v1/restore", doc, timeout=300)
        if code != 200:
            raise RuntimeError(f"restore failed: {code} {body}")
        done = min(len(items), first + chunk)
        if len(items) > 5 * chunk and (done // chunk) % 10 == 0:
            progress(f"  {label}: loaded {done:,} jobs")
    return time.monotonic() - started


# ---------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
        self.work = Path(tempfile.mkdtemp(prefix="raftsched-bench-"))
        self.sink_proc: subprocess.Popen[bytes] | None = None
        self.sink_url = ""
        self.results: dict[str, Any] = {}
        self.tables: list[str] = []
        self.clusters: list[Cluster] = []
        self.code_dir: Path | None = None
        self.aps = aps_available()
        full = self.mode == "full"
        smoke = self.mode == "smoke"
        self.sizes = (
            [int(x) for x in args.sizes.split(",")]
            if args.sizes
            else ([50] if smoke else [1000] if self.mode == "quick" else [1000, 250, 2000, 5000])
        )
        self.window_s = args.window or (3 if smoke else 8 if self.mode == "quick" else 15)
        self.kills = 1 if smoke else 2 if self.mode == "quick" else 4
        self.kill_every_s = 8 if smoke else 12 if self.mode == "quick" else 15
        self.profile = args.profile if args.profile is not None else full
        default_only = "spread,failover,api" if not full else "spread,failover,api,api_idle,burst,big"
        self.only = set((args.only or default_only).split(","))
        wanted = PEERS if args.peers is None else tuple(x for x in args.peers.split(",") if x in PEERS)
        self.peers = [p for p in wanted if self.aps or not p.startswith("aps")]
        if smoke:
            self.peers = [p for p in ("aps-memory", "floor") if p in self.peers]

    # ------------------------------------------------------------ lifecycle

    def export_code(self) -> tuple[Path | None, str]:
        """`git archive` the revision to measure into the work dir; "worktree" measures the files as
        they are (someone may be editing them)."""
        rev = self.args.rev
        if rev == "worktree":
            return None, "worktree"
        git = ["git", "-C", str(HERE.parent)]
        sha = subprocess.run([*git, "rev-parse", "--short", rev], capture_output=True, text=True, check=True)
        dest = self.work / "code"
        dest.mkdir()
        archive = subprocess.run([*git, "archive", rev, "raftsched"], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        return dest, sha.stdout.strip()

    def run(self) -> dict[str, Any]:
        self.code_dir, code_rev = self.export_code()
        self.results["meta"] = self.meta()
        self.results["meta"]["code"] = code_rev
        self.results["meta"]["raftsched_nodes"] = self.args.nodes
        progress(f"bench ({self.mode}) in {self.work}; peers: {', '.join(self.peers)}")
        try:
            self.start_sink()
            self.sink_alone()
            for i, n in enumerate(self.sizes):
                if "spread" in self.only or (i == 0 and {"failover", "api"} & self.only):
                    self.spread(n, first=i == 0)
            if "burst" in self.only:
                for n in [1000, 10000] if not self.args.sizes else self.sizes:
                    self.burst(n)
            if "api_idle" in self.only:
                cluster = self.new_cluster("api-idle")
                try:
                    self.api(cluster, "api_idle", "on an idle cluster (no jobs)")
                finally:
                    self.close_cluster(cluster)
            if "big" in self.only:
                self.big_table(self.args.big_jobs)
        finally:
            for cluster in self.clusters:
                cluster.close()
            m.stop(self.sink_proc)
        self.results["meta"]["loadavg_end"] = m.loadavg()
        self.results["meta"]["elapsed_s"] = round(time.monotonic() - T_START, 1)
        self.results["summary"] = self.summary()
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return self.results

    def meta(self) -> dict[str, Any]:
        rev = subprocess.run(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(HERE.parent), "status", "--porcelain", "raftsched"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        return {
            "mode": self.mode,
            "git": rev + ("+dirty" if dirty else ""),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_start": m.loadavg(),
            "busy_cores_before": m.busy_other_cpu(1.0),
            "started_at": iso(now_ms()),
        }

    def new_cluster(self, tag: str, **keys: Any) -> Cluster:
        cluster = BenchCluster(
            self.work / tag,
            size=self.args.nodes,
            cluster_keys={"lookahead_s": 3, "node_timeout_s": 2, "max_body_bytes": 32 << 20, **keys},
            node_keys={"capacity": CAPACITY},
        )
        cluster.count_calls = self.args.count_calls
        cluster.code_dir = self.code_dir
        self.clusters.append(cluster)
        cluster.start()
        leader = cluster.leader(timeout=60)
        cluster.wait_registered(timeout=60)
        progress(f"  cluster {tag} up, leader {leader}")
        return cluster

    def close_cluster(self, cluster: Cluster) -> None:
        cluster.close()
        self.clusters.remove(cluster)
        if not self.args.keep:
            shutil.rmtree(cluster.root, ignore_errors=True)

    def pids(self, cluster: Cluster) -> dict[str, int]:
        return {node: proc.pid for node, proc in cluster.procs.items()}

    # ------------------------------------------------------------ the sink

    def start_sink(self) -> None:
        self.sink_proc = m.start_module("sink", [], self.work / "sink.log")
        port = m.read_line(self.sink_proc, "port ")
        self.sink_url = f"http://127.0.0.1:{port}"

    def sink_reset(self) -> None:
        m.http_json(self.sink_url + "/_reset", "POST", {})

    def sink_count(self) -> int:
        return int(m.http_json(self.sink_url + "/_count"))

    def sink_events(self) -> list[m.Event]:
        return m.parse_events(m.http_json(self.sink_url + "/_events", timeout=120))

    def sink_settle(self, quiet_s: float = 1.0, limit_s: float = 20.0) -> None:
        """Wait until no new event has arrived for `quiet_s` (late runs land), at most `limit_s`."""
        deadline = time.monotonic() + limit_s
        last, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = self.sink_count()
            if count != last:
                last, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return
            time.sleep(0.2)

    def sink_alone(self) -> None:
        total = 600 if self.mode == "smoke" else 6000
        progress(f"sink alone: {total:,} requests from 16 concurrent clients")
        assert self.sink_proc is not None
        watch = m.CpuWatch({"sink": self.sink_proc.pid}).start()
        started = time.monotonic()
        latencies = asyncio.run(_hammer(self.sink_url + "/selftest", total, 16))
        elapsed = time.monotonic() - started
        cpu = watch.stop()["sink"]["cpu_pct"] or 0.0
        rate = total / elapsed
        self.sink_reset()
        res = {
            "requests": total,
            "req_per_s": round(rate),
            "latency_ms": m.dist(latencies),
            "sink_cpu_pct": cpu,
            "capacity_req_per_s_est": round(rate * 100 / cpu) if cpu > 0 else None,
        }
        self.results["sink"] = res
        self.tables.append(
            m.table(
                "sink alone (one aiohttp client process, 16 connections; the sink: a raw asyncio protocol)",
                ["req/s sent", "latency p50 ms", "p99 ms", "sink CPU %", "sink capacity est. req/s"],
                [
                    [
                        res["req_per_s"],
                        res["latency_ms"]["p50"],
                        res["latency_ms"]["p99"],
                        cpu,
                        res["capacity_req_per_s_est"],
                    ]
                ],
            )
        )
        print(self.tables[-1], flush=True)

    # ------------------------------------------------------------ spread

    def spread(self, n: int, *, first: bool) -> None:
        progress(f"spread {n:,}: raftsched")
        window_ms = self.window_s * 1000
        res: dict[str, Any] = {}
        self.sink_reset()
        cluster = self.new_cluster(f"spread-{n}")
        try:
            anchor = (now_ms() // 1000 - 5) * 1000
            leader = cluster.leader()
            load_s = restore(
                cluster, leader, interval_jobs(n, 1, anchor, False, self.sink_url + "/r"), 1000, "spread"
            )
            progress(f"  loaded {n:,} jobs in {load_s:.1f} s; warming up")
            w0 = (now_ms() // 1000 + 5) * 1000  # > lookahead: steady state
            w1 = w0 + window_ms
            rs = self.raftsched_window(cluster, w0, w1)
            res["raftsched"] = rs
            follower = self.any_follower(cluster)
            rs["records_lateness_ms"] = self.run_records(cluster, follower, n, w0, w1)
            rs["load_s"] = round(load_s, 2)
            if self.profile:
                self.profile_nodes(cluster, f"spread-{n}")
            # Failovers first: a burst of API writes on 2 shared cores leaves the runs late for a
            # while, and kills after it measured that, not the failover.
            if first and "failover" in self.only:
                self.failover(cluster, n, anchor)
            if first and "api" in self.only:
                try:
                    cluster.wait_healthy(timeout=30)
                except TimeoutError:
                    pass
                self.api(cluster, report=False)
            time.sleep(2.5)  # the load goes on: late runs of the window (and the failovers) land meanwhile
            events = self.sink_events()
            rs.update(m.lateness_report(events, (w0, w1), expected_slots(n, False, anchor, 1000, w0, w1)))
            if self.args.keep:  # the raw ground truth, for analyses the tables do not make
                m.save_events(events, self.work / f"events-spread-{n}.jsonl")
            if first and "failover" in self.only:
                self.failover_lateness(events, n, anchor)
            if first and "api" in self.only:
                self.api_report("api", events)
        finally:
            self.close_cluster(cluster)
        for peer in self.peers:
            res[peer] = self.peer_run(peer, n, period=1.0, aligned=False)
        self.results.setdefault("spread", {})[str(n)] = res
        self.print_compare(
            f"spread: {n:,} jobs every 1 s, phases spread (expected {n:,} runs/s); window {self.window_s} s",
            res,
        )

    def leader_or_none(self, cluster: Cluster, timeout: float = 20) -> str | None:
        try:
            return cluster.leader(timeout=timeout)
        except TimeoutError:
            progress("  no leader found (elections churning?)")
            return None

    def any_follower(self, cluster: Cluster) -> str:
        leader = self.leader_or_none(cluster, 10)
        alive = cluster.alive()
        return next((x for x in alive if x != leader), alive[0])  # a 1-node cluster: its leader

    def raftsched_window(self, cluster: Cluster, w0: int, w1: int) -> dict[str, Any]:
        sleep_until(w0)
        leader = self.leader_or_none(cluster, 5) or cluster.alive()[0]
        st0 = slow_status(cluster, leader) or {}
        assert self.sink_proc is not None
        assert isinstance(cluster, BenchCluster)
        counts0 = cluster.counts()
        watch = m.CpuWatch({**self.pids(cluster), "sink": self.sink_proc.pid}).start()
        progress(f"  measuring {(w1 - w0) / 1000:.0f} s window (leader {leader})")
        loads = sample_node_loads(cluster, leader, w1)
        procs = watch.stop()
        if cluster.count_calls:
            time.sleep(1.1)  # the counters are written once a second
            calls = count_rates(counts0, cluster.counts())
            self.results.setdefault("call_counts", {})[f"window {w0}"] = {"leader": leader, "nodes": calls}
            for node, rows in calls.items():
                print(f"  call counts on {node}{' (leader)' if node == leader else ''}:", flush=True)
                for name, r in list(rows.items())[:25]:
                    rate, per, cpu = r["calls_per_s"], r["us_per_call"], r["cpu_pct"]
                    print(f"    {rate:>10,.1f}/s {per:>9,.1f} us {cpu:>5.1f}%  {name}")
        st1 = slow_status(cluster, leader) or {}
        entries: int | None = st1.get("commit_index", 0) - st0.get("commit_index", 0)
        if not st0 or not st1 or st0.get("term") != st1.get("term") or (entries or 0) < 0:
            entries = None  # no status, or the leader changed: not comparable
        return {"leader": leader, "procs": procs, "log_entries": entries, "window": [w0, w1], "loads": loads}

    def run_records(self, cluster: Cluster, node: str, n: int, w0: int, w1: int) -> dict[str, Any]:
        """Lateness as raftsched records it (started_at - due_at), for a sample of jobs."""
        want = min(n, 50 if self.mode != "full" else 100)
        sample = sorted({(i * n) // want for i in range(want)})
        values, asked = [], 0
        by_node: dict[str, list[float]] = {}
        deadline = time.monotonic() + 30  # an overloaded node answers slowly: take what comes in time
        for i in sample:
            if time.monotonic() > deadline:
                break
            asked += 1
            try:
                code, body = cluster.api(node, "GET", f"/v1/jobs/job-{i:06d}/runs?limit=100", timeout=10)
            except OSError:
                continue
            if code != 200:
                continue
            for run in body["items"]:
                due = int(run["run_id"].rpartition("@")[2].split("~")[0])
                if w0 <= due < w1 and run["lateness"] is not None:
                    values.append(run["lateness"] * 1000)
                    by_node.setdefault(str(run.get("node")), []).append(run["lateness"] * 1000)
        by = {node: m.dist(v) for node, v in sorted(by_node.items())}
        return {**m.dist(values), "jobs_sampled": asked, "by_node": by}

    def profile_nodes(self, cluster: Cluster, tag: str, seconds: float = 8) -> None:
        if prof.py_spy() is None:
            progress("  py-spy not found: no profile")
            return
        leader = self.leader_or_none(cluster) or cluster.alive()[0]
        follower = next((x for x in cluster.alive() if x != leader), None)
        who = f"{leader} (leader)" + (f" and {follower}" if follower else "")
        progress(f"  profiling {who} with py-spy for {seconds:.0f} s")
        out = self.out_dir() / f"profiles-{tag}"
        out.mkdir(parents=True, exist_ok=True)
        pids = {f"leader-{leader}": cluster.procs[leader].pid}
        if follower is not None:
            pids[f"follower-{follower}"] = cluster.procs[follower].pid
        files = prof.record(pids, seconds, out)
        summaries = {name: prof.summarize(path, seconds) for name, path in files.items()}
        self.results.setdefault("profiles", {})[tag] = {"dir": str(out), "summaries": summaries}
        for name, summary in summaries.items():
            text = prof.render(f"{tag} {name}", summary)
            (out / f"{name}.txt").write_text(text + "\n")
            print(text, flush=True)

    def out_dir(self) -> Path:
        base = self.args.out.parent if self.args.out else self.work
        base.mkdir(parents=True, exist_ok=True)
        return base

    # ------------------------------------------------------------ peers

    def peer_run(self, kind: str, n: int, *, period: float, aligned: bool, bursts: int = 0) -> dict[str, Any]:
        progress(f"  {kind}: {n:,} jobs")
        self.sink_reset()
        anchor = (now_ms() // 1000 - 5) * 1000
        args = [
            "--kind",
            kind,
            "--sink",
            self.sink_url + "/r",
            "--jobs",
            str(n),
            "--period",
            str(period),
            "--anchor-ms",
            str(anchor),
        ]
        if aligned:
            args.append("--aligned")
        if kind == "aps-sqlite":
            db = self.work / f"aps-{n}-{now_ms()}.sqlite"
            args += ["--db", str(db)]
        t0 = now_ms()
        proc = m.start_module("peers", args, self.work / f"peer-{kind}.log")
        try:
            ready = int(m.read_line(proc, "ready ", timeout=300))
            w0, w1 = self.window_after(ready + 2000, anchor, period, aligned, bursts)
            assert self.sink_proc is not None
            sleep_until(w0)
            watch = m.CpuWatch({"peer": proc.pid, "sink": self.sink_proc.pid}).start()
            sleep_until(w1 if not bursts else w1 + 1000)
            procs = watch.stop()
            if bursts:
                self.sink_settle(limit_s=15)
            else:
                time.sleep(3)  # a run more than ~3 s late counts as missed (APScheduler skips it after 1 s)
        finally:
            m.stop(proc)
        events = self.sink_events()
        res = m.lateness_report(
            events, (w0, w1), expected_slots(n, aligned, anchor, int(period * 1000), w0, w1)
        )
        res.update({"procs": procs, "startup_s": round((ready - t0) / 1000, 2), "window": [w0, w1]})
        return res

    def window_after(self, t: int, anchor: int, period: float, aligned: bool, bursts: int) -> tuple[int, int]:
        """Spread: whole seconds from `t`, window_s long. Burst: from the first burst at or after t."""
        if not bursts:
            w0 = (t // 1000 + 1) * 1000
            return w0, w0 + self.window_s * 1000
        period_ms = int(period * 1000)
        w0 = next_slot(anchor, period_ms, t - 1)
        return w0, w0 + (bursts - 1) * period_ms + 1

    # ------------------------------------------------------------ burst

    def burst(self, n: int) -> None:
        period, bursts = 10.0, 2
        progress(f"burst {n:,}: raftsched")
        res: dict[str, Any] = {}
        self.sink_reset()
        cluster = self.new_cluster(f"burst-{n}")
        try:
            anchor = (now_ms() // 1000 + 1) * 1000
            leader = cluster.leader()
            load_s = restore(
                cluster, leader, interval_jobs(n, period, anchor, True, self.sink_url + "/r"), 2000, "burst"
            )
            progress(f"  loaded {n:,} jobs in {load_s:.1f} s")
            w0, w1 = self.window_after(now_ms() + 4000, anchor, period, True, bursts)
            rs = self.raftsched_window(cluster, w0 - 500, w1 + 1000)
            rs["window"] = [w0, w1]
            self.sink_settle(limit_s=20)
            follower = self.any_follower(cluster)
            rs["records_lateness_ms"] = self.run_records(cluster, follower, n, w0, w1)
            rs["load_s"] = round(load_s, 2)
            rs.update(m.lateness_report(self.sink_events(), (w0, w1), n * bursts))
            res["raftsched"] = rs
        finally:
            self.close_cluster(cluster)
        for peer in self.peers:
            res[peer] = self.peer_run(peer, n, period=period, aligned=True, bursts=bursts)
        self.results.setdefault("burst", {})[str(n)] = res
        self.print_compare(
            f"aligned burst: {n:,} jobs due in the same ms, {bursts} bursts {period:g} s apart", res
        )

    # ------------------------------------------------------------ failover

    def failover(self, cluster: Cluster, n: int, anchor: int) -> None:
        kills = []
        progress(
            f"failover: kill -9 of the leader {self.kills} times, every ~{self.kill_every_s} s, under load"
        )
        for k in range(self.kills):
            started = time.monotonic()
            kills.append(self.one_failover(cluster))
            k_res = kills[-1]
            progress(
                f"  kill {k + 1}: {k_res['killed']} -> committed in new term after {k_res['failover_s']} s, "
                f"scheduler term begun after {k_res['scheduler_begun_s']} s on {k_res['new_leader']}"
            )
            rest = self.kill_every_s - (time.monotonic() - started)
            if rest > 0:
                time.sleep(rest)
        self.results["failover"] = {"kills": kills, "n": n}

    def one_failover(self, cluster: Cluster) -> dict[str, Any]:
        leader = self.leader_or_none(cluster, 60)
        if leader is None:
            return {
                "killed": None,
                "error": "no leader to kill",
                "failover_s": None,
                "scheduler_begun_s": None,
            }
        try:
            cluster.wait_healthy(timeout=30)
        except TimeoutError:
            pass
        survivors = [x for x in cluster.alive() if x != leader]
        before = [s for s in (slow_status(cluster, x) for x in [leader, *survivors]) if s]
        if not before:
            return {"killed": None, "error": "no status", "failover_s": None, "scheduler_begun_s": None}
        old_term = max(s["term"] for s in before)
        c0 = max(s["commit_index"] for s in before)
        t_kill = time.time()
        cluster.kill(leader)
        failover = begun = None
        new_leader = None
        poll_ms: list[float] = []  # an overloaded node answers /v1/status late: the error bar
        while time.time() - t_kill < 60 and begun is None:
            for node in survivors:
                asked = time.time()
                st = slow_status(cluster, node)
                now = time.time()
                poll_ms.append((now - asked) * 1000)
                if not st:
                    continue
                if failover is None and st["term"] > old_term and st["commit_index"] > c0:
                    failover = now - t_kill
                if st["role"] == "leader" and st["term"] > old_term and st["scheduler_term"] == st["term"]:
                    begun, new_leader = now - t_kill, node
                    failover = failover if failover is not None else begun
            time.sleep(0.01)
        cluster.start(leader)
        return {
            "killed": leader,
            "t_kill_ms": int(t_kill * 1000),
            "failover_s": None if failover is None else round(failover, 3),
            "scheduler_begun_s": None if begun is None else round(begun, 3),
            "new_leader": new_leader,
            "status_poll_ms": m.dist(poll_ms),
        }

    def failover_lateness(self, events: list[m.Event], n: int, anchor: int) -> None:
        res = self.results["failover"]
        for kill in res["kills"]:
            if kill.get("killed") is None:
                continue
            lo = kill["t_kill_ms"]
            span = kill["scheduler_begun_s"] or kill["failover_s"] or 2.0
            hi = lo + int(span * 1000) + 1
            inside = [e for e in events if lo <= e.due_ms < hi]
            dead = kill["killed"]
            survivors = [e.t_ms - e.due_ms for e in inside if e.node != dead and e.attempt == "1"]
            moved = [e.t_ms - e.due_ms for e in inside if e.attempt != "1"]
            on_dead = [e.t_ms - e.due_ms for e in inside if e.node == dead and e.attempt == "1"]
            expected = expected_slots(n, False, anchor, 1000, lo, hi)
            kill.update(
                {
                    "due_during_failover": expected,
                    "survivors_lateness_ms": m.dist(survivors),
                    "survivors_late_over_10ms": sum(1 for x in survivors if x > 10),
                    "reassigned_lateness_ms": m.dist(moved),
                    "dead_node_restarted_lateness_ms": m.dist(on_dead),
                    "missed": max(0, expected - len({(e.job, e.due_ms) for e in inside})),
                }
            )
        times = [k["failover_s"] for k in res["kills"] if k["failover_s"] is not None]
        begun = [k["scheduler_begun_s"] for k in res["kills"] if k["scheduler_begun_s"] is not None]
        res["failover_s_median"] = round(statistics.median(times), 3) if times else None
        res["failover_s_max"] = max(times) if times else None
        res["scheduler_begun_s_median"] = round(statistics.median(begun), 3) if begun else None
        rows = [
            [
                k["killed"],
                k["failover_s"],
                k["scheduler_begun_s"],
                k["due_during_failover"],
                k["survivors_lateness_ms"]["p50"],
                k["survivors_lateness_ms"]["p99"],
                k["survivors_lateness_ms"]["max"],
                k["survivors_late_over_10ms"],
                k["reassigned_lateness_ms"]["n"],
                k["reassigned_lateness_ms"]["max"],
                k["missed"],
                k["status_poll_ms"]["max"],
            ]
            for k in res["kills"]
            if k.get("killed") is not None
        ]
        self.tables.append(
            m.table(
                f"failover under load (spread {n:,}): kill -9 of the leader; lateness (ms) of the runs due "
                f"until the new scheduler term began; median failover {res['failover_s_median']} s",
                [
                    "killed",
                    "commit s",
                    "sched s",
                    "runs due",
                    "surv p50",
                    "surv p99",
                    "surv max",
                    "surv >10ms",
                    "moved n",
                    "moved max",
                    "missed",
                    "poll max ms",
                ],
                rows,
            )
        )
        print(self.tables[-1], flush=True)

    # ------------------------------------------------------------ API

    def api(
        self,
        cluster: Cluster,
        key: str = "api",
        condition: str = "while the spread workload runs",
        *,
        report: bool = True,
    ) -> None:
        """Job creation at each level of concurrency, on the leader then on a follower. `report`:
        print the table now; else `api_report` prints it once the runs due meanwhile are in."""
        total = 40 if self.mode == "smoke" else 300 if self.mode == "quick" else 1000
        levels = [1, 4] if self.mode == "smoke" else [1, 16] if self.mode == "quick" else [1, 8, 32]
        limit_s = 3 if self.mode == "smoke" else 6 if self.mode == "quick" else 12
        leader = self.leader_or_none(cluster)
        if leader is None:
            self.results[key] = {"error": "no leader"}
            return
        follower = next(x for x in cluster.alive() if x != leader)
        res = []
        for role, node in (("leader", leader), ("follower", follower)):
            for conc in levels:
                progress(
                    f"api: POST /v1/jobs on the {role} ({node}), {conc} clients, <= {total} or {limit_s} s"
                )
                prefix = f"api-{role}-{conc}-"
                began_ms, cpu = now_ms(), time.process_time()
                lat, elapsed, errors = asyncio.run(
                    _create_jobs(cluster.url(node), prefix, total, conc, self.sink_url, limit_s)
                )
                done = len(lat)
                res.append(
                    {
                        "role": role,
                        "node": node,
                        "concurrency": conc,
                        "requests": done,
                        "jobs_per_s": round(done / elapsed, 1),
                        "latency_ms": m.dist(lat),
                        "errors": errors,
                        # the clients share the machine: their CPU is the nodes' loss
                        "client_cpu_pct": round(100 * (time.process_time() - cpu) / elapsed, 1),
                        "span_ms": [began_ms, now_ms()],
                    }
                )
        self.results[key] = {"condition": condition, "runs": res}
        if report:
            self.api_report(key, None)

    def api_report(self, key: str, events: list[m.Event] | None) -> None:
        """The API table; with `events`, also how late the runs due during each level started."""
        res = self.results.get(key)
        if not res or "runs" not in res:
            return
        head = ["node", "clients", "created", "jobs/s", "p50 ms", "p99 ms", "max ms", "errors"]
        head.append("client CPU %")
        if events is not None:
            head += ["runs due meanwhile", "their lateness p50/p99 ms"]
        rows = []
        for item in res["runs"]:
            d = item["latency_ms"]
            row = [item["role"], item["concurrency"], item["requests"], item["jobs_per_s"], d["p50"]]
            row += [d["p99"], d["max"], item["errors"], item["client_cpu_pct"]]
            if events is not None:
                lo, hi = item["span_ms"]
                late = m.dist(e.t_ms - e.due_ms for e in events if lo <= e.due_ms < hi)
                item["runs_lateness_ms"] = late
                row += [late["n"], f"{late['p50']}/{late['p99']}"]
            rows.append(row)
        self.tables.append(m.table(f"API: job creation (POST /v1/jobs), {res['condition']}", head, rows))
        print(self.tables[-1], flush=True)

    # ------------------------------------------------------------ big table

    def big_table(self, n: int) -> None:
        progress(f"big table: {n:,} hourly cron jobs")
        cluster = self.new_cluster("big", log_compaction_min_entries=300, log_compaction_min_time_s=3600)
        res: dict[str, Any] = {"jobs": n}
        try:
            leader = cluster.leader()
            items = cron_jobs(n, self.sink_url + "/never")
            res["load_s"] = round(restore(cluster, leader, items, 2000, "big"), 1)
            leader = cluster.leader()
            cluster.wait_same_digest(timeout=120)
            res["rss_mb"] = {x: m.rss_mb(p) for x, p in self.pids(cluster).items()}
            progress("  idle CPU with the table loaded (10 s)")
            watch = m.CpuWatch(self.pids(cluster)).start()
            time.sleep(10)
            res["idle"] = watch.stop()
            res["leader"] = leader
            if self.profile:
                self.profile_nodes(cluster, "big-idle")
            res["snapshot"] = self.snapshot(cluster)
            res["list_jobs_ms"] = self.list_latency(cluster, n)
            follower = next(x for x in cluster.alive() if x != cluster.leader())
            res["restart"] = self.restart_node(cluster, follower, wipe=False)
            res["wiped"] = self.restart_node(cluster, follower, wipe=True)
            res["rss_mb_after_resync"] = {x: m.rss_mb(p) for x, p in self.pids(cluster).items()}
        finally:
            self.close_cluster(cluster)
        self.results["big_table"] = res
        idle = res["idle"]
        rows = [
            [
                x,
                res["rss_mb"].get(x),
                res["rss_mb_after_resync"].get(x),
                idle[x]["cpu_pct"],
                "leader" if x == res["leader"] else "",
            ]
            for x in sorted(idle)
            if x != "others"
        ]
        snap = res["snapshot"]
        self.tables.append(
            m.table(
                f"big table: {n:,} hourly cron jobs (none due during the test), loaded in {res['load_s']} s",
                ["node", "RSS MB", "RSS after resync", "idle CPU %", "role"],
                rows,
            )
            + "\n"
            + m.table(
                "  snapshot, restart, catch-up, list",
                ["what", "value"],
                [
                    ["snapshot file MB", snap.get("size_mb")],
                    ["snapshot write s (fork child: orjson + pickle + gzip -9)", snap.get("write_s")],
                    [
                        "commit latency during compaction p50/max ms",
                        f"{snap.get('noop_ms', {}).get('p50')}/{snap.get('noop_ms', {}).get('max')}",
                    ],
                    ["restart (kill -9, start) -> healthy s", res["restart"].get("healthy_s")],
                    ["restart -> caught up s", res["restart"].get("caught_up_s")],
                    ["wiped node -> caught up s", res["wiped"].get("caught_up_s")],
                    *[
                        [f"GET /v1/jobs {k} ms p50/max", f"{v['p50']}/{v['max']}"]
                        for k, v in res["list_jobs_ms"].items()
                    ],
                ],
            )
        )
        print(self.tables[-1], flush=True)

    def snapshot(self, cluster: Cluster) -> dict[str, Any]:
        """Drive the log past log_compaction_min_entries with no-op barriers; time the dump file."""
        leader = cluster.leader()
        dump = cluster.root / "data" / leader / "raft.dump"
        tmp = dump.with_name("raft.dump.tmp")
        mtime0 = dump.stat().st_mtime if dump.exists() else 0
        progress("  forcing a compaction (no-op entries past log_compaction_min_entries)")
        noop_ms: list[float] = []
        seen_tmp = done = None
        deadline = time.monotonic() + 120
        while done is None and time.monotonic() < deadline:
            t = time.monotonic()
            cluster.api(leader, "GET", "/v1/jobs?limit=1&consistent=true", timeout=30)
            noop_ms.append((time.monotonic() - t) * 1000)
            for _ in range(3):
                if seen_tmp is None and tmp.exists():
                    seen_tmp = time.monotonic()
                if dump.exists() and dump.stat().st_mtime > mtime0:
                    done = time.monotonic()
                    break
                time.sleep(0.002)
        while done is not None and time.monotonic() - done < 0.5:  # barriers right after it, too
            t = time.monotonic()
            cluster.api(leader, "GET", "/v1/jobs?limit=1&consistent=true", timeout=30)
            noop_ms.append((time.monotonic() - t) * 1000)
        out: dict[str, Any] = {"noop_ms": m.dist(noop_ms), "noops": len(noop_ms)}
        if done is not None:
            out["size_mb"] = round(dump.stat().st_size / 2**20, 1)
            out["write_s"] = round(done - seen_tmp, 2) if seen_tmp is not None else None
        return out

    def list_latency(self, cluster: Cluster, n: int) -> dict[str, Any]:
        leader = cluster.leader()
        follower = next(x for x in cluster.alive() if x != leader)
        mid = base64.urlsafe_b64encode(f"big-{n // 2:06d}".encode()).decode()
        out = {}
        for label, path in (
            ("first 100", "/v1/jobs?limit=100"),
            ("first 1000", "/v1/jobs?limit=1000"),
            ("100 from the middle", f"/v1/jobs?limit=100&cursor={mid}"),
        ):
            for role, node in (("leader", leader), ("follower", follower)):
                times = []
                for _ in range(10):
                    t = time.monotonic()
                    code, _ = cluster.api(node, "GET", path, timeout=60)
                    times.append((time.monotonic() - t) * 1000)
                out[f"{label} ({role})"] = m.dist(times)
        return out

    def restart_node(self, cluster: Cluster, node: str, *, wipe: bool) -> dict[str, Any]:
        what = "wiped node" if wipe else "restart"
        progress(f"  {what}: {node}")
        cluster.kill(node)
        if wipe:
            shutil.rmtree(cluster.root / "data" / node, ignore_errors=True)
        leader = cluster.leader()
        target = (cluster.status(leader) or {}).get("commit_index", 0)
        t0 = time.monotonic()
        cluster.start(node)
        healthy = caught = None
        while time.monotonic() - t0 < 300 and caught is None:
            if cluster.procs[node].poll() is not None:  # e.g. its port was taken meanwhile
                return {
                    "healthy_s": None,
                    "caught_up_s": None,
                    "error": f"exited {cluster.procs[node].returncode}",
                }
            with_status = cluster.status(node)
            if with_status:
                if healthy is None and _health_code(cluster, node) == 200:
                    healthy = time.monotonic() - t0
                if with_status["applied_index"] >= target and with_status["leader"]:
                    caught = time.monotonic() - t0
            time.sleep(0.05)
        return {
            "healthy_s": None if healthy is None else round(healthy, 2),
            "caught_up_s": None if caught is None else round(caught, 2),
        }

    # ------------------------------------------------------------ output

    def print_compare(self, title: str, res: dict[str, Any]) -> None:
        base = res.get("aps-memory", {}).get("lateness_ms", {}).get("p99")
        rows = []
        for system, r in res.items():
            lat = r.get("lateness_ms", {})
            rec = r.get("records_lateness_ms")
            procs = r.get("procs", {})
            ours = {k: v for k, v in procs.items() if k not in ("sink", "others")}
            cpu = " ".join(f"{k}:{v['cpu_pct']}" for k, v in ours.items())
            rss = " ".join(f"{v['rss_mb']}" for v in ours.values())
            wait = " ".join(f"{v.get('wait_pct')}" for v in ours.values())
            others = procs.get("others", {}).get("cores")
            rows.append(
                [
                    system,
                    lat.get("p50"),
                    lat.get("p99"),
                    m.ratio(lat.get("p99"), base),
                    lat.get("max"),
                    None if rec is None else f"{rec['p50']}/{rec['p99']}",
                    r.get("runs_per_s"),
                    r.get("expected_runs_per_s"),
                    r.get("missed"),
                    r.get("duplicates"),
                    r.get("log_entries"),
                    cpu,
                    wait,
                    rss,
                    others,
                ]
            )
        self.tables.append(
            m.table(
                title + " — lateness = arrival at the sink - due (ms)",
                [
                    "system",
                    "p50",
                    "p99",
                    "p99/aps-mem",
                    "max",
                    "records p50/p99",
                    "runs/s",
                    "expected",
                    "missed",
                    "dup",
                    "log entries",
                    "CPU % per process",
                    "run-queue wait %",
                    "RSS MB",
                    "others' cores",
                ],
                rows,
            )
        )
        print(self.tables[-1], flush=True)

    def summary(self) -> dict[str, Any]:
        spread = self.results.get("spread", {})
        first = spread.get(str(self.sizes[0]), {}) if self.sizes else {}
        rs = first.get("raftsched", {})
        fo = self.results.get("failover", {})

        def p99(system: str) -> float | None:
            return first.get(system, {}).get("lateness_ms", {}).get("p99")

        return {
            "jobs": self.sizes[0] if self.sizes else None,
            "lateness_p99_ms": rs.get("lateness_ms", {}).get("p99"),
            "lateness_p50_ms": rs.get("lateness_ms", {}).get("p50"),
            "records_lateness_p99_ms": rs.get("records_lateness_ms", {}).get("p99"),
            "peer_lateness_p99_ms": p99("aps-memory"),
            "aps_sqlite_lateness_p99_ms": p99("aps-sqlite"),
            "floor_lateness_p99_ms": p99("floor"),
            "runs_per_s": rs.get("runs_per_s"),
            "expected_runs_per_s": rs.get("expected_runs_per_s"),
            "missed": rs.get("missed"),
            "failover_s": fo.get("failover_s_median"),
            "failover_survivors_late_over_10ms": sum(
                k.get("survivors_late_over_10ms", 0) for k in fo.get("kills", [])
            ),
            "mode": self.mode,
        }


def slow_status(cluster: Cluster, node: str, timeout: float = 10) -> dict[str, Any] | None:
    """GET /v1/status with a patient timeout (the harness gives up after 2 s)."""
    try:
        code, body = cluster.api(node, "GET", "/v1/status", timeout=timeout)
    except OSError:
        return None
    return body if code == 200 else None


def cron_jobs(n: int, url: str) -> list[dict[str, Any]]:
    """Hourly crons on the 30 minutes farthest from now: nothing falls due during the test."""
    from raftsched import triggers
    from raftsched.model import Schedule

    minute = datetime.now(UTC).minute
    t = now_ms()
    items = []
    for i in range(n):
        cron = f"{(minute + 20 + i % 30) % 60} * * * *"
        nxt = triggers.next_fire_ms(Schedule(cron=cron), t, created_ms=t)
        spec = {"id": f"big-{i:06d}", "schedule": {"cron": cron}, "task": {"type": "http", "url": url}}
        items.append({"spec": spec, "next_fire_at": iso(nxt) if nxt else None})
    return items


async def _hammer(url: str, total: int, concurrency: int) -> list[float]:
    import aiohttp

    latencies: list[float] = []
    queue = iter(range(total))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            for i in queue:
                headers = {"X-Raftsched-Run-Id": f"selftest@{i}", "X-Raftsched-Attempt": "1"}
                t = time.perf_counter()
                async with session.get(url, headers=headers) as resp:
                    await resp.read()
                latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies


async def _create_jobs(
    base: str, prefix: str, total: int, concurrency: int, sink: str, limit_s: float
) -> tuple[list[float], float, int]:
    import aiohttp

    latencies: list[float] = []
    errors = 0
    timeout = aiohttp.ClientTimeout(total=30)
    queue = iter(range(total))
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def client() -> None:
            nonlocal errors
            for i in queue:
                if time.perf_counter() - started > limit_s:
                    return  # an overloaded node answers slowly: a level gets limit_s at most
                job = {
                    "id": f"{prefix}{i:05d}",
                    "schedule": {"cron": "0 0 1 1 *"},
                    "task": {"type": "http", "url": sink + "/never"},
                }
                t = time.perf_counter()
                try:
                    async with session.post(base + "/v1/jobs", json=job, timeout=timeout) as resp:
                        await resp.read()
                        errors += resp.status != 201
                except (TimeoutError, aiohttp.ClientError):
                    errors += 1
                latencies.append((time.perf_counter() - t) * 1000)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, errors


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="spread 1,000 + peers, 2 failovers, API: < ~2 min"
    )
    parser.add_argument("--smoke", action="store_true", help="a tiny run for the test suite")
    parser.add_argument("--only", help="comma-separated: spread,burst,failover,api,api_idle,big")
    parser.add_argument("--sizes", help="job counts for spread (and burst), comma-separated")
    parser.add_argument("--window", type=int, help="measured window of each spread run, seconds")
    parser.add_argument("--big-jobs", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=3, help="raftsched cluster size (default 3)")
    parser.add_argument("--peers", help=f"comma-separated subset of {','.join(PEERS)} ('none': none)")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="py-spy the leader and a follower after each raftsched spread window",
    )
    parser.add_argument(
        "--rev", default="HEAD", help="git revision of raftsched the nodes run (default HEAD; 'worktree')"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    parser.add_argument(
        "--count-calls", action="store_true", help="nodes count calls of hot functions (perturbs timing)"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here (profiles go next to it)")
    args = parser.parse_args()
    bench = Bench(args)
    results = bench.run()
    print("\n" + "\n\n".join(bench.tables) + "\n", flush=True)
    results["tables"] = bench.tables
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        if len(results.get("spread", {})) > 1:
            args.out.with_suffix(".svg").write_text(plot.svg(results))
    print(json.dumps(results["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
