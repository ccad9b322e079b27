"""GET /metrics: a state driven by commands, served by the real app, read by the real parser."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from raftsched import __version__
from raftsched.api.app import Services, make_app
from raftsched.clock import FakeClock
from raftsched.commands import CommandType
from raftsched.errors import NoLeader
from raftsched.model import RunState
from raftsched.records import BUCKETS_MS, COUNTERS, Summary
from raftsched.replication import RaftStatus

from statekit import T0, Driver

TOKEN = "metrics-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class FakeRaft:
    def __init__(self, status: RaftStatus | None) -> None:
        self._status = status

    def status(self) -> RaftStatus:
        if self._status is None:
            raise NoLeader("the Raft node is not running")
        return self._status

    def tick_alive(self) -> bool:
        return True

    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]:
        raise AssertionError("GET /metrics must not propose")

    async def wait_applied(self, index: int, timeout_s: float = 5.0) -> None:
        return None

    async def change_membership(self, kind: str, addr: str, *, timeout_s: float = 10.0) -> None:
        raise AssertionError("GET /metrics must not change the membership")


def raft_status(role: str = "follower") -> RaftStatus:
    return RaftStatus(
        role=role,
        leader="n1:1",
        term=7,
        commit_index=42,
        applied_index=41,
        log_len=40,
        connected={"n1:1": True, "n3:1": False},
        match_index={},
    )


def busy_state() -> Driver:
    """Three jobs: a success, a failure, a timeout, a skip, a paused job, a pending and two running runs."""
    d = Driver()
    d.boot()
    d.add("a", overlap="allow")
    d.add("b")
    d.add("c")
    # a: three runs started late by 0, 3 and 700 ms, finished after 1, 40 and 2500 ms.
    for k, (late, took, outcome) in enumerate(
        [(0, 1, "succeeded"), (3, 40, "failed"), (700, 2500, "timed_out")], start=1
    ):
        due = T0 + k * 1000
        d.fire("a", due)
        rid = f"a@{due}"
        assert d.start(rid, at=due + late)["accepted"] == [rid]
        assert d.finish(rid, outcome=outcome, at=due + late + took)["accepted"] == [rid]
    # a: one still running (late 20 000 ms: past most buckets), one pending.
    d.fire("a", T0 + 4000)
    d.start(f"a@{T0 + 4000}", at=T0 + 24_000)
    d.fire("a", T0 + 5000)
    # b: one running, then a slot skipped by overlap `forbid`.
    d.fire("b", T0 + 1000, node="n3")
    d.start(f"b@{T0 + 1000}", node="n3", at=T0 + 1000 + 400_000)  # beyond the last bound: +Inf only
    d.fire("b", T0 + 2000, node="n3")
    assert d.state.runs[f"b@{T0 + 2000}"].state == "skipped"
    # c: paused, never run.
    assert d.cmd(CommandType.PAUSE_JOB, job_id="c", now_ms=T0)["ok"]
    return d


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[..., Any]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(d: Driver, raft: FakeRaft, token: str | None = None) -> TestClient[Any, Any]:
        services = Services(node_id="n2", state=d.state, raft=raft, clock=FakeClock(), api_token=token)
        client: TestClient[Any, Any] = TestClient(TestServer(make_app(services)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


async def scrape(client: TestClient[Any, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    resp = await client.get("/metrics", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"] == CONTENT_TYPE_LATEST
    return {f.name: f for f in text_string_to_metric_families(await resp.text())}


def samples(
    families: dict[str, Any], family: str, name: str | None = None
) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for s in families[family].samples if s.name == (name or family)]


def value(families: dict[str, Any], family: str, name: str | None = None, **labels: str) -> float:
    found = [v for lbl, v in samples(families, family, name) if lbl == labels]
    assert len(found) == 1, (family, labels, samples(families, family, name))
    return found[0]


def check_histogram(families: dict[str, Any], family: str, summary: Summary, **labels: str) -> None:
    assert families[family].type == "histogram"
    bounds = [*(b / 1000 for b in BUCKETS_MS), float("inf")]
    buckets = [
        (float(lbl["le"]), v)
        for lbl, v in samples(families, family, family + "_bucket")
        if {k: x for k, x in lbl.items() if k != "le"} == labels
    ]
    assert [b for b, _ in buckets] == bounds
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), "buckets are cumulative"
    running = 0
    for (_, v), n in zip(buckets, summary.buckets, strict=True):
        running += n
        assert v == running
    assert counts[-1] == summary.count == value(families, family, family + "_count", **labels)
    assert value(families, family, family + "_sum", **labels) == pytest.approx(summary.total_ms / 1000)


async def test_counters_and_histograms_equal_the_state(client_for: Any) -> None:
    d = busy_state()
    client = await client_for(d, FakeRaft(raft_status()))
    fams = await scrape(client)

    state = d.state
    assert set(state.stats) == {"a", "b", "c"}
    assert fams["raftsched_job_runs"].type == "counter"
    for job_id, stats in state.stats.items():
        for counter in COUNTERS:
            got = value(fams, "raftsched_job_runs", "raftsched_job_runs_total", job=job_id, outcome=counter)
            assert got == stats[counter], (job_id, counter)
        check_histogram(fams, "raftsched_job_lateness_seconds", stats["lateness"], job=job_id)
        check_histogram(fams, "raftsched_job_duration_seconds", stats["duration"], job=job_id)
    for counter in COUNTERS:
        got = value(fams, "raftsched_runs", "raftsched_runs_total", outcome=counter)
        assert got == state.totals[counter], counter
    check_histogram(fams, "raftsched_lateness_seconds", state.totals["lateness"])
    check_histogram(fams, "raftsched_duration_seconds", state.totals["duration"])

    # The scenario really exercised what it claims to.
    a = state.stats["a"]
    assert (a["fired"], a["succeeded"], a["failed"], a["timed_out"]) == (5, 1, 1, 1)
    assert state.stats["b"]["skipped"] == 1
    assert a["lateness"].count == 4 and a["duration"].count == 3
    assert state.totals["lateness"].buckets[-1] == 1  # b's 400 s start: only in +Inf
    assert value(fams, "raftsched_lateness_seconds", "raftsched_lateness_seconds_bucket", le="300.0") == 4
    assert value(fams, "raftsched_lateness_seconds", "raftsched_lateness_seconds_bucket", le="+Inf") == 5
    assert value(fams, "raftsched_job_duration_seconds", "raftsched_job_duration_seconds_sum", job="a") == (
        pytest.approx(2.541)
    )


async def test_cluster_gauges(client_for: Any) -> None:
    d = busy_state()
    client = await client_for(d, FakeRaft(raft_status()))
    fams = await scrape(client)

    assert value(fams, "raftsched_jobs") == 3
    assert value(fams, "raftsched_jobs_paused") == 1
    assert value(fams, "raftsched_runs_active", state="pending") == 1
    assert value(fams, "raftsched_runs_active", state="running") == 2
    assert value(fams, "raftsched_nodes", state="up") == 3
    assert value(fams, "raftsched_nodes", state="down") == 0
    for node in ("n1", "n2", "n3"):
        assert value(fams, "raftsched_node_up", node=node) == 1
        assert value(fams, "raftsched_node_capacity", node=node) == 4
        assert value(fams, "raftsched_node_draining", node=node) == 0
        with d.state.lock:
            active = d.state.active_runs_of(node)
        running = sum(r.state is RunState.RUNNING for r in active)
        assert value(fams, "raftsched_node_running", node=node) == running
        assert value(fams, "raftsched_node_pending", node=node) == len(active) - running
    assert value(fams, "raftsched_node_running", node="n2") == 1  # a's running run
    assert value(fams, "raftsched_node_pending", node="n2") == 1  # and its pending one
    assert value(fams, "raftsched_state_applied", "raftsched_state_applied_total") == d.state.applied > 0
    assert value(fams, "raftsched_build_info", version=__version__, node="n2") == 1


@pytest.mark.parametrize("role", ["leader", "follower", "candidate"])
async def test_raft_gauges_match_the_status(client_for: Any, role: str) -> None:
    d = Driver()
    d.boot()
    status = raft_status(role)
    client = await client_for(d, FakeRaft(status))
    fams = await scrape(client)

    for name in ("leader", "follower", "candidate"):
        assert value(fams, "raftsched_raft_role", role=name) == (1 if name == role else 0)
    assert value(fams, "raftsched_raft_is_leader") == (1 if role == "leader" else 0)
    assert value(fams, "raftsched_raft_term") == status.term
    assert value(fams, "raftsched_raft_commit_index") == status.commit_index
    assert value(fams, "raftsched_raft_applied_index") == status.applied_index
    assert value(fams, "raftsched_raft_log_entries") == status.log_len
    assert value(fams, "raftsched_raft_peer_connected", peer="n1", address="n1:1") == 1
    assert value(fams, "raftsched_raft_peer_connected", peer="n3", address="n3:1") == 0


async def test_without_a_running_raft_node_the_state_is_still_exported(client_for: Any) -> None:
    d = busy_state()
    client = await client_for(d, FakeRaft(None))
    fams = await scrape(client)
    assert not [name for name in fams if name.startswith("raftsched_raft_")]
    assert value(fams, "raftsched_jobs") == 3


async def test_an_empty_state_exports_zeroes(client_for: Any) -> None:
    d = Driver()
    client = await client_for(d, FakeRaft(raft_status()))
    fams = await scrape(client)
    assert samples(fams, "raftsched_job_runs", "raftsched_job_runs_total") == []
    for counter in COUNTERS:
        assert value(fams, "raftsched_runs", "raftsched_runs_total", outcome=counter) == 0
    assert value(fams, "raftsched_lateness_seconds", "raftsched_lateness_seconds_count") == 0
    assert value(fams, "raftsched_nodes", state="up") == 0


async def test_metrics_need_the_bearer_token_when_one_is_set(client_for: Any) -> None:
    d = busy_state()
    client = await client_for(d, FakeRaft(raft_status()), token=TOKEN)
    resp = await client.get("/metrics")
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "unauthorized"
    resp = await client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    fams = await scrape(client, AUTH)
    assert value(fams, "raftsched_jobs") == 3
