"""The admin API of a real node under slow and many clients: a slowloris flood neither holds
connections past the header timeout, nor keeps the node's own tools out, nor grows its file
descriptors past the per-client cap; answers carry the security headers."""

from __future__ import annotations

import asyncio
import os
import resource
import time
import urllib.request

import pytest

from cluster import Cluster

pytestmark = pytest.mark.integration

FLOOD = 700  # more than the per-client cap (256): every one from 127.0.0.1, as an attacker's would be
HEADER_TIMEOUT_S = 2.0


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _slowloris(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")  # never finished
        conns.append((reader, writer))
    return conns


async def _dribble(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], seconds: float) -> None:
    """One more byte on every connection each 0.5 s, as slowloris does to look alive."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for _, writer in conns:
            if not writer.is_closing():
                writer.write(b"a")
        await asyncio.sleep(0.5)


async def _all_closed(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]], within_s: float) -> int:
    """How many the node closed (EOF or reset) within `within_s`."""

    async def closed(reader: asyncio.StreamReader) -> bool:
        try:
            await reader.read()
        except ConnectionError:
            pass
        return True

    results = await asyncio.wait_for(asyncio.gather(*(closed(r) for r, _ in conns)), within_s)
    return sum(results)


def _client_calls(cluster: Cluster, node: str, n: int) -> list[int]:
    codes = []
    for i in range(n):
        task = {"type": "shell", "command": ["true"]}
        body = {"id": f"during-{i}", "schedule": {"every": 3600}, "task": task}
        codes.append(cluster.api(node, "POST", "/v1/jobs", body, timeout=10)[0])
        codes.append(cluster.api(node, "GET", "/v1/jobs", timeout=10)[0])
    return codes


def test_a_slowloris_flood_is_bounded_and_the_cli_still_gets_in(make_cluster: type[Cluster]) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    cluster = make_cluster(cluster_keys={"api_header_timeout_s": HEADER_TIMEOUT_S})
    cluster.start()
    cluster.wait_healthy()
    node = cluster.ids[0]
    pid = cluster.procs[node].pid
    port = cluster.ports[node][1]
    fds_before = _open_fds(pid)

    async def attack() -> tuple[int, list[int], int]:
        conns = await _slowloris(port, FLOOD)
        dribble = asyncio.create_task(_dribble(conns, 1.0))
        codes = await asyncio.to_thread(_client_calls, cluster, node, 5)
        fds_during = _open_fds(pid)
        await dribble
        try:
            closed = await _all_closed(conns, HEADER_TIMEOUT_S + 5)
        finally:
            for _, writer in conns:
                writer.close()
        return fds_during, codes, closed

    fds_during, codes, closed = asyncio.run(attack())
    assert codes == [201, 200] * 5, codes
    assert closed == FLOOD
    assert fds_during - fds_before <= 256 + 16, (fds_before, fds_during)
    code, health = cluster.api(node, "GET", "/v1/health")
    assert code == 200 and health["ok"], health


def test_answers_carry_the_security_headers(make_cluster: type[Cluster]) -> None:
    token = "headers-test-token-" + "q7Zk2" * 6
    cluster = make_cluster(size=1, cluster_keys={"api_token": token})
    cluster.start()
    cluster.wait_healthy()
    url = cluster.url(cluster.ids[0])
    with urllib.request.urlopen(url + "/v1/health", timeout=5) as resp:
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"
    for path, method, status, header in (
        ("/v1/jobs", "GET", 401, "WWW-Authenticate"),
        ("/v1/health", "DELETE", 405, "Allow"),
    ):
        request = urllib.request.Request(url + path, method=method)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        info.value.close()
        assert info.value.code == status and info.value.headers[header], header
