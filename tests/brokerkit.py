"""Real message brokers from Debian's packages, each on free loopback ports, stopped by PID.

    with redis_server(tmp) as redis: ...   # redis.url == "redis://127.0.0.1:PORT/0"

Each helper skips the test when its server is not installed (`scripts/install-brokers` installs
them all; CI runs it). A server is started in its own process group and stopped by its PID:
SIGTERM, then SIGKILL after a grace. RabbitMQ also needs an Erlang port mapper: the kit starts
its own `epmd` on a free port (`ERL_EPMD_PORT`) and stops that one too, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cluster import free_ports

__all__ = ["Broker", "mosquitto_server", "nats_server", "rabbitmq_server", "redis_server"]

RABBITMQ_BIN = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_BOOT_S = 90.0  # it takes ~20 s on an idle machine; a loaded CI machine needs more


@dataclass
class Broker:
    """A running server: its URL for raftsched's `[broker]` sections, and how to stop/start it."""

    kind: str
    url: str
    port: int
    argv: list[str]
    env: dict[str, str]
    log: Path
    user: str | None = None
    cwd: str | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.procs.append(
                subprocess.Popen(
                    self.argv,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                    user=self.user,
                    cwd=self.cwd,
                )
            )

    def stop(self) -> None:
        """Stop the server (not its helpers such as epmd): a test may start it again."""
        if self.procs:
            _stop(self.procs.pop())

    def wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            proc = self.procs[-1]
            if proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited ({proc.returncode}): {self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.1)
        raise TimeoutError(f"{self.kind} not listening on {self.port} after {timeout_s}s: {self.tail()}")

    def tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    with contextlib.suppress(ProcessLookupError):  # whatever it left in its group
        os.killpg(proc.pid, signal.SIGKILL)


def _need(program: str) -> str:
    import pytest

    path = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        pytest.skip(f"{program} is not installed: run scripts/install-brokers (as root)")
    return path


@contextlib.contextmanager
def _running(broker: Broker, boot_s: float = 15.0) -> Iterator[Broker]:
    try:
        broker.start()
        broker.wait_listening(boot_s)
        yield broker
    finally:
        while broker.procs:
            broker.stop()


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", os.defpath), "LANG": "C.UTF-8", "HOME": "/tmp"}


@contextlib.contextmanager
def redis_server(root: Path) -> Iterator[Broker]:
    program = _need("redis-server")
    (port,) = free_ports(1)
    data = root / f"redis-{port}"
    data.mkdir(parents=True)
    argv = [program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(data), "--daemonize", "no"]
    broker = Broker("redis", f"redis://127.0.0.1:{port}/0", port, argv, _env(), data / "log")
    with _running(broker) as running:
        yield running


@contextlib.contextmanager
def mosquitto_server(root: Path) -> Iterator[Broker]:
    program = _need("mosquitto")
    (port,) = free_ports(1)
    data = root / f"mosquitto-{port}"
    data.mkdir(parents=True)
    conf = data / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    broker = Broker(
        "mqtt", f"mqtt://127.0.0.1:{port}", port, [program, "-c", str(conf)], _env(), data / "log"
    )
    with _running(broker) as running:
        yield running


@contextlib.contextmanager
def nats_server(root: Path) -> Iterator[Broker]:
    program = _need("nats-server")
    (port,) = free_ports(1)
    data = root / f"nats-{port}"
    data.mkdir(parents=True)
    argv = [program, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(data / "js")]
    broker = Broker("nats", f"nats://127.0.0.1:{port}", port, argv, _env(), data / "log")
    with _running(broker) as running:
        yield running


@contextlib.contextmanager
def rabbitmq_server(root: Path) -> Iterator[Broker]:
    """RabbitMQ as its own user (it refuses to run as root), in directories that user owns."""
    _need("rabbitmq-server")
    program = RABBITMQ_BIN  # the Debian wrapper would log to /var/log/rabbitmq; this logs to ours
    epmd_program = _need("epmd")
    port, dist_port, epmd_port = free_ports(3)
    # Its own user must reach its directories: a pytest tmp_path (0700, root's) is out of reach.
    base = Path(tempfile.mkdtemp(prefix="raftsched-rabbitmq-"))
    base.chmod(0o711)
    data = base / "data"
    for sub in ("mnesia", "log"):
        (data / sub).mkdir(parents=True)
    user = pwd.getpwnam("rabbitmq")
    for path in (data, data / "mnesia", data / "log"):
        os.chown(path, user.pw_uid, user.pw_gid)
    conf = data / "rabbitmq.conf"
    conf.write_text(f"listeners.tcp.1 = 127.0.0.1:{port}\nloopback_users = none\n")
    os.chown(conf, user.pw_uid, user.pw_gid)
    env = {
        **_env(),
        "HOME": user.pw_dir,
        "ERL_EPMD_PORT": str(epmd_port),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": f"rabbit-test-{port}@localhost",
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(dist_port),
        "RABBITMQ_MNESIA_BASE": str(data / "mnesia"),
        "RABBITMQ_LOG_BASE": str(data / "log"),
        "RABBITMQ_CONFIG_FILE": str(conf.with_suffix("")),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(data / "enabled_plugins"),
    }
    epmd = Broker(
        "epmd",
        "",
        epmd_port,
        [epmd_program, "-port", str(epmd_port), "-address", "127.0.0.1"],
        env,
        data / "epmd.log",
        user="rabbitmq",
    )
    broker = Broker(
        "amqp",
        f"amqp://guest:guest@127.0.0.1:{port}/",
        port,
        [program],
        env,
        data / "rabbitmq.log",
        user="rabbitmq",
        cwd=user.pw_dir,
    )
    try:
        with _running(epmd), _running(broker, RABBITMQ_BOOT_S) as running:
            yield running
    finally:
        shutil.rmtree(base, ignore_errors=True)
