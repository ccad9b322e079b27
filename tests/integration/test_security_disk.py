"""What a real node leaves on disk: outputs bounded by `output_max_bytes`, every file its user's
alone, and no start in a data directory others can write (docs/operations.md, "Files and modes")."""

from __future__ import annotations

import os
import stat
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftsched.executors.base import truncation_marker
from raftsched.executors.outputs import output_file_name

from cluster import Cluster

pytestmark = pytest.mark.integration

CAP = 1 << 20  # output_max_bytes of the nodes here
WRITTEN = 30_000_000  # what the task writes: 30 times the cap
FLOOD = f"import sys; sys.stdout.buffer.write(b'y' * {WRITTEN}); sys.stdout.buffer.write(b'THE END')"
FAR = "2099-01-01T00:00:00Z"  # a slot that never comes: the run comes from a manual trigger


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The nodes inherit the usual umask, 022, which used to leave their files 0644."""
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


def _finished_run(cluster: Cluster, node: str, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        code, run = cluster.api(node, "GET", f"/v1/runs/{run_id}")
        if code == 200 and run["state"] not in ("pending", "running"):
            return run  # type: ignore[no-any-return]
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish\n{cluster.logs()}")


def _snapshot_written(cluster: Cluster, node: str) -> bool:
    """Commit a few entries, then tell whether the node has compacted its log (raft.dump)."""
    for _ in range(5):
        cluster.api(
            node,
            "POST",
            "/v1/jobs",
            {
                "id": f"filler-{time.monotonic_ns()}",
                "schedule": {"at": FAR},
                "task": {"type": "shell", "command": ["true"]},
            },
        )
    status = cluster.status(node)
    return bool(status and status.get("compactions", 0) >= 1)


def test_a_flood_of_output_is_cut_and_every_file_is_private(make_cluster: Any, umask_022: None) -> None:
    cluster: Cluster = make_cluster(
        size=1,
        cluster_keys={"log_compaction_min_entries": 20, "lookahead_s": 1},
        node_keys={"output_max_bytes": CAP},
    )
    cluster.start()
    node = cluster.leader()
    cluster.wait_registered()
    job = {
        "id": "flood",
        "schedule": {"at": FAR},
        "task": {"type": "shell", "command": [sys.executable, "-c", FLOOD]},
    }
    code, body = cluster.api(node, "POST", "/v1/jobs", job)
    assert code == 201, body
    code, run = cluster.api(node, "POST", "/v1/jobs/flood/trigger")
    assert code == 201, run
    run = _finished_run(cluster, node, run["run_id"])
    assert run["state"] == "succeeded", (run, cluster.logs())

    # The file stopped at the cap, with the marker; the run says so, and its tail is the last bytes.
    assert run["output_truncated"] is True
    assert run["output"].endswith("yyyyTHE END")
    node_dir = cluster.root / "data" / node
    output = node_dir / "outputs" / output_file_name(run["run_id"], 1)
    assert output.stat().st_size == CAP + len(truncation_marker(CAP))
    with output.open("rb") as f:
        assert f.read(16) == b"y" * 16
        f.seek(CAP - 1)
        assert f.read() == b"y" + truncation_marker(CAP)
    with urllib.request.urlopen(f"{cluster.url(node)}/v1/runs/{run['run_id']}/output", timeout=20) as resp:
        assert resp.status == 200 and resp.read() == output.read_bytes()

    # Everything the node wrote is its user's alone, whatever the umask it was started with.
    cluster.wait_for("a snapshot (raft.dump)", lambda: _snapshot_written(cluster, node))
    cluster.wait_for("raft.dump on disk", lambda: (node_dir / "raft.dump").exists())
    assert {mode(d) for d in (cluster.root / "data", node_dir, node_dir / "outputs")} == {0o700}
    files = [
        node_dir / name for name in ("raft.journal", "raft.dump", "attempts.jsonl", "running-pgids.json")
    ]
    assert {p.name: mode(p) for p in [*files, output]} == {p.name: 0o600 for p in [*files, output]}
    assert all(mode(p) & 0o077 == 0 for p in node_dir.rglob("*")), "nothing in it open to others"


def test_a_node_refuses_a_data_dir_others_can_write(make_cluster: Any) -> None:
    cluster: Cluster = make_cluster(size=1)
    data_dir = cluster.root / "data"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    cluster.start()
    assert cluster.wait_exit("n1") == 2
    log = (cluster.root / "n1.log").read_text()
    assert "config error: [cluster] data_dir:" in log and "writable by group or others (mode 0777)" in log
    assert list(data_dir.iterdir()) == [], "it wrote nothing there"
