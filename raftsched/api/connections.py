"""Bounds on the admin API's connections, so that slow or many clients cannot pin the node.

- **Header timeout**: a connection must deliver its first request's headers within
  `header_timeout_s` of connecting, else it is closed (a slowloris client dribbling one header
  line a second holds nothing for long).
- **Idle timeout**: aiohttp's keep-alive timeout, `idle_timeout_s`, closes a connection that has
  no complete request pending that long after its last answer (also a later request whose headers
  dribble in). It stays above the clients' own keep-alive (aiohttp's 15 s), so a client never
  reuses a connection the node has just closed.
- **Body timeout**: a request's body must arrive within `idle_timeout_s` too (read by the
  middleware before any handler runs; the handler then reads it from memory).
- **Connection caps**: at most `max_connections` in all and `max_connections_per_client` from one
  address. At a cap, the connection that has waited longest for its request headers (of that
  client, or of any for the total cap) is closed to make room: a client that sends its request at
  once always gets in, however many silent connections a flood holds. Only when every connection
  at the cap is busy with a request is the new one answered `503` with `Retry-After` and closed.
  The per-client cap sits above what one machine's own tools open (every node, the CLI,
  benchmarks and the chaos workload of a local cluster come from 127.0.0.1); the total cap
  protects the node's file descriptors.

aiohttp has one seam for this: the low-level `Server` is told of every connection made and lost
(`connection_made`, `connection_lost`); `ConnectionGuard.install` wraps those two on the instance.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = ["ConnectionGuard", "ConnectionLimits"]

log = logging.getLogger(__name__)
WARN_EVERY_S = 10.0  # refusals come in floods: one log line per period says how many

_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
)
_REFUSAL_BODY = (
    b'{"error":{"code":"unavailable","message":"too many connections from this client or in all",'
    b'"field":null}}'
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 30.0
    max_connections: int = 4096
    max_connections_per_client: int = 256


class ConnectionGuard:
    """Counts connections per client address; enforces the caps and the header timeout.

    Runs on the event loop only (aiohttp calls the server's hooks there)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._per_client: Counter[str] = Counter()
        self._client_of: dict[RequestHandler, str] = {}
        self._header_timers: dict[RequestHandler, asyncio.TimerHandle] = {}
        self.refused = 0
        self.evicted = 0
        self.timed_out = 0
        self._warned_at = -WARN_EVERY_S

    @property
    def open_connections(self) -> int:
        return len(self._client_of)

    def install(self, server: web.Server) -> None:
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._admit(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._forget(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]

    def request_started(self, handler: Any) -> None:
        """A request's headers arrived on `handler`'s connection: its header timer is done."""
        timer = self._header_timers.pop(handler, None)
        if timer is not None:
            timer.cancel()

    def _admit(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self._make_room(client):
            self._refuse(client, transport)
            return
        self._per_client[client] += 1
        self._client_of[handler] = client
        loop = asyncio.get_running_loop()
        self._header_timers[handler] = loop.call_later(
            self.limits.header_timeout_s, self._header_timeout, handler, transport
        )

    def _make_room(self, client: str) -> bool:
        """Whether `client` may open one more connection, closing a header-less one if need be."""
        for over, of_client in (
            (self._per_client[client] >= self.limits.max_connections_per_client, client),
            (len(self._client_of) >= self.limits.max_connections, None),
        ):
            if not over:
                continue
            # Timers are kept in the order connections came: the first is the longest waiting.
            waiting = (h for h in self._header_timers if of_client is None or self._client_of[h] == of_client)
            victim = next(waiting, None)
            if victim is None:
                return False
            self.evicted += 1
            self._forget(victim)
            if victim.transport is not None:
                victim.transport.close()
        return True

    def _refuse(self, client: str, transport: asyncio.Transport) -> None:
        self.refused += 1
        transport.write(_REFUSAL % (len(_REFUSAL_BODY), _REFUSAL_BODY))
        transport.close()
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "API connection from %s refused: %d open from it, %d in all (%d refused so far)",
                client,
                self._per_client[client],
                len(self._client_of),
                self.refused,
                extra={"client": client, "refused": self.refused},
            )

    def _header_timeout(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        self._header_timers.pop(handler, None)
        self.timed_out += 1
        transport.close()

    def _forget(self, handler: RequestHandler) -> None:
        self.request_started(handler)
        client = self._client_of.pop(handler, None)
        if client is not None:
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
