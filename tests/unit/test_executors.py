"""Executors: one contract run over shell, http and python, then each one's own fences.

Only 127.0.0.1 is ever dialled: targets that must be refused are refused before any connection,
and the tests that check this make connecting impossible to be sure.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from raftsched.executors import (
    ExecPolicy,
    ExecResult,
    Executor,
    HttpExecutor,
    OutputSink,
    PythonExecutor,
    RunContext,
    ShellExecutor,
    executor_for,
    identity_context,
    identity_env,
    identity_headers,
)
from raftsched.executors._pycall import Report, module_allowed
from raftsched.executors._pyrunner import RESULT_MAX, encode_outcome
from raftsched.executors.base import truncation_marker
from raftsched.executors.http import refusal
from raftsched.model import TaskSpec, TaskType

CTX = RunContext(
    job_id="job-1",
    run_id="job-1@1764088200123",
    attempt=3,
    scheduled_ms=1764088200123,
    node_id="node-a",
    shard=2,
    shards=5,
)
SCHEDULED_AT = "2025-11-25T16:30:00.123Z"
LOOPBACK: tuple[IPv4Network | IPv6Network, ...] = (ip_network("127.0.0.0/8"),)
SAMPLE = "pytasks_sample"


def shell(*argv: str, **kw: Any) -> TaskSpec:
    return TaskSpec(type=TaskType.SHELL, command=list(argv), **kw)


def python(name: str, **kw: Any) -> TaskSpec:
    return TaskSpec(type=TaskType.PYTHON, callable=f"{SAMPLE}:{name}", **kw)


def py(code: str) -> list[str]:
    """argv running a line of python: portable and exact output."""
    return [sys.executable, "-c", code]


def pid_dead(pid: int) -> bool:
    """Gone, or a zombie (orphans are not always reaped in containers; they hold nothing)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


async def wait_dead(pid: int, within_s: float = 2.0) -> bool:
    deadline = time.monotonic() + within_s
    while not pid_dead(pid):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def pid_in(path: Path) -> int | None:
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text.isdigit() else None


async def read_pid(path: Path, within_s: float = 5.0) -> int:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pid = pid_in(path)
        if pid is not None:
            return pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never got a pid")


# ---------------------------------------------------------------- a loopback HTTP server


@dataclass
class Sink:
    """A test server on 127.0.0.1 that records what reaches it."""

    server: TestServer
    hits: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.server.port}{path}"


def make_app(sink: Sink) -> web.Application:
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        sink.hits.append(request.path)
        result: web.StreamResponse = await handler(request)
        return result

    async def ok(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    async def fail(_: web.Request) -> web.Response:
        return web.Response(status=500, text="oops")

    async def slow(_: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(30):
                await sink.stop.wait()
        except TimeoutError:
            pass
        return web.Response(text="late")

    async def headers(request: web.Request) -> web.Response:
        return web.json_response(dict(request.headers))

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * int(request.query["n"]) + "END\n")

    async def redirect(_: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/ok"})

    async def echo(request: web.Request) -> web.Response:
        body = await request.text()
        return web.json_response({"content_type": request.headers.get("Content-Type"), "body": body})

    app = web.Application(middlewares=[web.middleware(record)])
    app.router.add_get("/ok", ok)
    app.router.add_get("/fail", fail)
    app.router.add_get("/slow", slow)
    app.router.add_get("/headers", headers)
    app.router.add_get("/big", big)
    app.router.add_get("/redirect", redirect)
    app.router.add_post("/echo", echo)
    return app


@pytest.fixture
async def http_sink() -> AsyncIterator[Sink]:
    sink = Sink(server=None)  # type: ignore[arg-type]
    sink.server = TestServer(make_app(sink), host="127.0.0.1")
    await sink.server.start_server()
    try:
        yield sink
    finally:
        sink.stop.set()
        await sink.server.close()


def http(url: str, **kw: Any) -> TaskSpec:
    return TaskSpec(type=TaskType.HTTP, url=url, **kw)


# ---------------------------------------------------------------- the contract, over every executor


@dataclass
class Harness:
    """One executor and the tasks that exercise the contract on it."""

    kind: str
    executor: Executor
    success: TaskSpec
    failure: TaskSpec
    failure_error: str
    slow: Callable[[Path], TaskSpec]
    wait_started: Callable[[Path], Awaitable[int | None]]
    identity: TaskSpec
    big: Callable[[int], TaskSpec]


def shell_harness(policy: ExecPolicy) -> Harness:
    async def started(pidfile: Path) -> int:
        return await read_pid(pidfile)

    return Harness(
        kind="shell",
        executor=ShellExecutor(policy),
        success=shell(*py("print('hello')")),
        failure=shell(*py("import sys; print('oops'); sys.exit(3)")),
        failure_error="exit status 3",
        slow=lambda pidfile: shell("sh", "-c", f"echo $$ > {pidfile}; exec sleep 30"),
        wait_started=started,
        identity=shell("sh", "-c", "env | grep ^RAFTSCHED_"),
        big=lambda n: shell(*py(f"import sys; sys.stdout.write('x' * {n}); print('END')")),
    )


def python_harness(policy: ExecPolicy) -> Harness:
    async def started(pidfile: Path) -> int:
        return await read_pid(pidfile)

    return Harness(
        kind="python",
        executor=PythonExecutor(policy),
        success=python("hello"),
        failure=python("fail"),
        failure_error="ValueError: boom",
        slow=lambda pidfile: python("sleep", kwargs={"seconds": 30, "pidfile": str(pidfile)}),
        wait_started=started,
        identity=python("identity"),
        big=lambda n: python("big", kwargs={"n": n}),
    )


def http_harness(policy: ExecPolicy, sink: Sink) -> Harness:
    async def started(_: Path) -> None:
        deadline = time.monotonic() + 5
        while "/slow" not in sink.hits:
            assert time.monotonic() < deadline, "the request never arrived"
            await asyncio.sleep(0.02)

    return Harness(
        kind="http",
        executor=HttpExecutor(policy),
        success=http(sink.url("/ok")),
        failure=http(sink.url("/fail")),
        failure_error="unexpected status 500",
        slow=lambda _: http(sink.url("/slow")),
        wait_started=started,
        identity=http(sink.url("/headers")),
        big=lambda n: http(sink.url(f"/big?n={n}")),
    )


POLICY = ExecPolicy(python_allow=(SAMPLE,), http_allow=LOOPBACK, output_tail_bytes=1000, kill_grace_s=1.0)


@pytest.fixture(params=["shell", "http", "python"])
async def harness(request: pytest.FixtureRequest, http_sink: Sink) -> AsyncIterator[Harness]:
    if request.param == "shell":
        made = shell_harness(POLICY)
    elif request.param == "python":
        made = python_harness(POLICY)
    else:
        made = http_harness(POLICY, http_sink)
    try:
        yield made
    finally:
        await made.executor.close()


async def test_success(harness: Harness) -> None:
    result = await harness.executor.run(harness.success, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "succeeded", result
    assert result.error is None
    assert "hello" in result.output_tail


async def test_failure_is_a_result_not_an_exception(harness: Harness) -> None:
    result = await harness.executor.run(harness.failure, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "failed"
    assert result.error is not None and harness.failure_error in result.error
    assert ("oops" if harness.kind != "python" else "about to fail") in result.output_tail


async def test_timeout_stops_the_task(harness: Harness, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = await harness.executor.run(harness.slow(pidfile), CTX, timeout_s=1.5, output_path=None)
    assert result.outcome == "timed_out"
    assert result.error == "timed out after 1.5 s"
    assert time.monotonic() - started < 4
    if harness.kind != "http":
        assert await wait_dead(int(pidfile.read_text()))


async def test_cancellation_kills_and_reraises(harness: Harness, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    run = asyncio.ensure_future(
        harness.executor.run(harness.slow(pidfile), CTX, timeout_s=30, output_path=None)
    )
    try:
        pid = await harness.wait_started(pidfile)
    except BaseException:
        run.cancel()
        raise
    started = time.monotonic()
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert time.monotonic() - started < 3
    if pid is not None:
        assert pid_dead(pid)


async def test_identity_is_passed(harness: Harness) -> None:
    result = await harness.executor.run(harness.identity, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "succeeded", result
    for value in ("job-1", CTX.run_id, SCHEDULED_AT, "node-a"):
        assert value in result.output_tail
    if harness.kind == "http":
        seen = orjson.loads(result.output_tail)
        assert {k: seen[k] for k in identity_headers(CTX)} == identity_headers(CTX)
    else:
        for key, value in identity_env(CTX).items():
            assert f"{key}={value}" in result.output_tail


async def test_output_tail_bounded_and_full_output_appended(harness: Harness, tmp_path: Path) -> None:
    out = tmp_path / "run.out"
    out.write_bytes(b"earlier attempt\n")
    result = await harness.executor.run(harness.big(100_000), CTX, timeout_s=10, output_path=out)
    assert result.outcome == "succeeded", result
    full = out.read_text()
    assert full.startswith("earlier attempt\n")
    assert "x" * 100_000 + "END\n" in full
    assert len(result.output_tail.encode()) <= POLICY.output_tail_bytes
    assert len(result.output_tail) > 900
    assert full.endswith(result.output_tail)


# ---------------------------------------------------------------- identity, policy helpers, sink


def test_identity_values() -> None:
    assert identity_env(CTX) == {
        "RAFTSCHED_JOB_ID": "job-1",
        "RAFTSCHED_RUN_ID": CTX.run_id,
        "RAFTSCHED_ATTEMPT": "3",
        "RAFTSCHED_SCHEDULED_AT": SCHEDULED_AT,
        "RAFTSCHED_NODE": "node-a",
        "RAFTSCHED_SHARD": "2",
        "RAFTSCHED_SHARDS": "5",
    }
    assert identity_headers(CTX)["X-Raftsched-Scheduled-At"] == SCHEDULED_AT
    assert len(identity_headers(CTX)) == 7
    assert identity_context(CTX) == {
        "job_id": "job-1",
        "run_id": CTX.run_id,
        "attempt": 3,
        "scheduled_at": SCHEDULED_AT,
        "node": "node-a",
        "shard": 2,
        "shards": 5,
    }


async def test_executor_for_and_close() -> None:
    kinds = {TaskType.SHELL: ShellExecutor, TaskType.HTTP: HttpExecutor, "python": PythonExecutor}
    for kind, cls in kinds.items():
        executor = executor_for(kind, ExecPolicy())
        assert isinstance(executor, cls)
        await executor.close()
        await executor.close()
    with pytest.raises(ValueError):
        executor_for("ftp", ExecPolicy())


def test_output_sink_keeps_a_bounded_tail(tmp_path: Path) -> None:
    with OutputSink(4, tmp_path / "out") as sink:
        for chunk in (b"ab", b"cdef", b"g"):
            sink.write(chunk)
        assert sink.tail_text() == "defg"
        assert sink.total_bytes == 7
    assert (tmp_path / "out").read_bytes() == b"abcdefg"
    with OutputSink(0, None) as sink:
        sink.write(b"abc")
        assert sink.tail_text() == ""
    with OutputSink(2, None) as sink:
        sink.write("é".encode()[1:] + b"z")  # a cut character is replaced, not an error
        assert sink.tail_text() == "\ufffdz"


def test_output_sink_writes_a_file_only_when_the_tail_cannot_stand_for_the_output(tmp_path: Path) -> None:
    small = tmp_path / "out" / "small"
    with OutputSink(64, small) as sink:
        sink.write(b"200 OK")
        assert sink.so_far() == b"200 OK"
    assert not small.exists() and sink.file_bytes is None and sink.tail_text() == "200 OK"
    sink.keep()  # on demand, after the run (one that did not succeed): the directory is created
    assert small.read_bytes() == b"200 OK" and sink.file_bytes == 6
    big = tmp_path / "out" / "big"
    with OutputSink(8, big) as sink:
        sink.write(b"12345678")
        assert not big.exists()
        sink.write(b"9")  # outgrows the tail: the file gets everything so far
        assert big.read_bytes() == b"123456789" and sink.so_far() is None
        sink.write(b"0")
    assert big.read_bytes() == b"1234567890" and sink.file_bytes == 10


def test_output_sink_file_errors_keep_the_tail_and_never_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with OutputSink(2, blocker / "out") as sink:  # its directory is a file
        sink.write(b"abc")
    assert sink.tail_text() == "bc" and sink.file_bytes is None


def test_output_sink_stops_the_file_at_max_bytes_with_a_marker_and_keeps_the_last_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out"
    with OutputSink(4, path, max_bytes=10) as sink:
        sink.write(b"0123456")
        sink.write(b"789abc")  # past the cap: cut, marked, closed
        size = path.stat().st_size
        sink.write(b"more and more output")  # the file no longer grows; the tail goes on
        assert path.stat().st_size == size
    assert path.read_bytes() == b"0123456789" + truncation_marker(10)
    assert truncation_marker(10) == b"\n[raftsched: output truncated at 10 bytes]\n"
    assert sink.tail_text() == "tput" and sink.truncated
    assert sink.file_bytes == size and sink.total_bytes == 33


def test_output_sink_cut_keeps_whole_characters(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with OutputSink(2, path, max_bytes=4) as sink:
        sink.write("abcéé".encode())  # the cap falls inside the first é
    assert path.read_bytes() == b"abc" + truncation_marker(3)
    assert sink.truncated


def test_output_sink_at_exactly_max_bytes_is_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with OutputSink(2, path, max_bytes=6) as sink:
        sink.write(b"abcdef")
    assert path.read_bytes() == b"abcdef" and not sink.truncated


def test_output_sink_max_bytes_zero_keeps_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with OutputSink(4, path, max_bytes=0) as sink:
        sink.write(b"abcdefgh")
    sink.keep()
    assert not path.exists() and sink.tail_text() == "efgh" and sink.truncated
    with OutputSink(16, path, max_bytes=0) as small:
        small.write(b"abc")
    assert not small.truncated  # the tail is the whole output


async def test_shell_output_past_the_policys_max_bytes_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    executor = ShellExecutor(ExecPolicy(output_tail_bytes=16, output_max_bytes=1000))
    script = "import sys; sys.stdout.write('y' * 100000 + 'LAST')"
    result = await executor.run(shell(sys.executable, "-c", script), CTX, timeout_s=10, output_path=path)
    assert result.outcome == "succeeded" and result.output_tail.endswith("yLAST")
    assert path.read_bytes() == b"y" * 1000 + truncation_marker(1000)


@pytest.mark.parametrize(
    ("module", "allow", "allowed"),
    [
        ("myjobs.reports", ("myjobs.",), True),
        ("myjobs", ("myjobs.",), False),
        ("myjobs", ("myjobs",), True),
        ("myjobs.reports.daily", ("myjobs",), True),
        ("myjobsevil", ("myjobs",), False),
        ("myjobsevil", ("myjobs.",), False),
        ("other", ("myjobs", "other"), True),
        ("anything", ("",), False),
        ("anything", (), False),
    ],
)
def test_python_allow_prefixes(module: str, allow: tuple[str, ...], allowed: bool) -> None:
    assert module_allowed(module, allow) is allowed


@pytest.mark.parametrize(
    ("address", "allow", "refused"),
    [
        ("127.0.0.1", (), True),
        ("127.0.0.1", LOOPBACK, False),
        ("10.0.0.1", (), True),
        ("10.0.0.1", (ip_network("10.0.0.0/8"),), False),
        ("172.16.0.1", (), True),
        ("192.168.1.1", (), True),
        ("169.254.169.254", (), True),
        ("100.64.0.1", (), True),
        ("0.0.0.0", (), True),
        ("224.0.0.1", (), True),
        ("240.0.0.1", (), True),
        ("255.255.255.255", (), True),
        ("::1", (), True),
        ("::1", LOOPBACK, True),
        ("::", (), True),
        ("fe80::1", (), True),
        ("fc00::1", (), True),
        ("fec0::1", (), True),
        ("ff02::1", (), True),
        ("::ffff:127.0.0.1", (), True),
        ("::ffff:127.0.0.1", LOOPBACK, False),
        ("::ffff:10.0.0.1", (), True),
        ("2002:a00:1::", (), True),  # 6to4 of 10.0.0.1
        ("64:ff9b::a9fe:a9fe", (), True),  # NAT64 of 169.254.169.254
        ("8.8.8.8", (), False),
        ("::ffff:8.8.8.8", (), False),
        ("2606:4700:4700::1111", (), False),
    ],
)
def test_http_address_policy(address: str, allow: tuple[IPv4Network, ...], refused: bool) -> None:
    reason = refusal(ip_address(address), allow)
    assert (reason is not None) is refused, reason


# ---------------------------------------------------------------- shell


async def test_shell_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    executor = ShellExecutor(ExecPolicy(allow_shell=True))
    task = TaskSpec(type=TaskType.SHELL, command="sleep 60 & echo $! > childpid; wait", cwd=str(tmp_path))
    result = await executor.run(task, CTX, timeout_s=0.7, output_path=None)
    assert result.outcome == "timed_out"
    assert await wait_dead(int((tmp_path / "childpid").read_text()))


async def test_shell_leftovers_are_stopped_when_the_task_exits(tmp_path: Path) -> None:
    """A background process would hold the output pipe (and outlive its run): it is stopped."""
    executor = ShellExecutor(ExecPolicy(kill_grace_s=1.0))
    task = shell("sh", "-c", "sleep 60 & echo $! > childpid; echo done", cwd=str(tmp_path))
    started = time.monotonic()
    result = await executor.run(task, CTX, timeout_s=10, output_path=None)
    assert result.outcome == "succeeded"
    assert result.output_tail == "done\n"
    assert time.monotonic() - started < 3
    assert await wait_dead(int((tmp_path / "childpid").read_text()))


async def test_shell_term_ignored_gets_kill_after_grace(tmp_path: Path) -> None:
    executor = ShellExecutor(ExecPolicy(kill_grace_s=0.4))
    task = shell("sh", "-c", "trap '' TERM; echo $$ > pid; sleep 60", cwd=str(tmp_path))
    started = time.monotonic()
    result = await executor.run(task, CTX, timeout_s=0.3, output_path=None)
    elapsed = time.monotonic() - started
    assert result.outcome == "timed_out"
    assert 0.6 < elapsed < 3
    assert await wait_dead(int((tmp_path / "pid").read_text()))


async def test_shell_string_refused_without_allow_shell(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    task = TaskSpec(type=TaskType.SHELL, command=f"touch {marker}")
    result = await ShellExecutor(ExecPolicy()).run(task, CTX, timeout_s=5, output_path=None)
    assert result.outcome == "failed"
    assert result.error is not None and "allow_shell is false" in result.error
    assert not marker.exists()
    allowed = await ShellExecutor(ExecPolicy(allow_shell=True)).run(task, CTX, timeout_s=5, output_path=None)
    assert allowed.outcome == "succeeded"
    assert marker.exists()


async def test_shell_argv_is_not_interpreted() -> None:
    result = await ShellExecutor(ExecPolicy()).run(
        shell("echo", "$HOME; rm -rf x"), CTX, timeout_s=5, output_path=None
    )
    assert result.output_tail == "$HOME; rm -rf x\n"


async def test_shell_env_is_scrubbed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTSCHED_TEST_SECRET", "s3cret")
    task = shell("env", env={"MINE": "1", "RAFTSCHED_RUN_ID": "forged"})
    result = await ShellExecutor(ExecPolicy(output_tail_bytes=65536)).run(
        task, CTX, timeout_s=5, output_path=None
    )
    seen = dict(line.split("=", 1) for line in result.output_tail.splitlines())
    assert "RAFTSCHED_TEST_SECRET" not in seen
    assert seen["MINE"] == "1"
    assert seen["RAFTSCHED_RUN_ID"] == CTX.run_id  # identity wins over the task's env
    assert seen["PATH"]
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "MINE", "PWD", "SHLVL", "_"}
    assert set(seen) - allowed == set(identity_env(CTX))


async def test_shell_exit_by_signal_and_start_errors(tmp_path: Path) -> None:
    executor = ShellExecutor(ExecPolicy())
    killed = await executor.run(shell("sh", "-c", "kill -KILL $$"), CTX, timeout_s=5, output_path=None)
    assert killed == ExecResult(outcome="failed", error="killed by signal 9 (SIGKILL)")
    missing = await executor.run(shell(str(tmp_path / "nope")), CTX, timeout_s=5, output_path=None)
    assert missing.outcome == "failed"
    assert missing.error is not None and missing.error.startswith("cannot start")
    where = await executor.run(shell("pwd", cwd=str(tmp_path)), CTX, timeout_s=5, output_path=None)
    assert where.output_tail.strip() == str(tmp_path)


# ---------------------------------------------------------------- http


async def test_http_redirect_is_not_followed(http_sink: Sink) -> None:
    executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK))
    try:
        result = await executor.run(http(http_sink.url("/redirect")), CTX, timeout_s=5, output_path=None)
        assert result == ExecResult(outcome="failed", http_status=302, error="unexpected status 302")
        task = http(http_sink.url("/redirect"), expect_status=[(302, 302)])
        result = await executor.run(task, CTX, timeout_s=5, output_path=None)
        assert result.outcome == "succeeded" and result.http_status == 302
    finally:
        await executor.close()
    assert http_sink.hits == ["/redirect", "/redirect"]


@pytest.fixture
async def no_connections(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Any attempt to open a socket connection fails the test."""

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a connection was attempted: {args}")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "sock_connect", forbidden)
    monkeypatch.setattr(loop, "create_connection", forbidden)
    yield


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/ok",
        "http://localhost:{port}/ok",
        "http://[::1]:{port}/ok",
        "http://[::ffff:127.0.0.1]:{port}/ok",
        "http://127.1:{port}/ok",
        "http://0.0.0.0:{port}/ok",
        "http://10.0.0.1/",
        "https://169.254.169.254/latest/meta-data/",
        "http://[fe80::1]/",
    ],
)
async def test_http_private_targets_refused_before_connecting(
    target: str, http_sink: Sink, no_connections: None
) -> None:
    executor = HttpExecutor(ExecPolicy())
    try:
        task = http(target.format(port=http_sink.server.port))
        result = await executor.run(task, CTX, timeout_s=5, output_path=None)
    finally:
        await executor.close()
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("refused: "), result.error
    assert result.http_status is None
    assert http_sink.hits == []


async def test_http_localhost_allowed_by_http_allow(http_sink: Sink) -> None:
    executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK))
    try:
        result = await executor.run(
            http(http_sink.url("/ok", host="localhost")), CTX, timeout_s=5, output_path=None
        )
    finally:
        await executor.close()
    assert result.outcome == "succeeded", result
    assert result.output_tail == "hello"


async def test_http_only_http_and_https() -> None:
    executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK))
    result = await executor.run(http("ftp://127.0.0.1/file"), CTX, timeout_s=5, output_path=None)
    assert result.outcome == "failed" and result.error is not None and "only http and https" in result.error
    await executor.close()


async def test_http_identity_headers_cannot_be_overridden(http_sink: Sink) -> None:
    task = http(
        http_sink.url("/headers"),
        headers={
            "x-raftsched-run-id": "forged",
            "X-RAFTSCHED-NODE": "evil",
            "X-Raftsched-Extra": "x",
            "X-Mine": "1",
        },
    )
    executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK, output_tail_bytes=65536))
    try:
        result = await executor.run(task, CTX, timeout_s=5, output_path=None)
    finally:
        await executor.close()
    seen = {k.lower(): v for k, v in orjson.loads(result.output_tail).items()}
    assert seen["x-raftsched-run-id"] == CTX.run_id
    assert seen["x-raftsched-node"] == "node-a"
    assert "x-raftsched-extra" not in seen
    assert seen["x-mine"] == "1"


@pytest.mark.parametrize(
    ("body", "content_type", "sent"),
    [
        ({"a": [1, 2], "b": None}, "application/json", '{"a":[1,2],"b":null}'),
        ([1, "two"], "application/json", '[1,"two"]'),
        (False, "application/json", "false"),
        ("plain {not json}", "text/plain; charset=utf-8", "plain {not json}"),
    ],
)
async def test_http_body(http_sink: Sink, body: Any, content_type: str, sent: str) -> None:
    task = http(http_sink.url("/echo"), method="POST", body=body)
    executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK))
    try:
        result = await executor.run(task, CTX, timeout_s=5, output_path=None)
    finally:
        await executor.close()
    assert orjson.loads(result.output_tail) == {"content_type": content_type, "body": sent}


async def test_http_connection_error_is_a_failure() -> None:
    with socket_closed_port() as port:
        executor = HttpExecutor(ExecPolicy(http_allow=LOOPBACK))
        try:
            result = await executor.run(http(f"http://127.0.0.1:{port}/"), CTX, timeout_s=5, output_path=None)
        finally:
            await executor.close()
    assert result.outcome == "failed"
    assert result.error is not None and result.error.startswith("ClientConnectorError")


class socket_closed_port:  # noqa: N801 - used as a context manager
    """A 127.0.0.1 port that nothing listens on (bound, never listening)."""

    def __enter__(self) -> int:
        import socket

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        port: int = self._sock.getsockname()[1]
        return port

    def __exit__(self, *exc: object) -> None:
        self._sock.close()


# ---------------------------------------------------------------- python


def returned(result: ExecResult) -> Any:
    line = next(line for line in result.output_tail.splitlines() if line.startswith("[raftsched] returned: "))
    return orjson.loads(line.removeprefix("[raftsched] returned: "))


async def run_python(task: TaskSpec, policy: ExecPolicy = POLICY, timeout_s: float = 10) -> ExecResult:
    executor = PythonExecutor(policy)
    try:
        return await executor.run(task, CTX, timeout_s=timeout_s, output_path=None)
    finally:
        await executor.close()


@pytest.mark.parametrize(
    ("allow", "target", "error"),
    [
        (("otherjobs",), "hello", "module 'pytasks_sample' is not under this node's python_allow"),
        (("pytasks",), "hello", "module 'pytasks_sample' is not under this node's python_allow"),
        ((), "hello", "module 'pytasks_sample' is not under this node's python_allow"),
        ((SAMPLE,), "run", "pytasks_sample:run is defined in 'subprocess', which is not under python_allow"),
        ((SAMPLE,), "missing", "AttributeError: module 'pytasks_sample' has no attribute 'missing'"),
    ],
)
async def test_python_allow_list(allow: tuple[str, ...], target: str, error: str) -> None:
    result = await run_python(python(target), ExecPolicy(python_allow=allow))
    assert result.outcome == "failed"
    assert result.error is not None and result.error.endswith(error), result.error


async def test_python_allowed_by_package_prefix() -> None:
    result = await run_python(
        python("hello", kwargs={"name": "you"}), ExecPolicy(python_allow=("pytasks_sample.",))
    )
    assert result.outcome == "failed"  # "x." allows modules under x, not x itself
    result = await run_python(python("hello", kwargs={"name": "you"}))
    assert result == ExecResult(
        outcome="succeeded", exit_code=0, output_tail='hello you\n[raftsched] returned: {"greeted":"you"}\n'
    )


async def test_python_exception_is_reported() -> None:
    result = await run_python(python("fail"))
    assert result.outcome == "failed"
    assert result.error == "ValueError: boom"
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.output_tail
    assert 'raise ValueError("boom")' in result.output_tail
    assert "_pycall" not in result.output_tail  # the runner's own frames are left out
    assert "Warning" not in result.output_tail


async def test_python_async_function() -> None:
    result = await run_python(python("async_hello"))
    assert result.outcome == "succeeded", result
    assert "async hello" in result.output_tail
    assert returned(result) == "done"


async def test_python_return_value_not_json_is_repr() -> None:
    result = await run_python(python("unjsonable"))
    assert "[raftsched] returned: {1, 2}" in result.output_tail


async def test_python_timeout_kills_the_child_and_its_children(tmp_path: Path) -> None:
    pidfile, childfile = tmp_path / "pid", tmp_path / "child"
    task = python("spawn_and_sleep", kwargs={"pidfile": str(pidfile), "childfile": str(childfile)})
    result = await run_python(task, timeout_s=2.5)
    assert result.outcome == "timed_out"
    assert await wait_dead(int(pidfile.read_text()))
    assert await wait_dead(int(childfile.read_text()))


async def test_python_gets_context() -> None:
    expected = identity_context(CTX)
    assert returned(await run_python(python("identity"))) == expected
    kwargs = returned(await run_python(python("identity_kwargs", kwargs={"a": 1})))
    assert kwargs == {"a": 1, "context": expected}
    assert returned(await run_python(python("no_context", kwargs={"x": 7}))) == 7


async def test_python_env_scrubbed_and_loader_vars_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTSCHED_TEST_SECRET", "s3cret")
    policy = ExecPolicy(python_allow=(SAMPLE,), output_tail_bytes=1 << 20)
    env = returned(await run_python(python("environment", env={"MINE": "1"}), policy))
    assert "RAFTSCHED_TEST_SECRET" not in env
    assert env["MINE"] == "1"
    assert env["RAFTSCHED_NODE"] == "node-a"
    assert str(Path(__file__).parent) in env["PYTHONPATH"].split(os.pathsep)
    refused = await run_python(python("hello", env={"PYTHONPATH": "/tmp/elsewhere"}))
    assert refused.outcome == "failed"
    assert refused.error is not None and "may not set PYTHONPATH" in refused.error


async def test_python_in_process() -> None:
    ok = await run_python(python("identity", in_process=True))
    assert ok.outcome == "succeeded"
    assert returned(ok) == identity_context(CTX)
    failed = await run_python(python("fail", in_process=True))
    assert failed.outcome == "failed" and failed.error == "ValueError: boom"
    assert "Traceback" in failed.output_tail
    started = time.monotonic()
    slow = await run_python(python("sleep", kwargs={"seconds": 1.0}, in_process=True), timeout_s=0.2)
    assert slow.outcome == "timed_out"
    assert slow.error is not None and "cannot be stopped" in slow.error
    assert time.monotonic() - started < 0.8
    with_env = await run_python(python("hello", env={"A": "1"}, in_process=True))
    assert (
        with_env.outcome == "failed"
        and with_env.error is not None
        and "env is not supported" in with_env.error
    )


@pytest.mark.parametrize("error", [None, "short", "é" * 5000, "\x00" * 5000])
def test_python_outcome_always_fits_the_pipe(error: str | None) -> None:
    data = encode_outcome(Report(ok=error is None, error=error))
    assert len(data) <= RESULT_MAX
    assert orjson.loads(data)["ok"] is (error is None)


def test_python_runner_does_not_import_aiohttp() -> None:
    """Every python run starts a child: it must not pay for the http executor's imports."""
    code = "import sys, raftsched.executors._pyrunner; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "False"
