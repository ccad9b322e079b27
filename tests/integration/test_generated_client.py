"""A client generated from the node's own `GET /v1/openapi.json` drives a job through a live node.

`openapi-python-client` (the `test` extra) writes a typed client; the test then uses only that
client: create a manual-only job (`"schedule": null`), trigger it, list its runs, read its output,
pause it, delete it. The schemas must make the generator produce typed models (a schedule as one of
the schedule classes or None, a task as the task class of its `type`), not `Any`.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

TOKEN = "Gk3w1n0cKq8f2Yx7Vt5Rb9Hs4Jd6Lp0MzAeUiOo2Qw"
PACKAGE = "raftsched_generated_client"


def _generate(cluster: Cluster, out: Path) -> None:
    code, spec = cluster.api("n1", "GET", "/v1/openapi.json")
    assert code == 200, spec
    path = out / "openapi.json"
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(path),
            "--meta",
            "none",
            "--output-path",
            str(out / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=out,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.{name}")


def _wait(what: str, check: Any, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def client(make_cluster: Any, tmp_path: Path) -> Any:
    cluster: Cluster = make_cluster(
        size=1, cluster_keys={"api_token": TOKEN}, node_keys={"python_allow": "pkg"}
    )
    cluster.start()
    cluster.wait_healthy()
    cluster.wait_registered(1)
    _generate(cluster, tmp_path)
    sys.path.insert(0, str(tmp_path))
    try:
        package = importlib.import_module(PACKAGE)
        with package.AuthenticatedClient(base_url=cluster.url("n1"), token=TOKEN, timeout=30) as made:
            yield made
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def test_a_generated_client_drives_a_job(client: Any) -> None:
    models = _module("models")
    jobs, runs = _module("api.jobs"), _module("api.runs")
    for name in ("create_job", "trigger_job", "pause_job", "delete_job"):
        importlib.import_module(f"{jobs.__name__}.{name}")
    for name in ("list_job_runs", "get_run", "get_run_output"):
        importlib.import_module(f"{runs.__name__}.{name}")

    task = models.ShellTask(type_="shell", command=["echo", "hello from a generated client"])
    created = jobs.create_job.sync(client=client, body=models.JobCreate(id="gen", schedule=None, task=task))
    assert isinstance(created, models.Job), created
    assert created.schedule is None and created.next_fire_at is None
    assert isinstance(created.task, models.ShellTask) and created.task.command == task.command

    run = jobs.trigger_job.sync("gen", client=client, body=models.TriggerBody())
    assert isinstance(run, models.Run), run
    assert run.run_id.startswith("gen@manual-") and run.attempt == 1

    listed = runs.list_job_runs.sync("gen", client=client)
    assert isinstance(listed, models.RunList) and [r.run_id for r in listed.items] == [run.run_id]

    def finished() -> Any:
        got = runs.get_run.sync(run.run_id, client=client)
        return got if isinstance(got, models.Run) and got.state.value == "succeeded" else None

    done = _wait("the run to succeed", finished)
    assert done.exit_code == 0 and done.node == "n1"
    output = runs.get_run_output.sync(run.run_id, client=client)
    assert output == "hello from a generated client\n"

    paused = jobs.pause_job.sync("gen", client=client)
    assert isinstance(paused, models.Job) and paused.paused and paused.version == created.version + 1

    deleted = jobs.delete_job.sync_detailed("gen", client=client)
    assert deleted.status_code == 204
    missing = runs.list_job_runs.sync("gen", client=client)
    assert isinstance(missing, models.Error) and missing.error.code == "not_found"
    assert missing.error.field == "id"


def test_the_generated_models_are_typed_unions(client: Any) -> None:
    """Each schedule kind and task type round-trips through its own model class."""
    models = _module("models")
    create = importlib.import_module(f"{PACKAGE}.api.jobs.create_job")
    delete = importlib.import_module(f"{PACKAGE}.api.jobs.delete_job")
    cases = [
        (models.CronSchedule(cron="0 3 * * *", timezone="Europe/Berlin"), models.ShellTask),
        (models.EverySchedule(every=3600.0), models.HttpTask),
        (models.AtSchedule(at=datetime(2099, 1, 1, tzinfo=UTC)), models.PythonTask),
    ]
    tasks = {
        models.ShellTask: models.ShellTask(type_="shell", command=["true"]),
        models.HttpTask: models.HttpTask(type_="http", url="http://127.0.0.1:9/"),
        models.PythonTask: models.PythonTask(type_="python", callable_="pkg.mod:func"),
    }
    for i, (schedule, task_class) in enumerate(cases):
        body = models.JobCreate(id=f"typed-{i}", schedule=schedule, task=tasks[task_class], paused=True)
        job = create.sync(client=client, body=body)
        assert isinstance(job, models.Job), job
        assert type(job.schedule) is type(schedule) and isinstance(job.task, task_class)
        assert delete.sync_detailed(f"typed-{i}", client=client).status_code == 204
