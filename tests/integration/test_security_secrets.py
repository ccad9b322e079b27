"""Secrets on a real 3-node cluster: a job names a secret, each node resolves it when the run
starts, and its value is nowhere on disk (journal, snapshots, outputs) nor in the nodes' logs.
Inline credentials are answered as "***" and left out of backups unless asked for."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster import Cluster, Sink

pytestmark = pytest.mark.integration

FAR = "2099-01-01T00:00:00Z"
TOKEN = "tok-" + secrets.token_hex(16)  # given to the nodes in the cluster file's [secrets]
ENV_TOKEN = "env-" + secrets.token_hex(16)  # given to the nodes in their environment
INLINE = "inline-" + secrets.token_hex(16)  # written into a job as is


@pytest.fixture
def header_sink() -> Iterator[Sink]:
    sink = Sink(keep=("authorization", "x-env-key"))
    yield sink
    sink.close()


def _http_job(job_id: str, url: str, headers: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "schedule": {"at": FAR},
        "task": {"type": "http", "url": url, "headers": headers},
        **fields,
    }


def _files_holding(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def test_secret_is_resolved_on_the_nodes_and_never_stored(
    make_cluster: Any, header_sink: Sink, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAFTSCHED_SECRET_ENVTOK", ENV_TOKEN)  # inherited by the node processes
    cluster: Cluster = make_cluster(cluster_keys={"log_compaction_min_entries": 40})
    with cluster.config.open("a") as f:
        f.write(f"[secrets]\nTOKEN = Bearer {TOKEN}\n")
    cluster.start()
    cluster.leader()
    cluster.wait_registered()

    # Broadcast, every second: every node resolves the references for its own runs.
    refs = {"Authorization": {"secret": "TOKEN"}, "X-Env-Key": {"secret": "ENVTOK"}}
    job = _http_job("hook", header_sink.url + "/hook", refs, route={"strategy": "broadcast"})
    job["schedule"] = {"every": 1}
    status, created = cluster.api("n2", "POST", "/v1/jobs", job)
    assert status == 201, created
    assert created["task"]["headers"] == refs
    cluster.wait_for(
        "a run on every node",
        lambda: {e["x-raftsched-node"] for e in header_sink.for_job("hook")} >= set(cluster.ids),
    )
    for event in header_sink.for_job("hook"):
        assert event["authorization"] == f"Bearer {TOKEN}" and event["x-env-key"] == ENV_TOKEN

    # A snapshot on every node, taken while the job exists, so the dumps are checked too.
    cluster.wait_for(
        "a snapshot on every node",
        lambda: all((cluster.status(n) or {}).get("compactions", 0) >= 1 for n in cluster.ids),
        timeout=90,
    )
    assert cluster.api("n1", "POST", "/v1/jobs/hook/pause")[0] == 200
    status, shown = cluster.api("n3", "GET", "/v1/jobs/hook?consistent=true")
    assert status == 200 and shown["task"]["headers"] == refs

    # A secret no node has: refused at creation (422); forced, the run fails, naming it.
    missing = _http_job("missing", header_sink.url + "/missing", {"Authorization": {"secret": "NOPE"}})
    status, refused = cluster.api("n1", "POST", "/v1/jobs", missing)
    assert status == 422 and refused["error"]["field"] == "task.headers.Authorization", refused
    assert cluster.api("n1", "POST", "/v1/jobs?force=true", missing)[0] == 201
    status, run = cluster.api("n1", "POST", "/v1/jobs/missing/trigger?force=true")
    assert status == 201, run

    def finished() -> dict[str, Any] | None:
        code, body = cluster.api("n1", "GET", f"/v1/runs/{run['run_id']}")
        return body if code == 200 and body["state"] not in ("pending", "running") else None

    ended = cluster.wait_for("the run without its secret to end", finished)
    assert ended["state"] == "failed" and "'NOPE'" in ended["error"], ended
    assert header_sink.for_job("missing") == []

    _check_inline_credentials_are_redacted(cluster, header_sink, tmp_path)

    # The search works: an inline value is stored as written (that is what references avoid).
    assert _files_holding(cluster.root / "data", INLINE.encode())
    for value in (TOKEN, ENV_TOKEN):
        needle = value.encode()
        assert _files_holding(cluster.root / "data", needle) == [], "a secret's value is on disk"
        assert needle not in cluster.logs(None).encode(), "a secret's value is in a node's log"
    for node in cluster.ids:  # what was searched: each node's journal and snapshot
        assert (cluster.root / "data" / node / "raft.journal").is_file()
        assert (cluster.root / "data" / node / "raft.dump").stat().st_size > 0


def _check_inline_credentials_are_redacted(cluster: Cluster, header_sink: Sink, tmp_path: Path) -> None:
    inline = _http_job("inline", header_sink.url + "/inline", {"Authorization": f"Bearer {INLINE}"})
    status, created = cluster.api("n1", "POST", "/v1/jobs", inline)
    assert status == 201 and created["task"]["headers"] == {"Authorization": "***"}
    status, shown = cluster.api("n2", "GET", "/v1/jobs/inline?consistent=true")
    assert status == 200 and shown["task"]["headers"] == {"Authorization": "***"}
    # Sent back as read, the stored value is kept: a run still sends it.
    assert cluster.api("n3", "PUT", "/v1/jobs/inline", shown)[0] == 200
    assert cluster.api("n3", "POST", "/v1/jobs/inline/trigger")[0] == 201
    sent = cluster.wait_for("the inline job's request", lambda: header_sink.for_job("inline"))
    assert sent[0]["authorization"] == f"Bearer {INLINE}"

    status, backup = cluster.api("n1", "GET", "/v1/backup")
    assert status == 200 and backup["redacted"] is True and INLINE not in json.dumps(backup)
    path = tmp_path / "backup.json"
    made = subprocess.run(
        [sys.executable, "-m", "raftsched", "backup", str(path), "--url", cluster.url("n2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert INLINE not in path.read_text() and TOKEN not in path.read_text()
    status, full = cluster.api("n1", "GET", "/v1/backup?secrets=true")
    assert status == 200 and INLINE in json.dumps(full) and TOKEN not in json.dumps(full)
