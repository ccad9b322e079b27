"""`GET /v1/runs/{id}/output` on one node: the file, the output so far in memory, the whole tail.

Most outputs are small and have no file: the run's tail in the state is then the whole output,
and every node answers from it (`executors.base.tail_is_whole`). The cluster test with files and
proxying is `tests/integration/test_outputs.py`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot

from raftsched.api.app import Services, make_app
from raftsched.api.outputs import OUTPUT_DIR
from raftsched.clock import FakeClock
from raftsched.commands import CommandType, encode
from raftsched.executors import OutputSink
from raftsched.executors.base import tail_is_whole, truncation_marker
from raftsched.executors.outputs import output_path
from raftsched.state import State

TAIL = 16
JOB = {"id": "j", "schedule": {"every": 60}, "task": {"type": "shell", "command": ["true"]}}
RUN = f"j@manual-{T0}"


class Node:
    def __init__(self, client: TestClient, state: State, directory: Path) -> None:
        self.client, self.state, self.directory = client, state, directory

    def apply(self, cmd: CommandType, **body: Any) -> dict[str, Any]:
        return self.state.apply(encode(cmd, {"now_ms": T0, **body}))

    def report(self, cmd: CommandType, **item: Any) -> None:
        item = {"run_id": RUN, "attempt": 1, "started_ms": T0, "finished_ms": T0, **item}
        assert self.apply(cmd, node="n1", items=[item])["accepted"] == [RUN]

    async def output(self, query: str = "") -> tuple[int, bytes, str | None]:
        resp = await self.client.get(f"/v1/runs/{RUN}/output{query}")
        return resp.status, await resp.read(), resp.headers.get("X-Raftsched-Output-Node")


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    state, clock = State(), FakeClock(T0)
    boot(state, clock)
    state.apply(encode(CommandType.BEGIN_TERM, {"term": 2, "leader": "n1", "output_tail_bytes": TAIL}))
    services = Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock, api_token=None)
    app = make_app(services)
    app[OUTPUT_DIR] = tmp_path
    async with TestClient(TestServer(app)) as client:
        one = Node(client, state, tmp_path)
        assert one.apply(CommandType.PUT_JOB, spec=JOB, mode="create")["ok"]
        assert one.apply(CommandType.TRIGGER_JOB, job_id="j", node="n1")["run_id"] == RUN
        yield one


def test_a_tail_is_whole_only_when_no_cut_can_explain_it() -> None:
    assert tail_is_whole("", TAIL) and tail_is_whole("x" * (TAIL - 4), TAIL)
    assert not tail_is_whole("x" * (TAIL - 3), TAIL)  # a cut through a 4-byte character
    assert not tail_is_whole("é" * 7, TAIL)  # 14 bytes
    assert not tail_is_whole("", 3)


async def test_a_small_output_is_served_from_memory_then_from_the_state(node: Node) -> None:
    node.report(CommandType.START_RUNS)
    status, _, _ = await node.output()
    assert status == 404  # running, nothing written yet
    with OutputSink(TAIL, output_path(node.directory, RUN, 1)) as sink:
        sink.write(b"so far")
        assert await node.output() == (200, b"so far", "n1")  # a run executing here, no file yet
        sink.write(b" done")
    assert list(node.directory.iterdir()) == []  # whole in its tail: no file
    node.report(CommandType.FINISH_RUNS, outcome="succeeded", output=sink.tail_text())
    assert await node.output() == (200, b"so far done", "n1")
    assert await node.output("?attempt=1") == (200, b"so far done", "n1")


async def test_a_long_output_is_served_from_its_file_and_never_from_a_cut_tail(node: Node) -> None:
    node.report(CommandType.START_RUNS)
    path = output_path(node.directory, RUN, 1)
    with OutputSink(TAIL, path) as sink:
        sink.write(b"0123456789")
        sink.write(b"abcdefghij")  # outgrows the tail: the file starts with everything so far
        assert await node.output() == (200, b"0123456789abcdefghij", "n1")
    node.report(CommandType.FINISH_RUNS, outcome="succeeded", output=sink.tail_text())
    assert await node.output() == (200, b"0123456789abcdefghij", "n1")
    path.unlink()  # pruned: the tail in the state is a cut, not the output
    status, _, _ = await node.output()
    assert status == 404


async def test_a_cut_output_is_served_as_its_file_with_the_marker(node: Node) -> None:
    node.report(CommandType.START_RUNS)
    path = output_path(node.directory, RUN, 1)
    with OutputSink(TAIL, path, max_bytes=24) as sink:
        for _ in range(100):
            sink.write(b"0123456789")
        assert await node.output() == (200, b"0123456789" * 2 + b"0123" + truncation_marker(24), "n1")
    node.report(CommandType.FINISH_RUNS, outcome="succeeded", output=sink.tail_text(), output_truncated=True)
    status, body, _ = await node.output()
    assert status == 200 and body == path.read_bytes() and body.endswith(truncation_marker(24))
    run = await node.client.get(f"/v1/runs/{RUN}")
    assert (await run.json())["output_truncated"] is True


async def test_an_output_near_the_limit_gets_a_file_at_close(node: Node) -> None:
    path = output_path(node.directory, RUN, 1)
    with OutputSink(TAIL, path) as sink:
        sink.write(b"x" * (TAIL - 2))  # fits the tail, but a cut tail could look like this
    assert path.read_bytes() == b"x" * (TAIL - 2) and sink.file_bytes == TAIL - 2
