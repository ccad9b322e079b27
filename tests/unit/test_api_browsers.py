"""The admin API against browsers and slow clients: Content-Type, Origin, Host, Sec-Fetch-Site,
answer headers, and the connection bounds (browsers.py, connections.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from apikit import T0, MemoryRaft, boot

from raftsched import config
from raftsched.api.app import Services, make_app
from raftsched.api.browsers import BrowserPolicy, is_loopback_name
from raftsched.api.connections import ConnectionGuard, ConnectionLimits
from raftsched.clock import FakeClock
from raftsched.state import State

JOB = b'{"id": "pwn", "schedule": {"every": 60}, "task": {"type": "shell", "command": ["id"]}}'


def _services(state: State, **kwargs: Any) -> Services:
    clock = FakeClock(T0)
    boot(state, clock)
    return Services(node_id="n1", state=state, raft=MemoryRaft(state), clock=clock, **kwargs)


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, State]]:
    state = State()
    services = _services(state, browsers=BrowserPolicy.build(loopback_bind=True))
    async with TestClient(TestServer(make_app(services), host="127.0.0.1")) as c:
        yield c, state


async def _post(c: TestClient, body: bytes, **headers: str) -> tuple[int, Any]:
    resp = await c.post("/v1/jobs", data=body, headers=headers)
    return resp.status, await resp.json()


def _code(body: Any) -> str:
    return str(body["error"]["code"])


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_a_body_that_is_not_json_typed_is_415_and_creates_nothing(
    client: tuple[TestClient, State], ctype: str
) -> None:
    c, state = client
    status, body = await _post(c, JOB, **{"Content-Type": ctype})
    assert (status, _code(body), body["error"]["field"]) == (415, "unsupported_media_type", "Content-Type")
    assert "pwn" not in state.jobs


async def test_a_body_without_content_type_is_415(client: tuple[TestClient, State]) -> None:
    c, state = client
    resp = await c.post("/v1/jobs", data=JOB, skip_auto_headers=["Content-Type"])
    assert resp.status == 415 and "pwn" not in state.jobs


async def test_json_with_a_charset_is_accepted(client: tuple[TestClient, State]) -> None:
    c, state = client
    status, _ = await _post(c, JOB, **{"Content-Type": "application/json; charset=utf-8"})
    assert status == 201 and "pwn" in state.jobs


async def test_bodiless_writes_need_no_content_type(client: tuple[TestClient, State]) -> None:
    c, state = client
    assert (await _post(c, JOB, **{"Content-Type": "application/json"}))[0] == 201
    resp = await c.post("/v1/jobs/pwn/pause", skip_auto_headers=["Content-Type"])
    assert resp.status == 200 and state.jobs["pwn"].paused_ms is not None


@pytest.mark.parametrize(
    "origin",
    ["http://127.0.0.1:1", "http://localhost:8000", "null", "https://evil.example", "file://", "garbage"],
)
async def test_a_foreign_origin_is_403_before_anything_runs(
    client: tuple[TestClient, State], origin: str
) -> None:
    c, state = client
    status, body = await _post(c, JOB, **{"Content-Type": "application/json", "Origin": origin})
    assert (status, _code(body), body["error"]["field"]) == (403, "forbidden_origin", "Origin")
    assert "pwn" not in state.jobs
    resp = await c.get("/v1/jobs", headers={"Origin": origin})
    assert resp.status == 403  # reads too: a page must not read answers either


async def test_the_nodes_own_origin_is_accepted(client: tuple[TestClient, State]) -> None:
    c, state = client
    own = f"http://127.0.0.1:{c.port}"
    status, _ = await _post(c, JOB, **{"Content-Type": "application/json", "Origin": own})
    assert status == 201
    # `localhost` is another origin than `127.0.0.1`, unless the page was served as localhost.
    host = f"localhost:{c.port}"
    resp = await c.get("/v1/jobs", headers={"Origin": f"http://{host}", "Host": host})
    assert resp.status == 200
    resp = await c.get("/v1/jobs", headers={"Origin": f"http://localhost:{c.port}"})
    assert resp.status == 403


async def test_cross_site_fetch_metadata_is_403(client: tuple[TestClient, State]) -> None:
    c, state = client
    headers = {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"}
    status, body = await _post(c, JOB, **headers)
    assert (status, _code(body)) == (403, "forbidden_origin") and "pwn" not in state.jobs


@pytest.mark.parametrize("host", ["attacker.example", "attacker.example:8101", "10.0.0.1", "localhost.evil"])
async def test_a_foreign_host_on_a_loopback_bind_is_403(client: tuple[TestClient, State], host: str) -> None:
    c, state = client
    status, body = await _post(c, JOB, **{"Content-Type": "application/json", "Host": host})
    assert (status, _code(body), body["error"]["field"]) == (403, "forbidden_host", "Host")
    assert "pwn" not in state.jobs
    resp = await c.get("/", headers={"Host": host})
    assert resp.status == 403  # the dashboard too: a rebound page must not load it


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8101", "127.0.0.1", "127.1.2.3:80", "[::1]:8101"])
def test_loopback_host_names(host: str) -> None:
    assert is_loopback_name(host)


async def test_allowed_origins_and_a_public_bind() -> None:
    state = State()
    policy = BrowserPolicy.build(loopback_bind=False, allowed_origins=["https://ops.example.com"])
    services = _services(state, browsers=policy)
    async with TestClient(TestServer(make_app(services), host="127.0.0.1")) as c:
        headers = {"Origin": "https://ops.example.com:443", "Host": "sched.example.com"}
        assert (await c.get("/v1/jobs", headers=headers)).status == 200
        headers["Origin"] = "https://ops.example.com:8443"
        assert (await c.get("/v1/jobs", headers=headers)).status == 403


def test_allowed_origins_config_is_checked() -> None:
    assert config.normalized_origin("https://a.example") == ("https", "a.example", 443)
    for bad in ("a.example", "https://a.example/path", "ftp://a.example", "https://u@a.example"):
        with pytest.raises(ValueError, match="origin"):
            config.normalized_origin(bad)


async def test_answer_headers(client: tuple[TestClient, State]) -> None:
    c, _ = client
    resp = await c.get("/v1/jobs")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Cache-Control"] == "no-store"
    resp = await c.delete("/v1/health")
    assert resp.status == 405 and "GET" in resp.headers["Allow"]
    resp = await c.get("/")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_401_names_the_scheme() -> None:
    services = _services(State(), api_token="t" * 40)
    async with TestClient(TestServer(make_app(services))) as c:
        resp = await c.get("/v1/jobs")
        assert resp.status == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer")


# ---------------------------------------------------------------- connection bounds, on a real socket


async def _serve(limits: ConnectionLimits) -> tuple[web.AppRunner, int, ConnectionGuard]:
    guard = ConnectionGuard(limits)
    services = _services(State(), connections=guard)
    runner = web.AppRunner(make_app(services), keepalive_timeout=limits.idle_timeout_s)
    await runner.setup()
    assert runner.server is not None
    guard.install(runner.server)
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port, guard


async def _closed_by_peer(reader: asyncio.StreamReader, within_s: float) -> bytes:
    async with asyncio.timeout(within_s):
        return await reader.read()  # b"" or a refusal, then EOF


async def test_a_slow_header_sender_is_closed_after_the_header_timeout() -> None:
    runner, port, guard = await _serve(ConnectionLimits(header_timeout_s=0.3, idle_timeout_s=30))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never the blank line
        await writer.drain()
        assert await _closed_by_peer(reader, 5) == b""
        writer.close()
        assert guard.timed_out == 1 and guard.open_connections == 0
    finally:
        await runner.cleanup()


async def test_a_prompt_client_keeps_its_connection_past_the_header_timeout() -> None:
    runner, port, guard = await _serve(ConnectionLimits(header_timeout_s=0.2, idle_timeout_s=30))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(3):
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(0.15)
        assert guard.timed_out == 0
        writer.close()
    finally:
        await runner.cleanup()


async def test_at_the_cap_the_longest_silent_connection_makes_room() -> None:
    runner, port, guard = await _serve(ConnectionLimits(max_connections_per_client=5))
    silent: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(5):
            silent.append(await asyncio.open_connection("127.0.0.1", port))
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        assert (await _closed_by_peer(reader, 5)).startswith(b"HTTP/1.1 200")
        writer.close()
        assert await _closed_by_peer(silent[0][0], 5) == b"", "the oldest silent one was closed"
        assert guard.evicted == 1 and guard.refused == 0
    finally:
        for _, w in silent:
            w.close()
        await runner.cleanup()


async def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused() -> None:
    runner, port, guard = await _serve(ConnectionLimits(max_connections_per_client=2))
    busy: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")  # answered; kept alive, no longer silent
            busy.append((reader, writer))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        refusal = await _closed_by_peer(reader, 5)
        assert refusal.startswith(b"HTTP/1.1 503") and b"Retry-After" in refusal
        writer.close()
        assert guard.refused == 1 and guard.open_connections == 2
        for _, w in busy:
            w.close()
        await asyncio.sleep(0.1)
        assert guard.open_connections == 0
    finally:
        for _, w in busy:
            w.close()
        await runner.cleanup()
