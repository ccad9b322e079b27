"""`GET /v1/runs/{run_id}/output`: a run's full output, from the node that ran it (API.md).

The replicated state holds only a tail of each output; the full output of an attempt stays on the
disk of the node that ran it (`executors.outputs`) when the tail is not all of it. Any node
answers: from its own disk when the file is there (or from memory, for a run still executing here
that has written no file yet), else from the replicated tail when that is the whole output
(`executors.base.tail_is_whole`: most outputs are small and have no file), else by proxying the
request to the node that ran the attempt and streaming its answer back.

- `?attempt=N` picks an attempt (default: the run's current one). The current attempt ran on the
  run's `node`; an earlier one may have run anywhere (retries and reassignments move runs), so
  for it the run's node is asked first, then every other node in turn.
- A proxied request carries `X-Raftsched-Proxied-By: <node id>`, and a node answers such a request
  from its own disk or with 404, never by proxying again: one hop at most, no loops. The client's
  `Authorization` header is passed along (every node has the same token).
- 404 `not_found`: no such run, no such attempt, an attempt that has not written output yet, a
  file pruned by retention, or a small output that no one kept (an attempt that succeeded on a
  node presumed dead: its report was refused, and small outputs have no file). 503
  `unavailable`: the node that holds the output does not answer.
- The answer is `text/plain; charset=utf-8`, the file as it is when the request arrives (a run
  still executing shows its output so far); `X-Raftsched-Output-Node` names the node it came from.

The node's outputs directory comes from the app (`OUTPUT_DIR`, set by the composition root);
without it this node has no outputs of its own, and still proxies.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote

import aiohttp
from aiohttp import web

from ..errors import NotFound, RaftschedError, Unavailable, ValidationError
from ..executors.base import output_so_far, tail_is_whole
from ..executors.outputs import output_path
from ..model import RunState
from ..records import NodeRecord, Run
from .app import SERVICES

__all__ = ["OUTPUT_DIR", "PROXIED_HEADER", "add_routes"]

log = logging.getLogger(__name__)

OUTPUT_DIR: web.AppKey[Path] = web.AppKey("output_dir", Path)
PROXIED_HEADER = "X-Raftsched-Proxied-By"
NODE_HEADER = "X-Raftsched-Output-Node"
CHUNK = 64 * 1024
CONNECT_TIMEOUT_S = 3.0
READ_TIMEOUT_S = 5.0
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("output_proxy_session", aiohttp.ClientSession)
_REPORTED = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT})  # tail of `attempt`


def add_routes(app: web.Application) -> None:
    """Register this module's routes on `app`, and the proxy's client session."""
    app.router.add_get("/v1/runs/{run_id}/output", run_output)
    app.cleanup_ctx.append(_client_session)


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=READ_TIMEOUT_S)
    async with aiohttp.ClientSession(
        timeout=timeout, trust_env=False, cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False
    ) as session:
        app[_SESSION] = session
        yield


async def run_output(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICES]
    run_id = request.match_info["run_id"]
    with svc.state.lock:
        run = svc.state.runs.get(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}", field="run_id")
        attempt = _attempt(request, run.attempt)
        owner, nodes = run.node, dict(svc.state.nodes)
        whole = _whole_tail(run, attempt, svc.state.settings["output_tail_bytes"])
    local = await _send_local(request, run_id, attempt, svc.node_id)
    if local is not None:
        return local
    if whole is not None:
        return await _send_bytes(request, owner or svc.node_id, whole)
    if PROXIED_HEADER in request.headers:
        raise NotFound(f"no output of run {run_id!r} attempt {attempt} on node {svc.node_id}", field="run_id")
    peers = _peers(owner, nodes, svc.node_id, current=attempt == run.attempt)
    return await _proxy(request, run_id, attempt, peers, svc.node_id)


def _attempt(request: web.Request, current: int) -> int:
    raw = request.query.get("attempt")
    if raw is None:
        return current
    try:
        attempt = int(raw)
    except ValueError:
        raise ValidationError(f"not an integer: {raw!r}", field="attempt") from None
    if attempt < 1:
        raise ValidationError("must be at least 1", field="attempt")
    if attempt > current:
        raise NotFound(f"the run has no attempt {attempt} (its latest is {current})", field="attempt")
    return attempt


def _whole_tail(run: Run, attempt: int, tail_bytes: int) -> bytes | None:
    """The attempt's whole output when the state's tail is all of it (then no file was written)."""
    if attempt != run.attempt or run.state not in _REPORTED or not tail_is_whole(run.output, tail_bytes):
        return None
    return run.output.encode()


def _peers(owner: str | None, nodes: dict[str, NodeRecord], me: str, *, current: bool) -> list[NodeRecord]:
    """Who may hold the output: the run's node for its current attempt; else it first, then all."""
    order = [owner] if current else [owner, *sorted(n for n in nodes if n != owner)]
    return [nodes[n] for n in order if n is not None and n != me and n in nodes]


# ---------------------------------------------------------------- from this node's disk


async def _send_local(
    request: web.Request, run_id: str, attempt: int, node_id: str
) -> web.StreamResponse | None:
    """Stream the local file as it is now; None when this node has no such file."""
    directory = request.app.get(OUTPUT_DIR)
    if directory is None:
        return None
    path = output_path(directory, run_id, attempt)
    so_far = output_so_far(path)
    if so_far is not None:
        return await _send_bytes(request, node_id, so_far)
    loop = asyncio.get_running_loop()
    try:
        file, size = await loop.run_in_executor(None, _open_snapshot, path)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        raise RaftschedError(f"cannot read the output: {exc}") from exc
    with file:
        response = _text_response(node_id, size)
        await response.prepare(request)
        remaining = size
        while remaining > 0:
            chunk = await loop.run_in_executor(None, file.read, min(CHUNK, remaining))
            if not chunk:
                break
            if not await _write(response, chunk):
                break
            remaining -= len(chunk)
    return response


async def _send_bytes(request: web.Request, node_id: str, data: bytes) -> web.StreamResponse:
    response = _text_response(node_id, len(data))
    await response.prepare(request)
    if data:
        await _write(response, data)
    return response


def _open_snapshot(path: Path) -> tuple[BinaryIO, int]:
    """The open file and its size now: the answer is that many bytes even if the run writes on."""
    file = path.open("rb")
    try:
        return file, os.fstat(file.fileno()).st_size
    except BaseException:
        file.close()
        raise


def _text_response(node_id: str, size: int | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={NODE_HEADER: node_id})
    response.content_type = "text/plain"
    response.charset = "utf-8"
    if size is not None:
        response.content_length = size
    return response


async def _write(response: web.StreamResponse, chunk: bytes) -> bool:
    """Write a chunk; False when the client has gone (aiohttp then closes the connection)."""
    try:
        await response.write(chunk)
    except ConnectionError:
        return False
    return True


# ---------------------------------------------------------------- from the node that ran it


async def _proxy(
    request: web.Request, run_id: str, attempt: int, peers: list[NodeRecord], node_id: str
) -> web.StreamResponse:
    """Ask each peer in turn; stream the first output found back, or say why there is none."""
    silent: list[str] = []
    for peer in peers:
        try:
            response = await _proxy_one(request, peer, run_id, attempt, node_id)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("output of run %s from node %s: %s", run_id, peer.id, exc or type(exc).__name__)
            silent.append(peer.id)
            continue
        if response is not None:
            return response
    if silent:
        raise Unavailable(f"node {', '.join(silent)} holding the output of run {run_id!r} does not answer")
    raise NotFound(
        f"no output of run {run_id!r} attempt {attempt} (never written, or pruned)", field="run_id"
    )


async def _proxy_one(
    request: web.Request, peer: NodeRecord, run_id: str, attempt: int, node_id: str
) -> web.StreamResponse | None:
    """The peer's answer streamed back; None for its 404 (it has no such output)."""
    url = f"{peer.http.rstrip('/')}/v1/runs/{quote(run_id, safe='@~')}/output"
    headers = {PROXIED_HEADER: node_id}
    if "Authorization" in request.headers:
        headers["Authorization"] = request.headers["Authorization"]
    session = request.app[_SESSION]
    async with session.get(
        url, params={"attempt": str(attempt)}, headers=headers, allow_redirects=False
    ) as up:
        if up.status == 404:
            return None
        if up.status != 200:
            body = await up.content.read(64 * 1024)
            return web.Response(status=up.status, body=body, content_type=up.content_type)
        response = _text_response(up.headers.get(NODE_HEADER, peer.id), up.content_length)
        await response.prepare(request)
        try:
            async for chunk in up.content.iter_chunked(CHUNK):
                if not await _write(response, chunk):
                    break
        except (aiohttp.ClientError, TimeoutError) as exc:
            # Too late for an error status: cut the connection so the client sees a short answer.
            log.warning("output of run %s from node %s broke off: %s", run_id, peer.id, exc)
            if request.transport is not None:
                request.transport.abort()
        return response
