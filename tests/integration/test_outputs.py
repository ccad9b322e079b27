"""Full outputs on a real 3-node cluster: served by the node that ran the run, proxied by the others.

The replicated state keeps a tail (`output_tail_bytes`, 64 here); the full output stays on the
executing node's disk and `GET /v1/runs/{id}/output` fetches it from there through any node.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftsched.executors.outputs import output_file_name

from cluster import Cluster

pytestmark = pytest.mark.integration

TOKEN = "njWx0NjvxFRZky6V343kn0qmqs8keffIIBVtyJv0gbA"
FAR = "2099-01-01T00:00:00Z"  # a slot that never comes: the run comes from a manual trigger
LINES = 200
EXPECTED = "".join(f"line {i:03d} of the full output\n" for i in range(LINES)).encode()
TALKER = f"for i in range({LINES}): print(f'line {{i:03d}} of the full output')"


class TokenCluster(Cluster):
    """The harness, with the API token on every request it makes."""

    def api(
        self,
        node: str,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 15,
    ) -> tuple[int, Any]:
        auth = {"Authorization": f"Bearer {TOKEN}", **(headers or {})}
        return super().api(node, method, path, body, auth, timeout)


def _get(
    cluster: Cluster, node: str, path: str, headers: dict[str, str] | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, str], bytes]:
    sent = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    request = urllib.request.Request(cluster.url(node) + path, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _error_code(body: bytes) -> str:
    return str(json.loads(body)["error"]["code"])


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[TokenCluster]:
    made = TokenCluster(
        tmp_path / "c",
        cluster_keys={"output_tail_bytes": 64, "api_token": TOKEN, "lookahead_s": 1, "node_timeout_s": 2},
    )
    try:
        made.start()
        made.leader()
        made.wait_registered()
        yield made
    finally:
        made.close()


def _finished_run(cluster: TokenCluster, node: str, run_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        code, run = cluster.api(node, "GET", f"/v1/runs/{run_id}")
        if code == 200 and run["state"] not in ("pending", "running"):
            return run  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish\n{cluster.logs()}")


def test_full_output_through_any_node_and_the_replicated_tail(cluster: TokenCluster) -> None:
    leader = cluster.leader()
    job = {
        "id": "talker",
        "schedule": {"at": FAR},
        "task": {"type": "shell", "command": [sys.executable, "-c", TALKER]},
    }
    code, body = cluster.api(leader, "POST", "/v1/jobs", job)
    assert code == 201, body
    code, run = cluster.api(leader, "POST", "/v1/jobs/talker/trigger")
    assert code == 201, run
    run_id = run["run_id"]
    run = _finished_run(cluster, leader, run_id)
    assert run["state"] == "succeeded", (run, cluster.logs())
    owner = run["node"]
    other = next(n for n in cluster.ids if n != owner)

    # The tail in the state is the last output_tail_bytes of the full output, on every node.
    assert run["output"].encode() == EXPECTED[-64:]
    code, seen = cluster.api(other, "GET", f"/v1/runs/{run_id}?consistent=true")
    assert code == 200 and seen["output"] == run["output"]

    # The full output lives on the owner's disk...
    data_dir = cluster.root / "data" / owner
    assert (data_dir / "outputs" / output_file_name(run_id, 1)).read_bytes() == EXPECTED
    assert json.loads((data_dir / "running-pgids.json").read_bytes())["groups"] == []
    # ...and any node serves it: the owner from its disk, another one by proxy.
    for node in (owner, other):
        code, headers, text = _get(cluster, node, f"/v1/runs/{run_id}/output")
        assert code == 200, text
        assert text == EXPECTED
        assert headers["Content-Type"].startswith("text/plain")
        assert headers["X-Raftsched-Output-Node"] == owner
    code, _, text = _get(cluster, other, f"/v1/runs/{run_id}/output?attempt=1")
    assert code == 200 and text == EXPECTED

    # Errors: the JSON envelope.
    for path, status, error in (
        (f"/v1/runs/{run_id}/output?attempt=2", 404, "not_found"),
        (f"/v1/runs/{run_id}/output?attempt=zero", 400, "validation_error"),
        ("/v1/runs/nope@1/output", 404, "not_found"),
    ):
        code, _, text = _get(cluster, other, path)
        assert (code, _error_code(text)) == (status, error), text
    code, _, text = _get(cluster, other, f"/v1/runs/{run_id}/output", token=None)
    assert (code, _error_code(text)) == (401, "unauthorized")
    # A request that was already proxied once is never proxied again.
    proxied = {"X-Raftsched-Proxied-By": "n9"}
    code, _, text = _get(cluster, other, f"/v1/runs/{run_id}/output", headers=proxied)
    assert (code, _error_code(text)) == (404, "not_found"), text

    # The node that holds the output is gone: the others say so.
    cluster.kill(owner)
    code, headers, text = _get(cluster, other, f"/v1/runs/{run_id}/output")
    assert (code, _error_code(text)) == (503, "unavailable"), text
    assert headers.get("Retry-After") == "1"
