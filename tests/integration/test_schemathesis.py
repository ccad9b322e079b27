"""Schemathesis against one live node, driven by the node's own `GET /v1/openapi.json`.

Every documented operation gets generated requests, valid and invalid, and then chains of calls
follow the document's links (create a job, then read, edit, trigger, cancel, delete it). Each answer
must not be a 5xx, and its status, content type and body must be the documented ones.

Nothing the fuzzer creates may run anything: the node has an API token, shell strings and python
tasks off, no network for http tasks besides public addresses, and an empty PATH; `_harmless` makes
every job body paused and its task inert (see there).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from raftsched.api.openapi import OPERATIONS, PARAMETERS, Operation

from cluster import Cluster

pytestmark = pytest.mark.integration

TOKEN = "1x5fdczg8whzWY6Pbm5F9SGz7NB1s0QsgQNd7zZGvas"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
JOB_BODIES = {("POST", "/v1/jobs"), ("PUT", "/v1/jobs/{id}")}
RESTORE = ("POST", "/v1/restore")
# Adding a voter to a one-node cluster loses its quorum; removing its only node stops it. These two
# are checked in-process against their documented answers (tests/unit/test_openapi.py).
MEMBERSHIP = {"addNode", "removeNode"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("schemathesis")
    no_commands = root / "empty-path"
    no_commands.mkdir()
    cluster = Cluster(
        root / "c",
        size=1,
        cluster_keys={"api_token": TOKEN},
        node_keys={"allow_shell": "false", "python_allow": "", "http_allow": ""},
    )
    path = os.environ.get("PATH")
    os.environ["PATH"] = str(no_commands)  # the node inherits it: argv commands are not found
    try:
        cluster.start()
    finally:
        if path is None:
            del os.environ["PATH"]
        else:
            os.environ["PATH"] = path
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def api_schema(node: Cluster) -> Any:
    config = schemathesis.Config.from_dict(
        {
            "headers": AUTH,
            "generation": {"database": "none", "deterministic": True, "max-examples": 25},
        }
    )
    return schemathesis.openapi.from_url(f"{node.url('n1')}/v1/openapi.json", config=config, headers=AUTH)


def _inert(job: Any) -> None:
    """A job the fuzzer sends is paused, so no schedule fires it, and a manual trigger starts nothing:
    a shell task gets a working directory that does not exist (an absolute argv[0] would not need
    PATH), an http task a loopback URL, which the node's empty `http_allow` refuses."""
    if not isinstance(job, dict):
        return
    job["paused"] = True
    task = job.get("task")
    if isinstance(task, dict) and task.get("type") == "shell":
        task["cwd"] = "/nonexistent/raftsched-schemathesis"
    elif isinstance(task, dict) and task.get("type") == "http":
        task["url"] = "http://127.0.0.1:9/"


def _harmless(case: schemathesis.Case) -> None:
    operation = (case.operation.method.upper(), case.operation.path)
    if operation in JOB_BODIES:
        _inert(case.body)
    elif operation == RESTORE and isinstance(case.body, dict) and isinstance(case.body.get("jobs"), list):
        for item in case.body["jobs"]:
            if isinstance(item, dict):
                _inert(item.get("spec"))


# One test per documented operation and generation mode. The operations come from the same table the
# node serves its document from; the test reads the node's own document and skips an operation the
# node does not serve (a route module not written yet). Schemathesis's lazy `from_fixture` loader is
# not used: it sets `Node._nodeid`, which pytest 9.2 no longer has.
def _negatable(op: Operation) -> bool:
    """Does the operation take anything that can be made invalid (a body, a constrained parameter)?"""
    schemas = [PARAMETERS[p]["schema"] for p in op.parameters]
    return op.body is not None or any(
        set(schema) - {"type", "default"} or schema["type"] != "string" for schema in schemas
    )


CASES = [
    pytest.param(op.method, op.path, mode, id=f"{op.method} {op.path} {mode}")
    for op in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Membership changes are not fuzzed live (adding a voter to a one-node cluster loses its quorum,
    # removing its node stops it): tests/unit/test_openapi.py checks their answers in-process.
    if (mode is GenerationMode.POSITIVE or _negatable(op)) and op.operation_id not in MEMBERSHIP
]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_api_matches_its_openapi(api_schema: Any, method: str, path: str, mode: GenerationMode) -> None:
    operation = api_schema[path][method]  # every documented operation is served

    statuses: Counter[int] = Counter()

    @settings(
        max_examples=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: schemathesis.Case) -> None:
        _harmless(case)
        response = case.call_and_validate(headers=AUTH, checks=CHECKS)
        statuses[response.status_code] += 1

    try:
        check()
    except Unsatisfiable:
        pytest.skip("nothing in this operation's input can be made invalid")
    finally:
        print(f"{method} {path} {mode}: {dict(sorted(statuses.items()))}")


def _delete_all_jobs(node: Cluster) -> None:
    code, body = node.api("n1", "GET", "/v1/jobs?limit=1000", headers=AUTH)
    assert code == 200, body
    for job in body["items"]:
        code, body = node.api("n1", "DELETE", f"/v1/jobs/{quote(job['id'], safe='')}", headers=AUTH)
        assert code in (204, 404), body


def test_stateful(node: Cluster, api_schema: Any) -> None:
    """Chains of calls linked by the answers' ids: create a job, then read, edit, trigger, cancel it.

    Hypothesis replays the start of earlier scenarios to make new ones, and calls that strategy
    flaky when the server answers differently the second time. So each scenario starts from a node
    without jobs (and so without runs), and sends no Idempotency-Key (whose replay answers from the
    first call)."""
    # Resuming a job the fuzzer made would let its schedule fire; the fuzzing above covers resume.
    base = api_schema.exclude(operation_id=["resumeJob", *MEMBERSHIP]).as_state_machine()
    seen: Counter[str] = Counter()

    class Machine(base):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            _delete_all_jobs(node)

        def before_call(self, case: schemathesis.Case) -> None:
            _harmless(case)
            if case.headers:
                case.headers.pop("Idempotency-Key", None)
            # So that chains get past the create: a schedule that plans (random cron strings and
            # time zones rarely do; the per-operation test fuzzes them) and the id of the URL.
            if (case.method.upper(), case.path) in JOB_BODIES and isinstance(case.body, dict):
                case.body["schedule"] = {"every": 3600}
                if "id" in case.body and case.path_parameters and "id" in case.path_parameters:
                    case.body["id"] = case.path_parameters["id"]

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": AUTH}

        def validate_response(self, response: Any, case: schemathesis.Case, **kwargs: Any) -> None:
            seen[f"{case.operation.label} {response.status_code}"] += 1
            case.validate_response(response, checks=CHECKS)

    try:
        Machine.run(
            settings=settings(
                max_examples=30,
                stateful_step_count=8,
                # Only generate: replaying a prefix against a live server (to shrink or to target)
                # draws differently when the server's answers differ, which Hypothesis calls flaky.
                phases=[Phase.generate],
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        print(dict(sorted(seen.items())))


def test_the_node_ran_nothing(node: Cluster) -> None:
    """Whatever the fuzzer triggered started nothing: no run succeeded."""
    code, body = node.api("n1", "GET", "/v1/runs?state=succeeded", headers=AUTH)
    assert code == 200, body
    assert body["items"] == []
