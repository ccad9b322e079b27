"""The quickstart launcher (scripts/cluster.py) as a stranger runs it: every example job succeeds,
a node killed with -9 is reported and restarted while the others keep firing, and Ctrl-C stops
the nodes one at a time and exits 0.

The launcher runs as a subprocess on a temporary directory with free ports. Every process is
stopped by PID in the end: the launcher, and each node PID it printed (checked to be one of its
nodes first, in case the PID was reused).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from raftsched import config

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = ROOT / "scripts" / "cluster.py"
# One per task type, and a broadcast; scripts/cluster.py's example_jobs().
EXAMPLES = {"hello", "clock", "shell-string", "health-check", "py-greet", "py-nap", "everywhere"}


class Output:
    """The launcher's stdout, line by line, read by a thread so that a test can wait for a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Once the launcher has exited: the rest of its output, then the pipe closed."""
        self._thread.join(10)

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_for(self, pattern: str, timeout_s: float, after: int = 0) -> re.Match[str]:
        """The first line from index `after` on that matches `pattern`."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    match = re.search(pattern, line)
                    if match:
                        return match
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))
                self._changed.wait(left)

    def index(self, pattern: str) -> int:
        return next(i for i, line in enumerate(self.lines) if re.search(pattern, line))

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


def _is_our_node(pid: int, config_path: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(config_path).encode() in cmdline


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@contextlib.contextmanager
def launcher(directory: Path, *flags: str) -> Iterator[tuple[subprocess.Popen[str], Output, set[int]]]:
    """The launcher and the node PIDs it printed, all stopped by PID on the way out."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--dir", str(directory), "--free-ports", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=directory.parent,
        env=env,
    )
    output, pids = Output(proc), set[int]()
    try:
        yield proc, output, pids
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        output.close()
        assert proc.stdout is not None
        proc.stdout.close()
        pids.update(int(p) for p in re.findall(r"\bpid (\d+)", output.text()))
        for pid in pids:
            if _is_our_node(pid, directory / "cluster.ini"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def _api(cluster: config.ClusterConfig, node_id: str, path: str) -> Any:
    req = urllib.request.Request(
        cluster.nodes[node_id].http_url + path, headers={"Authorization": f"Bearer {cluster.api_token}"}
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def _succeeded(cluster: config.ClusterConfig, node_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _api(cluster, node_id, "/v1/runs?state=succeeded&limit=1000")["items"]
    return items


def _ms(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp() * 1000


def _wait(what: str, timeout_s: float, check: Any) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            value = check()
            if value:
                return value
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def test_quickstart_examples_kill_restart_and_ctrl_c(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    with launcher(directory) as (proc, output, pids):
        output.wait_for(r"is up: 3 nodes", 120)
        started = {m[1]: int(m[2]) for m in re.finditer(r"started (n\d): pid (\d+)", output.text())}
        pids.update(started.values())
        assert set(started) == {"n1", "n2", "n3"}
        for job_id in EXAMPLES:
            output.wait_for(rf"job {job_id} +added", 1)
        cluster, _ = config.load(directory / "cluster.ini", "n1")
        assert cluster.api_token and cluster.nodes["n1"].allow_shell
        assert cluster.nodes["n1"].python_allow == ("examples",)

        # Every example job has a succeeded run; the broadcast one, on every node.
        def all_succeeded() -> bool:
            runs = _succeeded(cluster, "n1")
            everywhere = {r["node"] for r in runs if r["job_id"] == "everywhere"}
            return {r["job_id"] for r in runs} >= EXAMPLES and everywhere == {"n1", "n2", "n3"}

        _wait("every example job succeeded", 90, all_succeeded)

        # kill -9 n3: reported, with how to restart it; the others keep firing; it comes back.
        mark = len(output.lines)
        killed_ms = time.time() * 1000
        os.kill(started["n3"], signal.SIGKILL)
        output.wait_for(rf"n3 \(pid {started['n3']}\) killed by signal SIGKILL", 10, mark)
        command = output.wait_for(r"restart it with: (.*)", 1, mark)[1]
        assert "-m raftsched node --config" in command and "--node n3" in command, command
        output.wait_for(r"the launcher restarts it in \d+ s", 1, mark)
        restarted = int(output.wait_for(r"n3 restarted: pid (\d+)", 30, mark)[1])
        pids.add(restarted)
        assert restarted != started["n3"] and _alive(restarted)

        def fired_since_the_kill() -> bool:
            runs = _succeeded(cluster, "n1")
            since = {
                r["job_id"] for r in runs if r["node"] in ("n1", "n2") and _ms(r["scheduled_at"]) > killed_ms
            }
            return len(since) >= 3

        _wait("n1 and n2 keep firing", 60, fired_since_the_kill)
        output.wait_for(r"n3 is back: healthy at ", 60, mark)
        _wait(
            "n3 alive in the node table",
            30,
            lambda: (
                {n["id"] for n in _api(cluster, "n1", "/v1/nodes")["items"] if n["alive"]} == set(started)
            ),
        )

        # Ctrl-C: one node at a time, each gone before the next is asked to stop; exit status 0.
        mark = len(output.lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, output.text()
        output.wait_for(r"stopping the nodes one at a time", 1, mark)
        for node_id in ("n1", "n2", "n3"):
            output.wait_for(rf"{node_id} stopped in [\d.]+ s \(exited with status 0\)", 5, mark)
        log = output.lines[mark:]
        order = [line.split()[1] for line in log if line.startswith("stopping ")]
        assert sorted(order) == ["n1", "n2", "n3"], log
        for first, second in zip(order, order[1:], strict=False):
            stopped = next(i for i, line in enumerate(log) if re.match(rf"  {first} stopped", line))
            assert stopped < next(i for i, line in enumerate(log) if line.startswith(f"stopping {second} "))
        for pid in (*started.values(), restarted):
            assert not _is_our_node(pid, directory / "cluster.ini") or not _alive(pid), pid


def test_no_restart_reports_and_leaves_the_node_down(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    with launcher(directory, "--no-restart", "--no-examples") as (proc, output, pids):
        output.wait_for(r"is up: 3 nodes", 120)
        started = {m[1]: int(m[2]) for m in re.finditer(r"started (n\d): pid (\d+)", output.text())}
        pids.update(started.values())
        assert "job " not in output.text()
        mark = len(output.lines)
        os.kill(started["n2"], signal.SIGKILL)
        output.wait_for(r"n2 \(pid \d+\) killed by signal SIGKILL", 10, mark)
        output.wait_for(r"--no-restart: the launcher leaves it down", 1, mark)
        time.sleep(4)  # past the restart delay: nothing restarts it
        assert not re.search(r"n2 restarted", output.text())
        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, output.text()
        assert "stopping n2" not in output.text()
