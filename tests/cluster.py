"""A harness of real node processes on 127.0.0.1, shared by the tests and scripts/.

Vocabulary: `start()`, `leader()`, `kill(node)`, `stop(node)`, `pause(node)` / `resume(node)`,
`restart(node)`, `wait_same_digest()`, `api(node, method, path, body)`. Every process it
starts it stops by PID in `close()`, also when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

SECRET = "PVfWzP78ohEAaZ36tNu3MZfCcz3zFqFTnlY3AZD7Zwc"  # as `raftsched secret` makes one


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@dataclass
class Cluster:
    root: Path
    size: int = 3
    members: int | None = None  # the first N nodes are the initial voters; the rest wait to be added
    cluster_keys: dict[str, Any] = field(default_factory=dict)
    node_keys: dict[str, Any] = field(default_factory=dict)
    per_node: dict[str, dict[str, Any]] = field(default_factory=dict)  # node id -> its own keys
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. "broker events" -> keys
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.token = self.cluster_keys.get("api_token")  # sent by api() unless a call says otherwise
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size)
        self.ids = [f"n{i + 1}" for i in range(self.size)]
        for i, node in enumerate(self.ids):
            self.ports[node] = (ports[2 * i], ports[2 * i + 1])
        self.config = self.root / "cluster.ini"
        self.write_config()

    def write_config(self) -> None:
        """(Re)write the cluster file from the keys; a node reads it when it starts."""
        self.config.write_text(self._ini())

    def _ini(self) -> str:
        keys = {
            "secret": SECRET,
            "data_dir": "./data",
            "lookahead_s": 2,
            "node_timeout_s": 2,
            **self.cluster_keys,
        }
        if self.members is not None:
            keys["members"] = ",".join(self.ids[: self.members])
        lines = ["[cluster]", *(f"{k} = {v}" for k, v in keys.items())]
        for node in self.ids:
            raft, http = self.ports[node]
            zone = "abc"[self.ids.index(node) % 3]
            nk = {
                "raft": f"127.0.0.1:{raft}",
                "http": f"127.0.0.1:{http}",
                "tags": f"zone={zone}",
                "http_allow": "127.0.0.0/8",
                "shutdown_grace_s": 3,
                **self.node_keys,
                **self.per_node.get(node, {}),
            }
            lines += [f"[node {node}]", *(f"{k} = {v}" for k, v in nk.items())]
        for name, section_keys in self.sections.items():
            lines += [f"[{name}]", *(f"{k} = {v}" for k, v in section_keys.items())]
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ processes

    def start(self, *nodes: str) -> None:
        for node in nodes or self.ids:
            log = (self.root / f"{node}.log").open("ab")
            self.procs[node] = subprocess.Popen(
                [
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
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.root,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            log.close()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def node_body(self, node: str) -> dict[str, Any]:
        """The POST /v1/nodes body that adds `node` as its [node] section describes it."""
        raft, http = self.ports[node]
        return {"id": node, "raft": f"127.0.0.1:{raft}", "http": self.url(node)}

    def wait_exit(self, node: str, timeout: float = 30) -> int:
        """Wait for a node to exit by itself (a removed node stops); returns its status."""
        code = self.procs[node].wait(timeout)
        del self.procs[node]
        return code

    def kill(self, node: str) -> None:
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGCONT)
        proc.kill()
        proc.wait(10)

    def stop(self, node: str, timeout: float = 20) -> int:
        """SIGTERM `node` and wait for its exit status. One that overruns `timeout` is made to dump
        its stacks into its log (SIGUSR1), killed, and reported with the logs."""
        proc = self.procs.pop(node)
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"{node} did not stop within {timeout} s\n{self.logs(20000)}") from None

    def restart(self, node: str) -> None:
        if node in self.procs:
            self.kill(node)
        self.start(node)

    def pause(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self.procs[node].send_signal(signal.SIGCONT)

    def close(self) -> None:
        for node in list(self.procs):
            with contextlib.suppress(Exception):
                self.kill(node)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float = 40) -> Any:
        """Poll `check` until it returns something true; fail with the nodes' logs on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def logs(self, tail: int | None = 4000) -> str:
        """Each node's log, its last `tail` characters (None: all of it)."""
        return "\n".join(
            f"--- {n}\n" + (self.root / f"{n}.log").read_text()[-(tail or 0) :]
            for n in self.ids
            if (self.root / f"{n}.log").exists()
        )

    # ------------------------------------------------------------ HTTP

    def url(self, node: str) -> str:
        return f"http://127.0.0.1:{self.ports[node][1]}"

    def api(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15,
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url(node) + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", **self._auth(headers), **(headers or {})},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw, status = resp.read(), resp.status
        except urllib.error.HTTPError as exc:
            raw, status = exc.read(), exc.code
        return status, (json.loads(raw) if raw else None)

    def _auth(self, headers: dict[str, str] | None) -> dict[str, str]:
        if self.token and "Authorization" not in (headers or {}):
            return {"Authorization": f"Bearer {self.token}"}
        return {}

    def status(self, node: str) -> dict[str, Any] | None:
        try:
            code, body = self.api(node, "GET", "/v1/status", timeout=2)
        except OSError:
            return None
        return body if code == 200 else None

    def leader(self, timeout: float = 30, exclude: tuple[str, ...] = ()) -> str:
        """The node that leads and has begun its term as scheduler."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.alive():
                if node in exclude:
                    continue
                st = self.status(node)
                if st and st["role"] == "leader" and st["scheduler_term"] == st["term"]:
                    return node
            time.sleep(0.1)
        raise TimeoutError("no leader\n" + self.logs())

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.alive())
        while pending and time.monotonic() < deadline:
            for node in list(pending):
                with contextlib.suppress(OSError):
                    if self.api(node, "GET", "/v1/health", timeout=2)[0] == 200:
                        pending.discard(node)
            time.sleep(0.1)
        if pending:
            raise TimeoutError(f"not healthy: {sorted(pending)}\n" + self.logs())

    def wait_registered(self, count: int | None = None, timeout: float = 30) -> None:
        want = count or self.size
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node = self.alive()[0]
            with contextlib.suppress(OSError):
                code, body = self.api(node, "GET", "/v1/nodes", timeout=2)
                if code == 200 and sum(1 for n in body["items"] if n["alive"]) >= want:
                    return
            time.sleep(0.1)
        raise TimeoutError("nodes did not register\n" + self.logs())

    def wait_same_digest(self, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        digests: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            digests = {}
            for node in self.alive():
                st = self.status(node)
                digests[node] = st["digest"] if st else None
            values = set(digests.values())
            if len(values) == 1 and None not in values:
                return values.pop()  # type: ignore[return-value]
            time.sleep(0.2)
        raise AssertionError(f"digests differ: {digests}")


class Sink:
    """An HTTP endpoint on loopback that records every request's X-Raftsched-* headers, and the
    headers named in `keep` (lower case)."""

    def __init__(self, keep: tuple[str, ...] = ()) -> None:
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self._record()

            def do_POST(self) -> None:  # noqa: N802
                self._record()

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                event = {
                    k.lower(): v
                    for k, v in self.headers.items()
                    if k.lower().startswith("x-raftsched-") or k.lower() in keep
                }
                event["t"] = time.time()
                event["path"] = self.path
                event["body"] = body.decode(errors="replace")
                with sink.lock:
                    sink.events.append(event)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [e for e in self.events if e.get("x-raftsched-job-id") == job_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
