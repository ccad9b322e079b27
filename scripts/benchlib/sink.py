"""The ground truth: a minimal HTTP/1.1 server that stamps the arrival of every task's request.

    python -m benchlib.sink            # prints `port <n>` on stdout, serves until killed

A raw asyncio protocol, not a framework, so that it costs a few microseconds per request and is
never what limits a workload (the bench measures it alone first). Keep-alive, no pipelining
needed (clients send one request at a time per connection, as aiohttp does).

Every request to any path but `/_...` is an event: (arrival wall time in ns, `X-Raftsched-Run-Id`,
`X-Raftsched-Attempt`, `X-Raftsched-Node`). Run ids are `<job>@<due epoch ms>` (raftsched's own
format; the peers send the same), so lateness needs no other header. Control paths:
`GET /_events?from=K` (events K.. as JSON lists), `GET /_count`, `POST /_reset`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
WANTED = {b"x-raftsched-run-id": 1, b"x-raftsched-attempt": 2, b"x-raftsched-node": 3}

events: list[tuple[int, str, str, str]] = []


class SinkProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            pos = head.lower().find(b"\r\ncontent-length:")
            if pos >= 0:
                line_end = head.find(b"\r\n", pos + 2)
                length = int(head[pos + 17 : line_end if line_end > 0 else len(head)].strip() or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.handle(head, body, now)

    def handle(self, head: bytes, body: bytes, now: int) -> None:
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        path = parts[1] if len(parts) > 1 else b"/"
        close = False
        if path.startswith(b"/_"):
            self.control(path.decode(), body)
            close = any(line.lower().startswith(b"connection: close") for line in lines[1:])
        else:
            record: list[Any] = [now, "", "", ""]
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                idx = WANTED.get(name.strip().lower())
                if idx is not None:
                    record[idx] = value.strip().decode()
            events.append(tuple(record))  # type: ignore[arg-type]
            assert self.transport is not None
            self.transport.write(OK)
        if close and self.transport is not None:
            self.transport.close()

    def control(self, path: str, body: bytes) -> None:
        route, _, query = path.partition("?")
        if route == "/_events":
            start = int(query.partition("from=")[2] or 0) if "from=" in query else 0
            payload = json.dumps(events[start:]).encode()
        elif route == "/_count":
            payload = str(len(events)).encode()
        elif route == "/_reset":
            events.clear()
            payload = b"0"
        else:
            payload = b"?"
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(payload)).encode()
            + b"\r\n\r\n"
            + payload
        )


async def serve() -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    print(f"port {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        sys.exit(0)
