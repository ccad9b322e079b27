"""Secret references: how jobs name them, where nodes find them, and that a value never leaks.

The API side (redaction of answers and backups, `"***"` written back) is in test_secrets_api.py.
"""

from __future__ import annotations

import os
import sys
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import orjson
import pytest

from raftsched import config
from raftsched.errors import ConfigError, ValidationError
from raftsched.executors import ExecPolicy, RunContext, ShellExecutor, executor_for
from raftsched.executors.base import resolve_secrets
from raftsched.executors.http import request_parts
from raftsched.model import JobSpec, SecretRef, TaskSpec, TaskType, spec_from_snapshot
from raftsched.node import exec_policy
from raftsched.records import JobRecord
from raftsched.secretstore import SecretStore, parse_secret_lines, read_secrets_file

VALUE = "s3cr3t-value-Zq81"  # every test checks that this never shows where it must not
CTX = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=1_800_000_000_000, node_id="n1")


def http_job(headers: Any, **task: Any) -> dict[str, Any]:
    return {
        "id": "j",
        "schedule": {"every": 60},
        "task": {"type": "http", "url": "http://127.0.0.1:1/x", "headers": headers, **task},
    }


def validation_field(body: dict[str, Any]) -> tuple[str | None, str]:
    with pytest.raises(ValidationError) as info:
        JobSpec.from_dict(body)
    return info.value.field, info.value.message


# ---------------------------------------------------------------- the model


def test_references_parse_and_round_trip_through_the_wire_form_and_snapshots() -> None:
    body = http_job({"Authorization": {"secret": "TOKEN"}, "Accept": "text/plain"})
    spec = JobSpec.from_dict(body)
    assert spec.task.headers == {"Authorization": SecretRef("TOKEN"), "Accept": "text/plain"}
    wire = spec.to_dict()
    assert wire["task"]["headers"] == {"Authorization": {"secret": "TOKEN"}, "Accept": "text/plain"}
    assert JobSpec.from_dict(wire) == spec
    assert spec_from_snapshot(orjson.loads(orjson.dumps(wire))) == spec
    env = {"DB_PASSWORD": {"secret": "db_pw"}, "MODE": "x"}
    shell = {"id": "s", "schedule": {"every": 60}, "task": {"type": "shell", "command": ["true"], "env": env}}
    spec = JobSpec.from_dict(shell)
    assert spec.task.env == {"DB_PASSWORD": SecretRef("db_pw"), "MODE": "x"}
    record = JobRecord.from_dict(orjson.loads(orjson.dumps(_record(spec).to_dict())))
    assert record.spec == spec


def _record(spec: JobSpec) -> JobRecord:
    return JobRecord(spec=spec, version=1, incarnation=0, created_ms=0, updated_ms=0, next_nominal_ms=None)


@pytest.mark.parametrize(
    ("value", "field"),
    [
        ({"secret": "1abc"}, "task.headers.Authorization.secret"),
        ({"secret": "has-dash"}, "task.headers.Authorization.secret"),
        ({"secret": ""}, "task.headers.Authorization.secret"),
        ({"secret": 5}, "task.headers.Authorization.secret"),
        ({}, "task.headers.Authorization.secret"),
        ({"secret": "OK", "value": VALUE}, "task.headers.Authorization.value"),
        (5, "task.headers.Authorization"),
    ],
)
def test_bad_references_name_the_field(value: Any, field: str) -> None:
    where, message = validation_field(http_job({"Authorization": value}))
    assert where == field
    assert VALUE not in message


def test_secret_names_follow_the_contract() -> None:
    for name in ("A", "_x", "TOKEN_2", "a1_B"):
        assert JobSpec.from_dict(http_job({"X": {"secret": name}})).task.headers["X"] == SecretRef(name)
    for name in ("9", "A-B", "A.B", "A B", "é"):
        assert validation_field(http_job({"X": {"secret": name}}))[0] == "task.headers.X.secret"


def test_env_references_are_validated_for_python_tasks_too() -> None:
    body = {
        "id": "p",
        "schedule": {"every": 60},
        "task": {"type": "python", "callable": "m:f", "env": {"K": {"secret": "bad name"}}},
    }
    assert validation_field(body)[0] == "task.env.K.secret"


# ---------------------------------------------------------------- where a node finds them


def test_lookup_order_environment_then_file_then_section() -> None:
    store = SecretStore.build(
        environ={"RAFTSCHED_SECRET_A": "env-a", "RAFTSCHED_SECRET_bad-name": "x", "A": "plain"},
        file_values={"A": "file-a", "B": "file-b"},
        section_values={"A": "ini-a", "B": "ini-b", "C": "ini-c"},
    )
    assert [store.get(name) for name in "ABCD"] == ["env-a", "file-b", "ini-c", None]
    assert store.names == {"A", "B", "C"}
    assert "env-a" not in repr(store) and "file-b" not in repr(store)


def test_secret_file_lines() -> None:
    text = "# comment\n; another\n\nTOKEN = a=b ; #kept\n  PW=  spaced value  \n"
    assert parse_secret_lines(text.splitlines()) == {"TOKEN": "a=b ; #kept", "PW": "spaced value"}
    for bad, says in (("NOVALUE\n", "line 1"), ("9X = 1\n", "line 1"), ("A = 1\nA = 2\n", "twice")):
        with pytest.raises(ValueError, match=says) as info:
            parse_secret_lines(bad.splitlines())
        assert "= 1" not in str(info.value)


def test_resolve_replaces_references_and_names_a_missing_one() -> None:
    store = SecretStore.build(section_values={"TOKEN": VALUE})
    values: dict[str, str | SecretRef] = {"Authorization": SecretRef("TOKEN"), "Accept": "x"}
    assert resolve_secrets(values, store) == {"Authorization": VALUE, "Accept": "x"}
    with pytest.raises(Exception, match="'MISSING'") as info:
        resolve_secrets({"X": SecretRef("MISSING")}, store)
    assert VALUE not in str(info.value) and "RAFTSCHED_SECRET_MISSING" in str(info.value)


def test_http_headers_are_resolved_and_identity_still_wins() -> None:
    task = TaskSpec(
        type=TaskType.HTTP,
        url="http://127.0.0.1:1/",
        headers={"Authorization": SecretRef("TOKEN"), "X-Raftsched-Node": SecretRef("TOKEN")},
    )
    _, headers = request_parts(task, CTX, SecretStore.build(environ={"RAFTSCHED_SECRET_TOKEN": VALUE}))
    assert headers["Authorization"] == VALUE and headers["X-Raftsched-Node"] == "n1"


def _policy(**secrets: str) -> ExecPolicy:
    return ExecPolicy(secrets=SecretStore.build(section_values=secrets), http_allow=())


async def test_a_shell_run_gets_the_value_in_its_env() -> None:
    task = TaskSpec(
        type=TaskType.SHELL, command=["/bin/sh", "-c", 'printf %s "$PW"'], env={"PW": SecretRef("PW")}
    )
    result = await ShellExecutor(_policy(PW=VALUE)).run(task, CTX, timeout_s=10, output_path=None)
    assert (result.outcome, result.output_tail) == ("succeeded", VALUE)


MISSING: dict[str, str | SecretRef] = {"PW": SecretRef("NOT_HERE")}


@pytest.mark.parametrize(
    "task",
    [
        TaskSpec(type=TaskType.SHELL, command=["true"], env=MISSING),
        TaskSpec(type=TaskType.HTTP, url="http://127.0.0.1:1/", headers=MISSING),
        TaskSpec(type=TaskType.PYTHON, callable="pytasks_sample:hello", env=MISSING),
    ],
    ids=["shell", "http", "python"],
)
async def test_a_missing_secret_fails_the_run_naming_it_without_any_value(task: TaskSpec) -> None:
    policy = ExecPolicy(
        secrets=SecretStore.build(section_values={"OTHER": VALUE}),
        python_allow=("pytasks_sample",),
        http_allow=(ip_network("127.0.0.0/8"),),  # nothing is sent: the run fails before connecting
    )
    executor = executor_for(task.type, policy)
    try:
        result = await executor.run(task, CTX, timeout_s=10, output_path=None)
    finally:
        await executor.close()
    assert result.outcome == "failed"
    assert result.error is not None and "'NOT_HERE'" in result.error
    assert VALUE not in (result.error + result.output_tail)


# ---------------------------------------------------------------- the config file

SECRET = "Vq3xN8pLr2Tz6Wb9Kd4Hs7Yj1Mf5Gc0A"  # random-looking: the config refuses weak secrets


def _ini(tmp_path: Path, node_extra: str = "", tail: str = "") -> Path:
    path = tmp_path / "cluster.ini"
    path.write_text(
        f"[cluster]\nsecret = {SECRET}\n\n[node n1]\nraft = 127.0.0.1:7101\nhttp = 127.0.0.1:8101\n"
        f"{node_extra}\n{tail}",
        encoding="utf-8",
    )
    return path


def _secrets_file(tmp_path: Path, mode: int, text: str = f"TOKEN = {VALUE}\n") -> Path:
    path = tmp_path / "node.secrets"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return path


def test_secrets_section_and_node_file_are_read(tmp_path: Path) -> None:
    _secrets_file(tmp_path, 0o600, f"TOKEN = {VALUE}\nONLY_FILE = f\n")
    path = _ini(tmp_path, "secrets_file = node.secrets", "[secrets]\nTOKEN = from-ini\nONLY_INI = i\n")
    cluster, node = config.load(path, "n1")
    assert cluster.secrets == {"TOKEN": "from-ini", "ONLY_INI": "i"}
    assert node.secrets_file == tmp_path / "node.secrets"
    assert node.file_secrets == {"TOKEN": VALUE, "ONLY_FILE": "f"}
    assert VALUE not in repr(node) and "from-ini" not in repr(cluster)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_secrets_file_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    _secrets_file(tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        config.load(_ini(tmp_path, "secrets_file = node.secrets"), "n1")
    assert (info.value.section, info.value.key) == ("node n1", "secrets_file")
    assert f"{mode:04o}" in str(info.value) and VALUE not in str(info.value)


def test_a_broken_or_missing_secrets_file_is_refused_without_its_text(tmp_path: Path) -> None:
    _secrets_file(tmp_path, 0o600, f"TOKEN {VALUE}\n")
    with pytest.raises(ConfigError, match="line 1") as info:
        config.load(_ini(tmp_path, "secrets_file = node.secrets"), "n1")
    assert info.value.key == "secrets_file" and VALUE not in str(info.value)
    with pytest.raises(ConfigError) as missing:
        config.load(_ini(tmp_path, "secrets_file = absent"), "n1")
    assert missing.value.key == "secrets_file"
    assert read_secrets_file(_secrets_file(tmp_path, 0o400, "A = 1\n")) == {"A": "1"}


def test_only_the_chosen_node_reads_its_secrets_file(tmp_path: Path) -> None:
    path = _ini(
        tmp_path,
        "",
        "[node n2]\nraft = 127.0.0.1:7102\nhttp = 127.0.0.1:8102\nsecrets_file = /nonexistent/x\n",
    )
    cluster, node = config.load(path, "n1")
    assert node.file_secrets == {} and cluster.nodes["n2"].secrets_file == Path("/nonexistent/x")


def test_a_malformed_line_is_named_by_its_number_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 9: expected key = value$") as info:
        config.load(_ini(tmp_path, "", f"[secrets]\n{VALUE}\n"), "n1")
    assert VALUE not in str(info.value)


@pytest.mark.parametrize(("line", "key"), [("9BAD = v", "9BAD"), ("A-B = v", "A-B"), ("EMPTY =", "EMPTY")])
def test_bad_secrets_section_names_the_key_not_the_value(tmp_path: Path, line: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.load(_ini(tmp_path, "", f"[secrets]\n{line}\n"), "n1")
    assert (info.value.section, info.value.key) == ("secrets", key)
    assert "= v" not in str(info.value)


def test_node_builds_its_store_from_all_three_sources(tmp_path: Path) -> None:
    _secrets_file(tmp_path, 0o600, "B = file-b\nC = file-c\n")
    path = _ini(tmp_path, "secrets_file = node.secrets", "[secrets]\nC = ini-c\nD = ini-d\n")
    cluster, node = config.load(path, "n1")
    environ = {"RAFTSCHED_SECRET_A": "env-a", "RAFTSCHED_SECRET_B": "env-b"}
    store = exec_policy(cluster, node, environ).secrets
    assert [store.get(n) for n in "ABCD"] == ["env-a", "env-b", "file-c", "ini-d"]


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX file modes")
