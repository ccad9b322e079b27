"""A guarded transport for the Raft port: PySyncObj's TCP transport, with limits on who may
make the node read, and how much, before proving that it holds the cluster secret.

PySyncObj reads a 4-byte frame length and then buffers until the frame is whole, for anyone
who connects, by `bytes` concatenation; it authenticates (Fernet, with the secret) only once
the frame is whole. One connection that announced 2 GiB and streamed held the tick thread in
that read loop (the buffer copied on every read) and stalled the cluster. Here:

* a connection is *authenticated* once it decoded a frame that carried the random key this
  side sent (PySyncObj's handshake: each side sends a random key, encrypted with the secret,
  and wraps every later frame with the other side's key; a replayed frame carries an old key).
  Without a password there is nothing to prove: the first decoded frame counts;
* before that, a frame length outside 0..`unauthenticated_frame_bytes` (64 KiB; the handshake's
  frames are ~200 bytes) closes the connection as soon as the 4 bytes are read, and the node
  reads no further than one whole frame ahead; after it, the limit is `max_frame_bytes`;
* an incoming connection that has not authenticated within `auth_timeout_s` is closed, and at
  most `max_unauthenticated` wait at once: a new one beyond that closes the oldest waiting
  (a peer's handshake takes milliseconds, so it is the newest, not the oldest, while a flood
  of idle connections ages);
* buffers are `bytearray`s: appending and consuming a frame cost its length, not the buffer's;
* every refusal is counted by reason (`Rejections`, exported as a metric) and logged: at most
  one WARNING per `log_period_s`, the next one saying how many were not logged.

Seams: SyncObj takes a `transportClass`; `GuardedTransport` subclasses PySyncObj's
`TCPTransport`. The server and the outgoing connections are built by PySyncObj's own code, so
they are re-classed (`GuardedServer`, `GuardedConnection`: subclasses that override a few of
PySyncObj's private methods, by their mangled names) before their first use. Decoding a frame
stays PySyncObj's own code, handed one frame at a time.

Threads: everything here runs on PySyncObj's tick thread, except `Rejections.counts()`, which
any thread may call (it copies a dict whose keys never change).
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pysyncobj.poller import POLL_EVENT_TYPE
from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection
from pysyncobj.tcp_server import TcpServer
from pysyncobj.transport import TCPTransport

__all__ = ["GuardSettings", "GuardedConnection", "GuardedServer", "GuardedTransport", "Reason", "Rejections"]

log = logging.getLogger(__name__)

UNAUTHENTICATED_FRAME_BYTES = 64 * 1024
AUTH_TIMEOUT_S = 5.0
MAX_UNAUTHENTICATED = 64
LOG_PERIOD_S = 10.0
_ACCEPTS_PER_EVENT = 16  # PySyncObj accepts one connection per poll: a backlog of 5 filled fast
_HEAD = struct.Struct("i")  # PySyncObj's frame length: native byte order, signed 32 bits


class Reason(StrEnum):
    FRAME_TOO_LARGE = "frame_too_large"
    BAD_FRAME = "bad_frame"  # a negative length, or a frame that did not decrypt or decode
    AUTH_TIMEOUT = "auth_timeout"
    TOO_MANY_UNAUTHENTICATED = "too_many_unauthenticated"


@dataclass(frozen=True, slots=True, kw_only=True)
class GuardSettings:
    max_frame_bytes: int
    unauthenticated_frame_bytes: int = UNAUTHENTICATED_FRAME_BYTES
    auth_timeout_s: float = AUTH_TIMEOUT_S
    max_unauthenticated: int = MAX_UNAUTHENTICATED
    log_period_s: float = LOG_PERIOD_S


class Rejections:
    """Refused connections: counted by reason, logged at most once per `period_s`.

    The first refusal after a quiet period is logged at once, with its peer and detail; those
    within the period after it are counted, and reported in one line when the period is over
    (`flush`, called every tick) or with the next refusal after it."""

    def __init__(self, period_s: float = LOG_PERIOD_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.period_s, self.clock = period_s, clock
        self._counts: dict[str, int] = dict.fromkeys(Reason, 0)  # keys fixed: readable from any thread
        self._unlogged: Counter[str] = Counter()
        self._quiet_until = float("-inf")

    def counts(self) -> dict[str, int]:
        return dict(self._counts)

    def reject(self, reason: Reason, peer: str, detail: str) -> None:
        self._counts[reason] += 1
        now = self.clock()
        if now < self._quiet_until:
            self._unlogged[reason] += 1
            return
        unlogged, self._unlogged = self._unlogged, Counter()
        self._quiet_until = now + self.period_s
        log.warning(
            "refused a Raft connection from %s: %s (%s)%s",
            peer,
            reason.value,
            detail,
            _unlogged_note(unlogged),
            extra={"peer": peer, "reason": reason.value, "suppressed": unlogged.total()},
        )

    def flush(self) -> None:
        now = self.clock()
        if not self._unlogged or now < self._quiet_until:
            return
        unlogged, self._unlogged = self._unlogged, Counter()
        self._quiet_until = now + self.period_s
        log.warning(
            "refused %d more Raft connections%s",
            unlogged.total(),
            _unlogged_note(unlogged),
            extra={"suppressed": unlogged.total()},
        )


def _unlogged_note(unlogged: Counter[str]) -> str:
    if not unlogged:
        return ""
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(unlogged.items()))
    return f"; {unlogged.total()} not logged before this ({by_reason})"


class ConnectionWatcher(Protocol):
    """What a GuardedConnection reports to (the transport); called on the tick thread."""

    def connection_refused(self, conn: GuardedConnection, reason: Reason, detail: str) -> None: ...

    def connection_authenticated(self, conn: GuardedConnection) -> None: ...


class GuardedConnection(TcpConnection):  # type: ignore[misc]
    """PySyncObj's connection, reading into a bytearray within the frame limits (module doc).

    Invariants: `_frames` holds the bytes read and not yet decoded, a frame length first;
    while not `authenticated` it holds at most one whole frame plus one read; the frame length
    at its head is never over the current limit (the connection is closed first)."""

    _TcpConnection__readBuffer: bytes  # PySyncObj's buffer: here only ever one read, or one frame

    def __init__(
        self, *args: Any, watcher: ConnectionWatcher, settings: GuardSettings, **kwargs: Any
    ) -> None:
        self._watch(watcher, settings)
        super().__init__(*args, **kwargs)
        self.peer = _peer_name(kwargs.get("socket"))

    @classmethod
    def adopt(cls, conn: TcpConnection, watcher: ConnectionWatcher, settings: GuardSettings) -> None:
        """Make `conn`, built by PySyncObj and not yet connected, a GuardedConnection."""
        conn.__class__ = cls
        conn._watch(watcher, settings)

    def _watch(self, watcher: ConnectionWatcher, settings: GuardSettings) -> None:
        self.watcher, self.settings = watcher, settings
        self.peer = "?"
        self._frames = bytearray()
        self.authenticated = False
        self.opened_at = time.monotonic()

    @property
    def frame_limit(self) -> int:
        s = self.settings
        return s.max_frame_bytes if self.authenticated else s.unauthenticated_frame_bytes

    def connect(self, host: str, port: int) -> bool:
        self.peer = f"{host}:{port}"
        self._frames.clear()
        self.authenticated, self.opened_at = False, time.monotonic()
        return bool(super().connect(host, port))

    def disconnect(self) -> None:
        self._frames.clear()
        self.authenticated = False
        super().disconnect()

    def refuse(self, reason: Reason, detail: str) -> None:
        """Close the connection, counted and logged under `reason`."""
        if self.state != CONNECTION_STATE.DISCONNECTED:
            self.disconnect()
            self.watcher.connection_refused(self, reason, detail)

    # -- PySyncObj's private read path (TcpConnection.__processRead / __processParseMessage)

    def _TcpConnection__processRead(self) -> bool:  # noqa: N802 - PySyncObj's mangled name
        if not self.authenticated and self._whole_frame_buffered():
            return False  # the rest waits in the socket until this frame has (not) authenticated
        more = bool(super()._TcpConnection__processRead())
        chunk = self._TcpConnection__readBuffer  # what PySyncObj's read appended to its (empty) buffer
        if chunk:
            self._TcpConnection__readBuffer = b""
            self._frames += chunk
        return more and self._head_admissible()

    def _TcpConnection__processParseMessage(self) -> Any:  # noqa: N802 - PySyncObj's mangled name
        if not self._head_admissible() or not self._whole_frame_buffered():
            return None
        end = _HEAD.size + _HEAD.unpack_from(self._frames)[0]
        proves = self.encryptor is None or self.recvRandKey is not None
        # PySyncObj's own decoding (decrypt, check the timestamp and the key, unpickle), one frame at a time.
        self._TcpConnection__readBuffer = bytes(self._frames[:end])
        del self._frames[:end]
        message = super()._TcpConnection__processParseMessage()
        if self.state == CONNECTION_STATE.DISCONNECTED:  # it could not decode the frame
            self.watcher.connection_refused(self, Reason.BAD_FRAME, f"undecodable frame of {end} bytes")
            return None
        if proves and not self.authenticated:
            self.authenticated = True
            self.watcher.connection_authenticated(self)
        return message

    def _whole_frame_buffered(self) -> bool:
        frames = self._frames
        return len(frames) >= _HEAD.size and len(frames) - _HEAD.size >= _HEAD.unpack_from(frames)[0]

    def _head_admissible(self) -> bool:
        """False, with the connection closed, when the frame at the head announces a bad length."""
        if len(self._frames) < _HEAD.size:
            return True
        length = _HEAD.unpack_from(self._frames)[0]
        if length < 0:
            self.refuse(Reason.BAD_FRAME, f"negative frame length {length}")
            return False
        if length > self.frame_limit:
            state = "authenticated" if self.authenticated else "unauthenticated"
            self.refuse(Reason.FRAME_TOO_LARGE, f"{length} bytes announced, {state} limit {self.frame_limit}")
            return False
        return True


def _peer_name(sock: socket.socket | None) -> str:
    try:
        name = sock.getpeername() if sock is not None else None
    except OSError:
        return "?"
    return f"{name[0]}:{name[1]}" if isinstance(name, tuple) else str(name or "?")


class GuardedServer(TcpServer):  # type: ignore[misc]
    """PySyncObj's listening socket, accepting into GuardedConnections, several per poll event;
    an accept that fails (out of descriptors, aborted) is logged, not the end of listening
    (PySyncObj unbinds for good)."""

    @classmethod
    def adopt(cls, server: TcpServer, transport: GuardedTransport) -> None:
        """Make `server`, built by PySyncObj and not yet bound, a GuardedServer of `transport`."""
        server.__class__ = cls
        server.transport = transport

    def _TcpServer__onNewConnection(self, descr: int, event: int) -> None:  # noqa: N802 - mangled
        if event & POLL_EVENT_TYPE.READ:
            for _ in range(_ACCEPTS_PER_EVENT):
                if not self._accept_one():
                    break
        if event & POLL_EVENT_TYPE.ERROR:
            self.unbind()

    def _accept_one(self) -> bool:
        try:
            sock, _ = self._TcpServer__socket.accept()
        except BlockingIOError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
                self.transport.accept_failed(exc)
            return False
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self._TcpServer__sendBufferSize)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._TcpServer__recvBufferSize)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = GuardedConnection(
            poller=self._TcpServer__poller,
            socket=sock,
            timeout=self._TcpServer__connectionTimeout,
            sendBufferSize=self._TcpServer__sendBufferSize,
            recvBufferSize=self._TcpServer__recvBufferSize,
            keepalive=self._TcpServer__keepalive,
            watcher=self.transport,
            settings=self.transport.guard,
        )
        self._TcpServer__onNewConnectionCallback(conn)
        return True


class GuardedTransport(TCPTransport):  # type: ignore[misc]
    """PySyncObj's TCP transport with the guards of the module doc. Pass it to SyncObj as
    `transportClass=functools.partial(GuardedTransport, guard=GuardSettings(...))`.

    Invariant: `_waiting` holds the incoming connections that are open and not authenticated,
    oldest first (insertion order is opening order)."""

    def __init__(self, sync: Any, self_node: Any, other_nodes: Any, *, guard: GuardSettings) -> None:
        # Set before PySyncObj's constructor, which builds the server and the outgoing connections.
        self.guard = guard
        self.rejections = Rejections(guard.log_period_s)
        self._waiting: dict[GuardedConnection, None] = {}
        self._accept_quiet_until = float("-inf")
        super().__init__(sync, self_node, other_nodes)

    # -- PySyncObj's hooks

    def _createServer(self) -> None:  # noqa: N802 - PySyncObj's name
        super()._createServer()
        GuardedServer.adopt(self._server, self)

    def addNode(self, node: Any) -> None:  # noqa: N802 - PySyncObj's name
        super().addNode(node)
        conn = self._connections.get(node)
        if conn is not None and not isinstance(conn, GuardedConnection):
            GuardedConnection.adopt(conn, self, self.guard)

    def _onNewIncomingConnection(self, conn: GuardedConnection) -> None:  # noqa: N802
        super()._onNewIncomingConnection(conn)
        self._waiting[conn] = None
        if len(self._waiting) > self.guard.max_unauthenticated:
            oldest = next(iter(self._waiting))
            oldest.refuse(Reason.TOO_MANY_UNAUTHENTICATED, f"over {self.guard.max_unauthenticated} waiting")

    def _onDisconnected(self, conn: Any) -> None:  # noqa: N802 - PySyncObj's name
        self._waiting.pop(conn, None)
        super()._onDisconnected(conn)

    def _onTick(self) -> None:  # noqa: N802 - PySyncObj's name
        super()._onTick()
        self.expire_unauthenticated(time.monotonic())
        self.rejections.flush()

    # -- ConnectionWatcher

    def connection_refused(self, conn: GuardedConnection, reason: Reason, detail: str) -> None:
        self._waiting.pop(conn, None)
        self.rejections.reject(reason, conn.peer, detail)

    def connection_authenticated(self, conn: GuardedConnection) -> None:
        self._waiting.pop(conn, None)

    def accept_failed(self, exc: OSError) -> None:
        """Logged at most once per `log_period_s`: the listening socket stays readable meanwhile."""
        now = time.monotonic()
        if now >= self._accept_quiet_until:
            self._accept_quiet_until = now + self.guard.log_period_s
            log.warning("accepting a Raft connection failed: %s", exc)

    def expire_unauthenticated(self, now: float) -> None:
        """Close the waiting connections opened more than `auth_timeout_s` before `now`."""
        while self._waiting:
            oldest = next(iter(self._waiting))
            if now - oldest.opened_at <= self.guard.auth_timeout_s:
                return
            oldest.refuse(Reason.AUTH_TIMEOUT, f"not authenticated within {self.guard.auth_timeout_s:g} s")
            self._waiting.pop(oldest, None)  # refuse() did if it was open; a closed one leaves too
