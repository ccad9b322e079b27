"""The Raft port's guard (raftguard.py), driven on real loopback sockets and PySyncObj's poller.

A plain PySyncObj `TcpConnection` plays the honest peer (its frames are PySyncObj's own: pickled,
compressed, Fernet-encrypted); raw sockets play the attacker. Nothing runs a tick thread: the
tests poll.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from pysyncobj import SyncObjConf
from pysyncobj import pickle as pysyncobj_pickle
from pysyncobj.encryptor import getEncryptor
from pysyncobj.node import TCPNode
from pysyncobj.poller import createPoller
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

from raftsched.commands import CommandType, encode
from raftsched.config import raft_frame_bytes_needed
from raftsched.model import JobSpec
from raftsched.raftguard import (
    UNAUTHENTICATED_FRAME_BYTES,
    GuardedConnection,
    GuardedTransport,
    GuardSettings,
    Reason,
    Rejections,
)

SECRET = "raftguard-test-secret-" + "k" * 24
ENCRYPTOR = getEncryptor(SECRET)
PEER = "127.0.0.9:9"  # the honest peer's Raft address (never dialled: it sorts after the node's)
MAX_FRAME = 1 << 20


def pump(poller: Any, until: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, "timed out"
        poller.poll(0.01)


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the other side closed `sock` (EOF or reset); False while it is open and silent."""
    try:
        return sock.recv(4096) == b""
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


class Watcher:
    def __init__(self) -> None:
        self.refused: list[tuple[Reason, str]] = []
        self.authenticated: list[GuardedConnection] = []

    def connection_refused(self, conn: GuardedConnection, reason: Reason, detail: str) -> None:
        self.refused.append((reason, detail))

    def connection_authenticated(self, conn: GuardedConnection) -> None:
        self.authenticated.append(conn)


@pytest.fixture
def poller() -> Any:
    return createPoller("auto")


@pytest.fixture
def pair(poller: Any) -> Iterator[tuple[socket.socket, GuardedConnection, Watcher]]:
    """(client socket, the node's guarded end of it, its watcher) over loopback TCP."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    accepted.setblocking(False)
    watcher = Watcher()
    conn = GuardedConnection(
        poller=poller,
        socket=accepted,
        timeout=30.0,
        watcher=watcher,
        settings=GuardSettings(max_frame_bytes=MAX_FRAME),
    )
    conn.encryptor = ENCRYPTOR
    conn.setOnMessageReceivedCallback(lambda message: None)
    yield client, conn, watcher
    conn.disconnect()
    client.close()


def honest_peer(client: socket.socket, poller: Any) -> TcpConnection:
    client.setblocking(False)
    peer = TcpConnection(poller=poller, socket=client, timeout=30.0)
    peer.encryptor = ENCRYPTOR
    return peer


def handshake(
    peer: TcpConnection, conn: GuardedConnection, poller: Any, key: bytes | None = None
) -> list[Any]:
    """PySyncObj's key exchange, as the dialling peer and the accepting node run it."""
    got: list[Any] = []
    conn.setOnMessageReceivedCallback(got.append)
    peer.send(os.urandom(32))  # the peer's key, for the node to wrap its frames in
    pump(poller, lambda: got or conn.state == CONNECTION_STATE.DISCONNECTED)
    conn.sendRandKey, conn.recvRandKey = got[0], os.urandom(32)
    peer.sendRandKey = key or conn.recvRandKey  # the node's key, which the node's reply carries
    peer.send(PEER)
    pump(poller, lambda: len(got) == 2 or conn.state == CONNECTION_STATE.DISCONNECTED)
    return got


# ---------------------------------------------------------------- one connection's frames


@pytest.mark.parametrize(
    ("length", "reason"),
    [
        (0x7FFFFFFF, Reason.FRAME_TOO_LARGE),
        (UNAUTHENTICATED_FRAME_BYTES + 1, Reason.FRAME_TOO_LARGE),
        (-5, Reason.BAD_FRAME),
    ],
)
def test_a_bad_frame_length_closes_an_unauthenticated_connection_at_its_header(
    pair: tuple[socket.socket, GuardedConnection, Watcher], poller: Any, length: int, reason: Reason
) -> None:
    client, conn, watcher = pair
    client.sendall(struct.pack("i", length))  # the header alone: nothing of the frame is waited for
    pump(poller, lambda: conn.state == CONNECTION_STATE.DISCONNECTED)
    assert [r for r, _ in watcher.refused] == [reason] and not conn._frames
    client.settimeout(5)
    assert closed_by_peer(client)


def test_an_unauthenticated_connection_reads_no_further_than_one_frame(
    pair: tuple[socket.socket, GuardedConnection, Watcher], poller: Any
) -> None:
    client, conn, watcher = pair
    client.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        client.send(struct.pack("i", 1000) + os.urandom(1000) + os.urandom(400_000))
    time.sleep(0.05)
    conn._TcpConnection__tryReadBuffer()  # the read half of one poll event, without the decoding
    assert len(conn._frames) <= 4 + 1000 + 2**13 and conn.state == CONNECTION_STATE.CONNECTED
    pump(poller, lambda: conn.state == CONNECTION_STATE.DISCONNECTED)  # the frame does not decrypt
    assert [r for r, _ in watcher.refused] == [Reason.BAD_FRAME]


def test_after_the_handshake_frames_may_reach_the_configured_limit(
    pair: tuple[socket.socket, GuardedConnection, Watcher], poller: Any
) -> None:
    client, conn, watcher = pair
    peer = honest_peer(client, poller)
    got = handshake(peer, conn, poller)
    assert got[1] == PEER and conn.authenticated and watcher.authenticated == [conn]
    big = os.urandom(400_000)  # incompressible: a frame over the unauthenticated limit, under MAX_FRAME
    peer.send(big)
    pump(poller, lambda: len(got) == 3)
    assert got[2] == big and isinstance(conn._frames, bytearray) and not conn._TcpConnection__readBuffer
    peer.send(os.urandom(MAX_FRAME))  # base64 makes it 4/3 of that: over the limit
    pump(poller, lambda: conn.state == CONNECTION_STATE.DISCONNECTED)
    assert watcher.refused[0][0] is Reason.FRAME_TOO_LARGE and "authenticated limit" in watcher.refused[0][1]


def test_a_handshake_with_the_wrong_key_does_not_authenticate(
    pair: tuple[socket.socket, GuardedConnection, Watcher], poller: Any
) -> None:
    client, conn, watcher = pair
    handshake(honest_peer(client, poller), conn, poller, key=os.urandom(32))  # e.g. a replayed frame
    assert conn.state == CONNECTION_STATE.DISCONNECTED and not watcher.authenticated
    assert [r for r, _ in watcher.refused] == [Reason.BAD_FRAME]


# ---------------------------------------------------------------- the transport: waiting connections


class FakeSync:
    """What PySyncObj's TCPTransport reads from its SyncObj."""

    def __init__(self) -> None:
        with socket.create_server(("127.0.0.1", 0)) as probe:
            self.addr = f"127.0.0.1:{probe.getsockname()[1]}"
        self.conf = SyncObjConf(bindAddress=self.addr)
        self._poller = createPoller("auto")
        self.encryptor = ENCRYPTOR

    def addOnTickCallback(self, callback: Callable[[], None]) -> None:  # noqa: N802 - PySyncObj's name
        pass


@pytest.fixture
def node() -> Iterator[tuple[GuardedTransport, FakeSync]]:
    sync = FakeSync()
    guard = GuardSettings(max_frame_bytes=MAX_FRAME, max_unauthenticated=3, auth_timeout_s=0.3)
    transport = GuardedTransport(sync, TCPNode(sync.addr), [TCPNode(PEER)], guard=guard)
    transport.tryGetReady()
    assert transport.ready
    yield transport, sync
    transport.destroy()


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def dial(sync: FakeSync, transport: GuardedTransport, clients: list[socket.socket]) -> socket.socket:
    """Open a connection to the node and poll until the node has accepted it."""
    host, port = sync.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)))
    sock.setblocking(False)
    clients.append(sock)
    name = "{}:{}".format(*sock.getsockname())
    pump(sync._poller, lambda: any(c.peer == name for c in transport._waiting))
    return sock


def test_connections_that_do_not_authenticate_in_time_are_closed(
    node: tuple[GuardedTransport, FakeSync], clients: list[socket.socket]
) -> None:
    transport, sync = node
    socks = [dial(sync, transport, clients) for _ in range(2)]
    assert len(transport._waiting) == 2 and not any(closed_by_peer(s) for s in socks)

    def ticked_out() -> bool:
        transport._onTick()
        return all(closed_by_peer(s) for s in socks)

    pump(sync._poller, ticked_out)
    assert transport.rejections.counts()[Reason.AUTH_TIMEOUT] == 2 and not transport._waiting


def test_beyond_the_cap_the_oldest_waiting_connection_is_closed(
    node: tuple[GuardedTransport, FakeSync], clients: list[socket.socket]
) -> None:
    transport, sync = node
    socks = [dial(sync, transport, clients) for _ in range(5)]
    pump(sync._poller, lambda: closed_by_peer(socks[0]) and closed_by_peer(socks[1]))
    assert not any(closed_by_peer(s) for s in socks[2:]) and len(transport._waiting) == 3
    assert transport.rejections.counts()[Reason.TOO_MANY_UNAUTHENTICATED] == 2


def test_a_peer_that_completes_the_handshake_is_connected_and_not_timed_out(
    node: tuple[GuardedTransport, FakeSync],
) -> None:
    transport, sync = node
    poller = sync._poller
    peer = TcpConnection(poller=poller, timeout=30.0)
    peer.encryptor = ENCRYPTOR
    replies: list[Any] = []

    def connected() -> None:  # as PySyncObj's dialling side does (TCPTransport._onOutgoingConnected)
        peer.recvRandKey = os.urandom(32)
        peer.send(peer.recvRandKey)

    def received(message: Any) -> None:  # ... and _onOutgoingMessageReceived
        if not replies:
            peer.sendRandKey = message
            peer.send(PEER)
        replies.append(message)

    peer.setOnConnectedCallback(connected)
    peer.setOnMessageReceivedCallback(received)
    host, port = sync.addr.rsplit(":", 1)
    assert peer.connect(host, int(port))
    by_addr = {node.address: node for node in transport._nodes}
    pump(poller, lambda: by_addr[PEER] in transport._connections)
    conn = transport._connections[by_addr[PEER]]
    assert isinstance(conn, GuardedConnection) and conn.authenticated and not transport._waiting
    transport.expire_unauthenticated(time.monotonic() + 60)
    assert conn.state == CONNECTION_STATE.CONNECTED
    peer.disconnect()


# ---------------------------------------------------------------- logging and counting


def test_refusals_are_counted_and_logged_at_most_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    rejections = Rejections(period_s=10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="raftsched.raftguard"):
        rejections.reject(Reason.FRAME_TOO_LARGE, "127.0.0.1:5000", "2147483647 bytes announced")
        for _ in range(5):
            rejections.reject(Reason.AUTH_TIMEOUT, "127.0.0.1:5001", "not authenticated within 5 s")
        rejections.flush()
        assert len(caplog.records) == 1 and caplog.records[0].reason == "frame_too_large"  # type: ignore[attr-defined]
        now[0] += 10.0
        rejections.flush()
        rejections.flush()
    assert len(caplog.records) == 2 and "5 more" in caplog.records[1].getMessage()
    assert caplog.records[1].suppressed == 5  # type: ignore[attr-defined]
    assert rejections.counts() == {
        "frame_too_large": 1,
        "bad_frame": 0,
        "auth_timeout": 5,
        "too_many_unauthenticated": 0,
    }


# ---------------------------------------------------------------- the configured limit fits the largest write


def _frame_bytes(command: bytes) -> int:
    """The AppendEntries frame that carries `command` behind a full batch of other entries."""
    entry = pysyncobj_pickle.dumps((0, (command,), {}))
    neighbours = [(os.urandom(1000), i, 1) for i in range(64)]
    message = {
        "type": "append_entries",
        "term": 1,
        "commit_index": 1,
        "entries": [*neighbours, (entry, 65, 1)],
    }
    return 4 + len(ENCRYPTOR.encrypt_at_time(zlib.compress(pysyncobj_pickle.dumps(message), 3), 1))


def _restore(specs: list[dict[str, Any]]) -> tuple[int, bytes]:
    body = orjson.dumps({"format": "raftsched-backup", "version": 1, "jobs": [{"spec": s} for s in specs]})
    jobs = [
        {"spec": JobSpec.from_dict(s).to_dict(), "created_ms": 1, "last_slot_ms": None, "next_nominal_ms": 2}
        for s in specs
    ]
    return len(body), encode(
        CommandType.RESTORE_JOBS, {"jobs": jobs, "now_ms": 1, "actor": "a"}, rid="r" * 32
    )


def test_the_largest_write_fits_the_frame_bound_config_checks() -> None:
    tiny = [
        {"id": f"{i:x}", "schedule": {"every": 1}, "task": {"type": "shell", "command": "x"}}
        for i in range(12_000)
    ]
    text = "".join(chr(0x4E00 + (i * 7919) % 20000) for i in range(4096))  # 3 UTF-8 bytes each
    wide = [dict(tiny[i], description=text) for i in range(80)]
    for body_bytes, command in (_restore(tiny), _restore(wide)):
        assert body_bytes <= 1 << 20 and _frame_bytes(command) <= raft_frame_bytes_needed(body_bytes)
