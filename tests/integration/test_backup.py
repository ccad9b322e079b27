"""Backup, wipe the whole cluster, restore: the same jobs with the same next fire times."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "raftsched", *args], capture_output=True, text=True, timeout=60
    )


JOBS = [
    {"id": "every-7", "schedule": {"every": 7}, "task": {"type": "shell", "command": ["true"]}},
    {
        "id": "cron-berlin",
        "schedule": {"cron": "0 3 * * *", "timezone": "Europe/Berlin"},
        "task": {"type": "http", "url": "https://example.invalid/x"},
        "retries": {"max": 2},
    },
    {
        "id": "paused-one",
        "schedule": {"every": 3600},
        "paused": True,
        "task": {"type": "shell", "command": ["true"]},
    },
]


def test_backup_wipe_restore_keeps_jobs_and_next_fire_times(make_cluster: Any, tmp_path: Path) -> None:
    cluster: Cluster = make_cluster()
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    for job in JOBS:
        assert cluster.api("n2", "POST", "/v1/jobs", job)[0] == 201
    before = {j["id"]: j for j in cluster.api("n1", "GET", "/v1/jobs?consistent=true")[1]["items"]}
    backup = tmp_path / "backup.json"
    made = cli("backup", str(backup), "--url", cluster.url("n3"))
    assert made.returncode == 0, made.stderr
    doc = json.loads(backup.read_text())
    assert doc["format"] == "raftsched-backup" and len(doc["jobs"]) == 3

    for node in list(cluster.procs):
        cluster.kill(node)
    shutil.rmtree(cluster.root / "data")
    cluster.start()
    cluster.leader()
    cluster.wait_registered()
    assert cluster.api("n1", "GET", "/v1/jobs?consistent=true")[1]["items"] == []

    dry = cli("restore", str(backup), "--dry-run", "--json", "--url", cluster.url("n2"))
    assert dry.returncode == 0, dry.stderr
    assert sorted(json.loads(dry.stdout)["created"]) == sorted(j["id"] for j in JOBS)
    assert cluster.api("n1", "GET", "/v1/jobs?consistent=true")[1]["items"] == []  # a dry run changes nothing

    done = cli("restore", str(backup), "--url", cluster.url("n2"))
    assert done.returncode == 0 and "3 jobs were created" in done.stdout, done.stdout + done.stderr
    after = {j["id"]: j for j in cluster.api("n3", "GET", "/v1/jobs?consistent=true")[1]["items"]}
    assert after.keys() == before.keys()
    for job_id, job in before.items():
        for key in ("schedule", "task", "retries", "paused", "created_at"):
            assert after[job_id][key] == job[key], (job_id, key)
    assert after["cron-berlin"]["next_fire_at"] == before["cron-berlin"]["next_fire_at"]
    assert after["every-7"]["audit"][0]["action"] == "restored from a backup"
    # Slots of an `every` job keep their phase: created_at is the backup's, so start + k * every holds.
    gap_ms = _ms(after["every-7"]["next_fire_at"]) - _ms(before["every-7"]["created_at"])
    assert gap_ms > 0 and gap_ms % 7000 == 0

    again = cli("restore", str(backup), "--json", "--url", cluster.url("n1"))
    assert sorted(json.loads(again.stdout)["unchanged"]) == sorted(j["id"] for j in JOBS)
    cluster.wait_same_digest()
