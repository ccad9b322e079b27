"""The `raftsched` CLI against a live node: tables, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cluster import SECRET, Cluster

pytestmark = pytest.mark.integration


def cli(*args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--url", url] if url else []
    return subprocess.run(
        [sys.executable, "-m", "raftsched", *args, *extra], capture_output=True, text=True, timeout=60
    )


def write(path: Path, data: Any) -> str:
    path.write_text(json.dumps(data))
    return str(path)


def test_cli_against_a_live_node(make_cluster: Any, tmp_path: Path) -> None:
    # A broker the node names but never dials: the message job below is only listed, never run.
    cluster: Cluster = make_cluster(size=1, sections={"broker events": {"url": "redis://127.0.0.1:9/0"}})
    cluster.start()
    cluster.leader()
    cluster.wait_registered(1)
    url = cluster.url("n1")
    job = {"id": "cli-job", "schedule": {"every": 3600}, "task": {"type": "shell", "command": ["echo", "hi"]}}

    status = cli("status", url=url)
    assert status.returncode == 0 and "leader" in status.stdout and "NODE" in status.stdout

    added = cli("jobs", "add", write(tmp_path / "job.json", job), url=url)
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["version"] == 1
    again = cli("jobs", "add", str(tmp_path / "job.json"), url=url)
    assert again.returncode == 1 and "already_exists" in again.stderr

    listed = cli("jobs", "list", url=url)
    assert listed.returncode == 0 and "cli-job" in listed.stdout and "every 3600s" in listed.stdout
    as_json = json.loads(cli("jobs", "list", "--json", url=url).stdout)
    assert [j["id"] for j in as_json["items"]] == ["cli-job"]

    edited = cli(
        "jobs", "edit", "cli-job", write(tmp_path / "edit.json", {**job, "description": "edited"}), url=url
    )
    assert edited.returncode == 0, edited.stderr
    got = json.loads(cli("jobs", "get", "cli-job", "--json", url=url).stdout)
    assert got["description"] == "edited" and got["version"] == 2
    shown = cli("jobs", "get", "cli-job", url=url)
    assert shown.returncode == 0 and "shell echo hi" in shown.stdout and "every 3600s" in shown.stdout

    ticks = {
        "id": "ticks",
        "schedule": {"every": 3600},
        "task": {"type": "message", "broker": "events", "to": "ticks", "body": {"run": "{run_id}"}},
    }
    assert cli("jobs", "add", write(tmp_path / "ticks.json", ticks), url=url).returncode == 0
    assert "message events → ticks" in cli("jobs", "list", url=url).stdout
    shown = cli("jobs", "get", "ticks", url=url).stdout
    assert "message events → ticks" in shown and '{"run":"{run_id}"}' in shown, shown
    assert "application/json" in shown, shown
    assert cli("jobs", "rm", "ticks", url=url).returncode == 0

    assert cli("jobs", "pause", "cli-job", url=url).returncode == 0
    assert json.loads(cli("jobs", "get", "cli-job", "--json", url=url).stdout)["paused"] is True
    assert cli("jobs", "resume", "cli-job", url=url).returncode == 0

    triggered = cli("jobs", "trigger", "cli-job", url=url)
    assert triggered.returncode == 0, triggered.stderr
    run_id = json.loads(triggered.stdout)["run_id"]
    assert run_id.startswith("cli-job@manual-")
    deadline = time.monotonic() + 20
    while json.loads(cli("runs", "get", run_id, url=url).stdout)["state"] != "succeeded":
        assert time.monotonic() < deadline, "the triggered run did not succeed"
        time.sleep(0.3)
    runs = cli("runs", "list", "--job", "cli-job", url=url)
    assert runs.returncode == 0 and run_id in runs.stdout and "succeeded" in runs.stdout
    assert run_id in cli("jobs", "runs", "cli-job", url=url).stdout
    cancelled = cli("runs", "cancel", run_id, url=url)
    assert cancelled.returncode == 0  # a finished run stays as it was
    assert json.loads(cancelled.stdout)["state"] == "succeeded"

    nodes = cli("nodes", "list", url=url)
    assert nodes.returncode == 0 and "n1" in nodes.stdout and "yes" in nodes.stdout

    missing = cli("jobs", "get", "nope", url=url)
    assert missing.returncode == 1 and "not_found" in missing.stderr
    bad = cli("jobs", "add", write(tmp_path / "bad.json", {**job, "id": "b", "timeout": -1}), url=url)
    assert bad.returncode == 1 and "(timeout)" in bad.stderr
    assert cli("jobs", "rm", "cli-job", url=url).returncode == 0
    assert cli("jobs", "get", "cli-job", url=url).returncode == 1


def test_cli_usage_and_unreachable_exit_codes(tmp_path: Path) -> None:
    assert cli("jobs", "bogus").returncode == 2
    assert cli("jobs", "get").returncode == 2  # the id is missing
    assert cli("jobs", "add", str(tmp_path / "missing.json"), url="http://127.0.0.1:9").returncode == 2
    unreachable = cli("status", url="http://127.0.0.1:9")
    assert unreachable.returncode == 3 and "no node answered" in unreachable.stderr
    assert cli("secret").stdout.strip() and cli("--version").stdout.startswith("raftsched ")
    assert "complete -F _raftsched raftsched" in cli("completion", "bash").stdout


def test_node_refuses_a_bad_config_naming_section_and_key(tmp_path: Path) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text(
        "[cluster]\nsecret = " + SECRET + "\nlookahead_s = soon\n[node n1]\nraft = 127.0.0.1:7101\n"
        "http = 127.0.0.1:8101\n"
    )
    result = cli("node", "--config", str(ini), "--node", "n1")
    assert result.returncode == 2
    assert "[cluster] lookahead_s" in result.stderr and len(result.stderr.strip().splitlines()) == 1
