"""Start a local cluster from cluster.example.ini: N identical nodes, example jobs, the API.

    python scripts/cluster.py [--config FILE] [--no-examples]

Writes `.cluster/cluster.ini` (the example with a fresh secret and API token) on first use, starts
one process per node, adds a few example jobs, prints where the API is (with a dashboard link that
carries the token in its fragment), and stops every node it started on Ctrl-C: one at a time
(SIGTERM by PID, wait for its exit, then the next), so that each stopping node still has a
quorum to hand its pending runs back to (a whole cluster stopped at once has none, and its pending
runs waited for the restart). The nodes run in their own sessions, so the terminal's Ctrl-C
reaches this launcher only.
The CLI finds the token in `.cluster/cluster.ini` by itself; `raftsched token` prints it for curl.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from raftsched import config  # noqa: E402

EXAMPLES = [
    {
        "id": "hello",
        "schedule": {"every": 10},
        "description": "prints a greeting every 10 s",
        "task": {"type": "shell", "command": ["echo", "hello from raftsched"]},
    },
    {
        "id": "clock",
        "schedule": {"cron": "*/15 * * * * *", "timezone": "Europe/Berlin"},
        "description": "6-field cron, seconds first: every 15 s",
        "task": {"type": "shell", "command": ["date", "-u"]},
    },
    {
        "id": "disk-usage",
        "schedule": {"cron": "*/5 * * * *"},
        "route": {"strategy": "broadcast"},
        "description": "every 5 minutes on every node",
        "task": {"type": "shell", "command": ["df", "-h", "/"]},
    },
]


def _request(
    url: str, method: str = "GET", body: object = None, token: str | None = None
) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _wait_healthy(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _request(url + "/v1/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the cluster did not become healthy at {url}")


def _add_examples(url: str, token: str | None) -> None:
    for job in EXAMPLES:
        code, body = _request(url + "/v1/jobs", "POST", job, token)
        print(f"job {job['id']}: {'added' if code == 201 else 'exists' if code == 409 else body}")


def _print_addresses(cluster: config.ClusterConfig, path: Path) -> None:
    print(
        f"\nraftsched cluster '{cluster.name}' is up ({len(cluster.members)} nodes; logs in {path.parent}):"
    )
    fragment = f"#token={cluster.api_token}" if cluster.api_token else ""
    for node_id in cluster.members:
        url = cluster.nodes[node_id].http_url
        print(f"  {node_id}: {url}/{fragment}   (API: {url}/v1/status)")
    if cluster.api_token:
        print(f"\nAPI token (also in {path}): {cluster.api_token}")
    first = cluster.nodes[cluster.members[0]].http_url
    print(f"\ntry: .venv/bin/raftsched jobs list --url {first}\nCtrl-C stops every node.")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=ROOT / ".cluster" / "cluster.ini")
    parser.add_argument("--no-examples", action="store_true")
    args = parser.parse_args()
    if not args.config.exists():
        args.config.parent.mkdir(parents=True, exist_ok=True)
        config.write_local_cluster(
            ROOT / "cluster.example.ini", args.config, config.new_secret(), api_token=config.new_secret()
        )
        print(f"wrote {args.config} with a fresh secret and API token")
    cluster, _ = config.load(args.config, "n1")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for node_id in cluster.members:
        log = (args.config.parent / f"{node_id}.log").open("ab")
        procs[node_id] = subprocess.Popen(
            [sys.executable, "-m", "raftsched", "node", "--config", str(args.config), "--node", node_id],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to the launcher, which stops the nodes in turn
        )
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        first = cluster.nodes[cluster.members[0]].http_url
        _wait_healthy(first)
        if not args.no_examples:
            _add_examples(first, cluster.api_token)
        _print_addresses(cluster, args.config)
        while not stop and all(p.poll() is None for p in procs.values()):
            time.sleep(0.5)
    finally:
        stop_in_turn(procs)
    return 0


def stop_in_turn(procs: dict[str, subprocess.Popen[bytes]], timeout_s: float = 40) -> None:
    """SIGTERM each node and wait for it to exit before the next: the others keep a quorum, so
    it hands its unstarted runs back and the leader moves them at once (docs/design.md, "Clean
    stops"). A node that does not exit within `timeout_s` is killed."""
    for node_id, proc in procs.items():
        if proc.poll() is not None:
            continue
        print(f"stopping {node_id} (pid {proc.pid})", flush=True)
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    sys.exit(main())
