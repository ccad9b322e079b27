"""One chaos run: a ChaosCluster with every workload going, faults by name, then the verdict.

    run = ChaosRun(size=3, seed=1)
    run.start()
    run.fault("kill", "leader", duration_s=3)   # or pause / restart / isolate / oneway / split / clock / ...
    history, results, report = run.finish()    # heal, quiesce, probe, collect, check
    run.close()                                # always (also on failure): processes, rules, files

Shared by tests/integration/test_chaos.py and scripts/chaos.py.
"""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path
from typing import Any

from .checkers import History, Result, check_all
from .figures import figures
from .harness import ChaosCluster, kill_orphans_of_dead_runs, make_root
from .history import AdminClient, OpLog, collect, quiesce
from .workload import Churn, OneShots, SlotRacer, base_jobs, create_jobs, probe_bad_input
from cluster import Sink

__all__ = ["ChaosRun"]

CLUSTER_KEYS = {"lookahead_s": 2, "node_timeout_s": 2, "history_per_job": 100000}


class ChaosRun:
    def __init__(
        self,
        size: int = 3,
        spares: int = 0,
        seed: int = 0,
        churn: bool = True,
        oneshots: bool = True,
        overlap: bool = True,
        root: Path | None = None,
        cluster_keys: dict[str, Any] | None = None,
        reschedule: bool = True,
        races: bool = True,
        jobs: list[dict[str, Any]] | None = None,
    ) -> None:
        kill_orphans_of_dead_runs()
        self.root = root or make_root()
        self.seed = seed
        self.rng = random.Random(seed)
        self.cluster = ChaosCluster(
            self.root,
            size + spares,
            members=size if spares else None,
            cluster_keys={**CLUSTER_KEYS, **(cluster_keys or {})},
            node_keys={"shutdown_grace_s": 3},
        )
        self.size = size
        self.members = list(self.cluster.ids[:size])
        self.spares = list(self.cluster.ids[size:])
        self.sink = Sink()
        self.log = OpLog()
        self.admin = AdminClient(self.cluster, self.log, "setup")
        self.churn = (
            Churn(self.cluster, self.log, self.cluster.gt_dir, seed, reschedule=reschedule) if churn else None
        )
        self.oneshots = OneShots(self.cluster, self.log, self.cluster.gt_dir, seed) if oneshots else None
        self.lookahead_s = float(self.cluster.cluster_keys.get("lookahead_s", 2))
        self.racer = (
            SlotRacer(self.cluster, self.log, self.cluster.gt_dir, seed, self.lookahead_s, reschedule)
            if races
            else None
        )
        self.overlap = overlap
        self.jobs = jobs  # None: the base workload (workload.base_jobs)
        self.paused: set[str] = set()
        self.down: set[str] = set()
        self.journal_results: list[dict[str, Any]] = []
        self.stop_hangs: list[dict[str, Any]] = []
        self.events: list[str] = []

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self.cluster.start(*self.members)
        self.cluster.leader(timeout=60)
        self.cluster.wait_registered(len(self.members), timeout=60)
        self.cluster.observer.start()
        jobs = (
            self.jobs
            if self.jobs is not None
            else base_jobs(self.cluster.gt_dir, self.sink.url, self.overlap)
        )
        create_jobs(self.cluster, self.admin, jobs)
        if self.churn:
            self.churn.start()
        if self.oneshots:
            self.oneshots.start()
        if self.racer:
            self.racer.start()

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        self.events.append(line)
        print(line, flush=True)

    def leader(self, timeout: float = 30) -> str:
        return self.cluster.leader(timeout=timeout, exclude=tuple(self.paused | self.down))

    def target(self, which: str) -> str:
        running = [n for n in self.members if n not in self.paused | self.down]
        if which == "leader":
            return self.leader()
        if which == "follower":
            lead = self.leader()
            return self.rng.choice([n for n in running if n != lead])
        if which in self.cluster.ids:
            return which
        return self.rng.choice(running)

    # ------------------------------------------------------------ faults

    def fault(
        self, kind: str, which: str = "leader", duration_s: float = 3.0, **extra: Any
    ) -> dict[str, Any]:
        """Inject one fault, hold it `duration_s`, undo it; returns what was done."""
        c = self.cluster
        if kind == "restart_all":
            self.say("full-cluster kill -9, then restart")
            for node in list(self.members):
                if node in c.procs:
                    c.kill(node)
            time.sleep(duration_s)
            for node in self.members:
                c.note("start", node=node)
            c.start(*self.members)
            self.down.clear()
            self.paused.clear()
            return {"kind": kind}
        node = self.target(which)
        self.say(f"{kind} {node} ({which}) for {duration_s:.1f} s")
        if kind == "kill":
            c.kill(node)
            self.down.add(node)
            time.sleep(duration_s)
            c.note("start", node=node)
            c.start(node)
            self.down.discard(node)
        elif kind == "pause":
            c.pause(node)
            self.paused.add(node)
            time.sleep(duration_s)
            c.resume(node)
            self.paused.discard(node)
        elif kind == "restart":
            code = self.stop(node)
            self.down.add(node)
            time.sleep(min(duration_s, 1.0))
            c.note("start", node=node)
            c.start(node)
            self.down.discard(node)
            return {"kind": kind, "node": node, "exit": code}
        elif kind in ("isolate", "oneway", "split"):
            self.cut(kind, node, extra.get("direction"))
            time.sleep(duration_s)
            c.heal()
        elif kind == "clock":
            offset = extra.get("offset_s") or self.rng.choice([-0.8, -0.4, 0.4, 0.8])
            self.say(f"  clock offset {offset:+.1f} s on {node} (from its restart on)")
            c.clock_offset(node, offset)
        elif kind == "journal":
            return self.damage(node, extra.get("mode") or self.rng.choice(["truncate", "flip"]))
        else:
            raise ValueError(f"unknown fault {kind!r}")
        return {"kind": kind, "node": node}

    def stop(self, node: str) -> int | None:
        """SIGTERM a node and wait for it. One that does not stop in time has its stacks dumped
        into its log and is killed (tests/cluster.py): recorded in `stop_hangs`, and the run goes
        on with the node down (None), to be started again like any stopped node."""
        try:
            return self.cluster.stop(node)
        except AssertionError as exc:
            first = str(exc).splitlines()[0]
            self.say(f"  STOP HANG: {first} (stacks dumped into {node}.log, killed)")
            self.stop_hangs.append({"node": node, "what": first, "mono": time.monotonic()})
            return None

    def cut(self, kind: str, node: str, direction: str | None = None) -> None:
        """isolate the node; split it and a minority off; or cut one direction ("mute": what the
        node sends is lost, "deaf": what it is sent) between it and the leader (a follower, when
        it leads)."""
        c = self.cluster
        if kind == "isolate":
            c.isolate(node)
        elif kind == "oneway":
            lead = self.leader()
            partner = lead if node != lead else self.rng.choice([n for n in self.members if n != node])
            direction = direction or self.rng.choice(["mute", "deaf"])
            src, dst = (node, partner) if direction == "mute" else (partner, node)
            self.say(f"  cut {src} -> {dst} only ({node} {direction})")
            c.cut_one_way(src, dst)
        else:
            minority = [node] + self.rng.sample(
                [n for n in self.members if n != node], (len(self.members) - 1) // 2 - 1
            )
            majority = [n for n in self.members if n not in minority]
            self.say(f"  split {minority} | {majority}")
            c.split(minority, majority)

    def damage(self, node: str, mode: str) -> dict[str, Any]:
        """Stop a follower, damage its journal, start it, and record what it did: refused to start
        (exit status and message), recovered (same digest as the others), or diverged."""
        c = self.cluster
        self.stop(node)
        self.down.add(node)
        info = c.damage_journal(node, mode, self.rng)
        c.note("start", node=node)
        log_at = (self.root / f"{node}.log").stat().st_size
        c.start(node)
        code = c.exit_status(node, timeout=8)
        tail = (self.root / f"{node}.log").read_bytes()[log_at:].decode(errors="replace")
        outcome: dict[str, Any] = {**info, "exit": code, "log": tail[-1500:]}
        if code is not None:
            outcome["result"] = "refused to start"
            self.say(f"  journal {mode} on {node}: the node exited with {code}; wiping its data to rejoin")
            shutil.rmtree(c.data_dir(node))
            c.note("start", node=node)
            c.start(node)
        else:
            try:
                c.wait_same_digest(timeout=30)
                outcome["result"] = "recovered: same digest as its peers"
            except AssertionError as exc:
                outcome["result"] = "DIVERGED: serves a different state"
                outcome["digests"] = str(exc)
        self.down.discard(node)
        self.say(f"  journal {mode} on {node}: {outcome['result']}")
        self.journal_results.append(outcome)
        return outcome

    def add_spare(self) -> str | None:
        if not self.spares:
            return None
        node = self.spares.pop(0)
        via = self.leader()
        self.say(f"membership: add {node} via {via}")
        code, body = self.cluster.add_member(node, via)
        self.say(f"  POST /v1/nodes -> {code}")
        if code == 200:
            self.members.append(node)
        return node

    def remove_member(self, node: str) -> None:
        via = self.leader()
        self.say(f"membership: remove {node} via {via}")
        code, body = self.cluster.remove_member(node, via)
        self.say(f"  DELETE /v1/nodes/{node} -> {code}")
        if code == 202:
            self.members.remove(node)
            exit_code = self.cluster.exit_status(node, timeout=40)
            self.say(f"  {node} exited with {exit_code}")

    # ------------------------------------------------------------ the verdict

    def recover(self) -> None:
        c = self.cluster
        c.heal()
        for node in list(self.paused):
            c.resume(node)
        self.paused.clear()
        for node in self.members:
            if node not in c.procs:
                c.note("start", node=node)
                c.start(node)
        self.down.clear()

    def finish(self, **settings: Any) -> tuple[History, list[Result], dict[str, Any]]:
        self.recover()
        if self.churn:
            self.churn.stop()
        if self.oneshots:
            self.oneshots.stop()
        if self.racer:
            self.racer.stop()
        c = self.cluster
        c.leader(timeout=60)
        try:
            c.wait_healthy(timeout=60)
        except TimeoutError as exc:  # recorded; the convergence checker says what it means
            self.say(f"  not every node is healthy: {str(exc).splitlines()[0]}")
        final = AdminClient(c, self.log, "final")
        quiesce(c, final, timeout=60)
        probes = probe_bad_input(c, self.rng.choice(c.alive()))
        history = collect(c, self.log, list(self.sink.events), lookahead_s=self.lookahead_s, **settings)
        history.probes = probes
        c.observer.stop()
        results = check_all(history)
        report = figures(
            history,
            results,
            seed=self.seed,
            nodes=len(self.members),
            fault_count=sum(1 for f in c.faults if f["kind"] not in ("start", "resume", "heal")),
            resources=c.observer.resources,
            journal=self.journal_results,
            stop_hangs=self.stop_hangs,
        )
        return history, results, report

    def save_logs(self, dest: Path) -> None:
        """Copy every node's log (stack dumps included) to `dest`: evidence that outlives close()."""
        dest.mkdir(parents=True, exist_ok=True)
        for log in self.root.glob("*.log"):
            shutil.copy2(log, dest / log.name)

    def close(self, keep: bool = False) -> None:
        loops = [loop for loop in (self.churn, self.oneshots, self.racer) if loop is not None]
        for loop in loops:
            loop.stop_event.set()
        try:
            self.cluster.close()  # the clients' calls in flight now fail at once
            for loop in loops:
                loop.stop(wait_s=5)  # daemon threads: never keep the process alive
        finally:
            self.sink.close()
            if not keep:
                shutil.rmtree(self.root, ignore_errors=True)
