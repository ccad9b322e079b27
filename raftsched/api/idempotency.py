"""`Idempotency-Key` replays: the first answer's status, and its resource if unchanged (API.md).

A write with a key is a command whose request id is `idem:<key>`; the state remembers each such
command's fingerprint (method, path, body) and result for 24 h or the last 100,000 requests
(`state.machine`). A retry with the same key and body applies nothing and is answered here:

- with the status the first answer had (201 for a create, 200 or 201 for a PUT, ...);
- with the resource as it is now if it has not changed since the first write (a job still at the
  version that write produced; a run that still exists), else with
  `{"id", "version", "replayed": true}`, `version` being the one the first write produced
  (null for a run, which has none);
- with the first answer's error if the first write was refused.

The key is looked up on this node before the handler runs, so that a replay of a write to a job
deleted since answers its first answer, not the handler's 404. A replay that this node had not
applied yet is found by the state instead (`Services.write` raises `Replayed`) and answered the
same way. Every replay carries the header `Idempotent-Replayed: true`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .app import SERVICES, Handler, Replayed, Services, json_response
from .views import job_view, run_view

__all__ = ["REPLAYED_HEADER", "job_write", "run_write", "replayable"]

REPLAYED_HEADER = "Idempotent-Replayed"
_HEADERS = {REPLAYED_HEADER: "true"}

# How a replay is answered from the state's stored result of the first write.
Render = Callable[[Services, dict[str, Any]], web.StreamResponse]


def replayable(render: Render) -> Callable[[Handler], Handler]:
    """Answer a replay of the decorated write handler with `render` (see the module docstring)."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def replaying(request: web.Request) -> web.StreamResponse:
            svc = request.app[SERVICES]
            first = await svc.replay(request)
            if first is not None:
                return render(svc, first)
            try:
                return await handler(request)
            except Replayed as replay:
                return render(svc, replay.result)

        return replaying

    return wrap


def job_write(status: int | None) -> Render:
    """A write whose resource is a job (`result`: `job_id`, `version`); `status` None: 201 if the
    first write created the job, else 200 (a PUT)."""

    def render(svc: Services, result: dict[str, Any]) -> web.StreamResponse:
        code = status if status is not None else 201 if result.get("created") else 200
        job_id, version = str(result.get("job_id")), result.get("version")
        with svc.state.lock:
            job = svc.state.jobs.get(job_id)
            if job is not None and job.version == version:
                headers = {**_HEADERS, "ETag": f'"{job.version}"'}
                return json_response(job_view(job, svc.state), status=code, headers=headers)
        return _stub(job_id, version, code, {"ETag": f'"{version}"'})

    return render


def job_deleted(svc: Services, result: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=204, headers=_HEADERS)


def run_write(status: int) -> Render:
    """A write whose resource is a run (`result`: `run_id`)."""

    def render(svc: Services, result: dict[str, Any]) -> web.StreamResponse:
        run_id = str(result.get("run_id"))
        with svc.state.lock:
            run = svc.state.runs.get(run_id)
            if run is not None:
                return json_response(run_view(run), status=status, headers=_HEADERS)
        return _stub(run_id, None, status, {})

    return render


def _stub(resource_id: str, version: Any, status: int, headers: dict[str, str]) -> web.Response:
    body = {"id": resource_id, "version": version, "replayed": True}
    return json_response(body, status=status, headers={**_HEADERS, **headers})
