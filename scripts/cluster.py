"""Start a local cluster from cluster.example.ini: N nodes, example jobs, the dashboard.

    python scripts/cluster.py [--dir DIR] [--free-ports] [--no-restart] [--no-examples]

On first use it writes DIR/cluster.ini (default DIR: .cluster): the example with a fresh secret
and API token, and the node-local fences opened for one's own machine (shell strings, python
tasks from examples/, HTTP to loopback). It starts one process per node (their PIDs, logs in DIR),
waits until every node has registered, adds example jobs of each task type, and prints where the
dashboard is (a link that carries the token in its fragment).

A node that dies (kill -9 one to see it) is reported with how it ended and the command that
restarts it, and the launcher restarts it itself after a short pause (not with --no-restart):
the other nodes keep the cluster up meanwhile. Ctrl-C stops the nodes one at a time (SIGTERM,
then wait for it to exit), followers first, so that each one's clean stop hands its runs back to
a cluster that still has a quorum; a second Ctrl-C kills the rest. The CLI finds the token in
.cluster/cluster.ini by itself; `raftsched token` prints it for curl.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftsched import config  # noqa: E402

RESTART_DELAY_S = 2.0  # the pause before a dead node is started again; doubled while it keeps dying
RESTART_MAX_DELAY_S = 30.0
STABLE_AFTER_S = 30.0  # a node that lived this long before dying starts over at RESTART_DELAY_S
MAX_FAST_DEATHS = 5  # deaths in a row, each before STABLE_AFTER_S, after which it is left down
STOP_TIMEOUT_S = 60.0  # a node's clean stop: its shutdown_grace_s (30 s) and the hand-over
POLL_S = 0.5

# What the local cluster's nodes may run, beyond cluster.example.ini's strict defaults: this is
# one's own machine, and the example jobs show every task type.
LOCAL_NODE_SETTINGS = {
    "allow_shell": "true",
    "python_allow": "examples",
    "python_path": str(ROOT),  # examples/ lives at the repository's root
    "http_allow": "127.0.0.0/8",
}


def example_jobs(cluster: config.ClusterConfig) -> list[dict[str, Any]]:
    """One job per task type, plus a broadcast; the HTTP one calls the first node's health check."""
    first = cluster.nodes[cluster.members[0]]
    return [
        _job("hello", {"every": 10}, "argv command: no shell involved", ["echo", "hello from raftsched"]),
        _job(
            "clock",
            {"cron": "*/15 * * * * *", "timezone": "Europe/Berlin"},
            "6-field cron, seconds first: every 15 s",
            ["date", "-u"],
        ),
        _job(
            "shell-string",
            {"every": 20},
            "a shell string (/bin/sh -c; the node needs allow_shell = true)",
            'echo "run $RAFTSCHED_RUN_ID, attempt $RAFTSCHED_ATTEMPT, on $RAFTSCHED_NODE" | tr a-z A-Z',
        ),
        {
            "id": "health-check",
            "schedule": {"every": 15},
            "description": f"HTTP GET of {first.id}'s /v1/health over loopback; fails while it is down",
            "task": {"type": "http", "method": "GET", "url": f"{first.http_url}/v1/health"},
            "timeout": 5,
        },
        _python("py-greet", 20, "a python callable that takes `context`", "greet", {"name": "stranger"}),
        _python("py-nap", 30, "an async python callable", "nap", {"seconds": 0.5}),
        {
            **_job("everywhere", {"every": 30}, "broadcast: one run on every node", ["uname", "-n"]),
            "route": {"strategy": "broadcast"},
        },
    ]


def _job(job_id: str, schedule: dict[str, Any], description: str, command: list[str] | str) -> dict[str, Any]:
    task = {"type": "shell", "command": command}
    return {"id": job_id, "schedule": schedule, "description": description, "task": task, "timeout": 30}


def _python(job_id: str, every: float, description: str, name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    task = {"type": "python", "callable": f"examples.tasks:{name}", "kwargs": kwargs}
    return {
        "id": job_id,
        "schedule": {"every": every},
        "description": description,
        "task": task,
        "timeout": 30,
    }


# ---------------------------------------------------------------- the API, from outside


def _request(
    url: str, method: str = "GET", body: object = None, token: str | None = None, timeout: float = 10
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _answers(url: str, path: str, token: str | None) -> Any:
    """The body of a 200 answer, or None (no answer, or not 200)."""
    try:
        code, body = _request(url + path, token=token, timeout=1.0)
    except (OSError, ValueError):
        return None
    return body if code == 200 else None


# ---------------------------------------------------------------- processes


def _die_with_launcher() -> None:
    """In the node's process before exec: SIGTERM it (a clean stop) if the launcher dies, since
    its own session keeps the terminal's Ctrl-C from reaching it."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _shown(path: Path) -> str:
    """`path` relative to the working directory when under it: shorter to read and to paste."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass
class Member:
    """One node process; the invariant: `proc` is the live process, or the last one, or None."""

    node_id: str
    http_url: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None  # when the launcher starts it again; None: not planned
    fast_deaths: int = 0
    back: bool = True  # False from a restart until it answers its health check

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, restarted: bool = False) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C reaches the launcher only: it stops nodes in turn
                preexec_fn=_die_with_launcher,
            )
        self.started_at, self.restart_at, self.back = time.monotonic(), None, not restarted

    def command(self) -> str:
        """What restarts this node by hand, from the repository's root."""
        argv = [_shown(Path(a)) if a.startswith(str(ROOT)) else a for a in self.argv]
        return f"cd {shlex.quote(str(ROOT))} && {shlex.join(argv)} >> {shlex.quote(str(self.log))} 2>&1 &"

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "".join(self.log.read_text(errors="replace").splitlines(keepends=True)[-lines:])
        except OSError:
            return ""


@dataclass
class Launcher:
    cluster: config.ClusterConfig
    config_path: Path
    restart: bool
    out: TextIO = sys.stdout
    members: dict[str, Member] = field(default_factory=dict)
    signals: int = 0  # Ctrl-C / SIGTERM received: 1 stops the nodes in turn, 2 kills the rest

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def build(self) -> None:
        for node_id in self.cluster.members:
            argv = [
                sys.executable,
                "-m",
                "raftsched",
                "node",
                "--config",
                str(self.config_path),
                "--node",
                node_id,
            ]
            url = self.cluster.nodes[node_id].http_url
            self.members[node_id] = Member(node_id, url, argv, self.config_path.parent / f"{node_id}.log")

    def start_all(self) -> None:
        for member in self.members.values():
            member.start()
            self.say(f"started {member.node_id}: pid {member.pid}, log {_shown(member.log)}")

    # ------------------------------------------------------------ coming up

    def wait_registered(self, timeout_s: float = 90.0) -> bool:
        """Until GET /v1/nodes (from any node) shows every member alive; False if a node exited
        first, the launcher was asked to stop, or the time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.signals:
            dead = [m for m in self.members.values() if not m.alive()]
            if dead:
                for member in dead:
                    code = member.proc.returncode if member.proc else 0
                    self.say(
                        f"{member.node_id} {how_it_ended(code)} at start; its log ends:\n{member.log_tail()}"
                    )
                return False
            if self._all_alive():
                return True
            time.sleep(POLL_S)
        if not self.signals:
            self.say(
                f"the nodes did not all register within {timeout_s:.0f} s:"
                f" see the logs in {_shown(self.config_path.parent)}"
            )
        return False

    def _all_alive(self) -> bool:
        for member in self.members.values():
            body = _answers(member.http_url, "/v1/nodes", self.cluster.api_token)
            if body is not None:
                alive = {n["id"] for n in body["items"] if n.get("alive")}
                return alive >= set(self.members)
        return False

    def add_examples(self) -> None:
        url = next(iter(self.members.values())).http_url
        refused = False
        for job in example_jobs(self.cluster):
            code, body = _request(url + "/v1/jobs", "POST", job, self.cluster.api_token)
            refused |= code not in (201, 409)
            outcome = "added" if code == 201 else "exists" if code == 409 else f"refused: {code} {body}"
            self.say(f"  job {job['id']:<13} {outcome}")
        if refused:
            self.say(
                "  (a cluster file written by an older launcher may not allow what they need:"
                f" delete {_shown(self.config_path)} to get a new one)"
            )

    def print_addresses(self) -> None:
        c = self.cluster
        fragment = f"#token={c.api_token}" if c.api_token else ""
        self.say(
            f"\nraftsched cluster '{c.name}' is up: {len(self.members)} nodes,"
            f" logs and data in {_shown(self.config_path.parent)}"
        )
        for m in self.members.values():
            self.say(f"  {m.node_id}  pid {m.pid:<8} dashboard {m.http_url}/{fragment}")
        if c.api_token:
            self.say(f"\nAPI token (also in {_shown(self.config_path)}): {c.api_token}")
        victim = list(self.members.values())[-1]
        cli = ".venv/bin/raftsched" if (ROOT / ".venv/bin/raftsched").exists() else "raftsched"
        config_flag = (
            ""
            if self.config_path == ROOT / ".cluster" / "cluster.ini"
            else f" --config {_shown(self.config_path)}"
        )
        self.say(
            f"\ntry:  {cli} jobs list{config_flag}\n"
            f"      kill -9 {victim.pid}   # {victim.node_id}: the others keep firing;"
            f" {'the launcher restarts it' if self.restart else 'the launcher says how to restart it'}\n"
            "Ctrl-C stops every node, one at a time."
        )

    # ------------------------------------------------------------ watching

    def watch(self) -> None:
        """Until Ctrl-C: report deaths, restart (after a pause), and say when a node is back."""
        while not self.signals:
            now = time.monotonic()
            for member in self.members.values():
                if member.restart_at is None and member.proc is not None and not member.alive():
                    self._on_death(member, now)
                elif member.restart_at is not None and now >= member.restart_at:
                    member.start(restarted=True)
                    self.say(f"{member.node_id} restarted: pid {member.pid}")
                elif member.alive() and not member.back and _answers(member.http_url, "/v1/health", None):
                    member.back = True
                    self.say(f"{member.node_id} is back: healthy at {member.http_url}")
            time.sleep(POLL_S)

    def _on_death(self, member: Member, now: float) -> None:
        assert member.proc is not None
        lived_s = now - member.started_at
        member.fast_deaths = member.fast_deaths + 1 if lived_s < STABLE_AFTER_S else 1
        self.say(
            f"{member.node_id} (pid {member.pid}) {how_it_ended(member.proc.returncode)}"
            f" after {lived_s:.0f} s; the other nodes keep the cluster up while a majority lives"
        )
        self.say(f"  restart it with: {member.command()}")
        if not self.restart:
            self.say("  (--no-restart: the launcher leaves it down)")
            member.proc = None  # reported; a node restarted by hand is not the launcher's to stop
            return
        if member.fast_deaths > MAX_FAST_DEATHS:
            self.say(
                f"  it died {MAX_FAST_DEATHS} times in a row, each within {STABLE_AFTER_S:.0f} s"
                f" of its start: left down. Its log ends:\n{member.log_tail()}"
            )
            member.proc = None
            return
        delay = min(RESTART_MAX_DELAY_S, RESTART_DELAY_S * 2 ** (member.fast_deaths - 1))
        member.restart_at = now + delay
        self.say(f"  the launcher restarts it in {delay:.0f} s (--no-restart turns that off)")

    # ------------------------------------------------------------ stopping

    def stop_all(self) -> bool:
        """One node at a time: SIGTERM, wait for it to exit, then the next; the leader last, so
        that leadership moves once at most. True if each one that was running stopped cleanly."""
        clean = True
        for member in self._stop_order():
            if member.alive():
                clean &= self._stop(member)
        return clean

    def _stop_order(self) -> list[Member]:
        leader = None
        for member in self.members.values():
            status = (
                _answers(member.http_url, "/v1/status", self.cluster.api_token) if member.alive() else None
            )
            if status is not None:
                leader = status.get("leader")
                break
        return sorted(self.members.values(), key=lambda m: m.node_id == leader)

    def _stop(self, member: Member) -> bool:
        assert member.proc is not None
        self.say(f"stopping {member.node_id} (pid {member.pid}) ...")
        began = time.monotonic()
        member.proc.send_signal(signal.SIGTERM)
        while member.proc.poll() is None:
            if self.signals > 1 or time.monotonic() - began > STOP_TIMEOUT_S:
                member.proc.kill()
                member.proc.wait()
                self.say(f"  {member.node_id} killed")
                return False
            time.sleep(0.1)
        code = member.proc.returncode
        self.say(f"  {member.node_id} stopped in {time.monotonic() - began:.1f} s ({how_it_ended(code)})")
        return code == 0

    def kill_all(self) -> None:
        """The last resort (the launcher itself failing): every node still running, by PID."""
        for member in self.members.values():
            if member.alive():
                assert member.proc is not None
                member.proc.kill()
                member.proc.wait()


# ---------------------------------------------------------------- set-up


def free_ports(n: int) -> list[int]:
    """n ports free on 127.0.0.1 now (held together, so that they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def write_config(path: Path, pick_ports: bool) -> None:
    """The example with fresh credentials, the local fences opened, and free ports if asked."""
    example = ROOT / "cluster.example.ini"
    settings = {f"node {node_id}": dict(LOCAL_NODE_SETTINGS) for node_id in node_sections(example)}
    if pick_ports:
        ports = iter(free_ports(2 * len(settings)))
        for values in settings.values():
            values["raft"], values["http"] = f"127.0.0.1:{next(ports)}", f"127.0.0.1:{next(ports)}"
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.write_local_cluster(example, path, config.new_secret(), config.new_secret(), settings)


def node_sections(path: Path) -> list[str]:
    """The ids of a cluster file's [node] sections, in file order."""
    return re.findall(r"^\[node\s+(\S+?)\s*\]", path.read_text(encoding="utf-8"), re.MULTILINE)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / ".cluster",
        help="where the cluster file, logs and data go (default: .cluster)",
    )
    parser.add_argument(
        "--free-ports", action="store_true", help="a new cluster file gets free ports, not 7101.../8101..."
    )
    parser.add_argument(
        "--no-restart", action="store_true", help="report a dead node, but leave restarting it to you"
    )
    parser.add_argument("--no-examples", action="store_true", help="add no example jobs")
    return parser.parse_args(argv)


def _on_signal(launcher: Launcher) -> Callable[[int, object], None]:
    def handler(signum: int, _frame: object) -> None:
        launcher.signals += 1
        if launcher.signals == 1:
            launcher.say(
                f"\n{signal.Signals(signum).name}: stopping the nodes one at a time (again: kill them)"
            )

    return handler


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    path = args.dir.absolute() / "cluster.ini"
    if not path.exists():
        write_config(path, args.free_ports)
        print(
            f"wrote {_shown(path)}: a fresh secret and API token;"
            " shell strings, python tasks from examples/ and loopback HTTP allowed"
        )
    cluster, _ = config.load(path, node_sections(path)[0])
    launcher = Launcher(cluster, path, restart=not args.no_restart)
    signal.signal(signal.SIGINT, _on_signal(launcher))
    signal.signal(signal.SIGTERM, _on_signal(launcher))
    launcher.build()
    try:
        launcher.start_all()
        if launcher.wait_registered():
            if not args.no_examples:
                launcher.say("every node has registered; example jobs:")
                launcher.add_examples()
            launcher.print_addresses()
            launcher.watch()
        clean = launcher.stop_all()
    finally:
        launcher.kill_all()
    return 0 if clean and launcher.signals else 1


if __name__ == "__main__":
    sys.exit(main())
