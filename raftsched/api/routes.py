"""The route table and its handlers (API.md). Handlers are thin: parse, propose, render."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from aiohttp import web

from .. import eligibility, triggers
from ..accounting import edit_items, paused_items
from ..commands import VERSION as COMMAND_VERSION
from ..commands import CommandType, usable_version
from ..errors import NoEligibleNode, NotFound, ValidationError, quoted
from ..model import REDACTED, JobSpec, RunState, check_env, check_kwargs, check_startable
from ..records import JobRecord, Run
from ..routing import pick_nodes
from ..state.paused import edit_replans
from . import schemas
from .alerts import check_job_notify
from .app import SERVICES, Services, bool_query, json_response, read_json, version
from .idempotency import job_deleted, job_write, replayable, run_write
from .redaction import keep_stored
from .views import job_view, node_view, paused_overlay, run_view, stats_view

__all__ = ["add_routes"]

T = TypeVar("T")
routes = web.RouteTableDef()


def _svc(request: web.Request) -> Services:
    return request.app[SERVICES]


# ---------------------------------------------------------------- cluster


@routes.get("/v1/health")
async def health(request: web.Request) -> web.Response:
    svc = _svc(request)
    status = svc.raft.status()
    lag = status.commit_index - status.applied_index
    with svc.state.lock:
        me = svc.state.nodes.get(svc.node_id)
    clock_ok = me is None or me.clock_ok
    healthy = status.leader is not None and lag < 1000 and svc.raft.tick_alive() and clock_ok
    body = {
        "ok": healthy,
        "node_id": svc.node_id,
        "leader": svc.leader_id(status),
        "lag": lag,
        "time_ms": svc.clock.now_ms(),
        "clock_offset_ms": me.clock_offset_ms if me is not None else None,
        "clock_ok": clock_ok,
        # tick_alive() is false once this passes a few election timeouts (Replicator.tick_alive)
        "raft_tick_age_s": round(status.tick_age_s, 3),
    }
    return json_response(body, status=200 if healthy else 503)


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    svc = _svc(request)
    raft = svc.raft.status()
    with svc.state.lock:
        members = [
            {
                "id": n.id,
                "raft": n.raft,
                "http": n.http,
                "tags": n.tags,
                "alive": n.up,
                "connected": True if n.id == svc.node_id else raft.connected.get(n.raft, False),
                "commands": svc.state.published.get(n.id, 1),
            }
            for n in svc.state.nodes.values()
        ]
        digest, term_begun = svc.state.digest_hex(), svc.state.term
        cluster_version = svc.state.cluster_version
    return json_response(
        {
            "node_id": svc.node_id,
            "version": version(),
            "role": raft.role,
            "leader": svc.leader_id(raft),
            "leader_raft": raft.leader,
            "term": raft.term,
            "scheduler_term": term_begun,
            "commit_index": raft.commit_index,
            "applied_index": raft.applied_index,
            "log_len": raft.log_len,
            "compactions": raft.compactions,
            "compaction_turn": raft.compaction_turn,
            "digest": digest,
            "commands": COMMAND_VERSION,
            "cluster_version": cluster_version,
            "members": members,
        }
    )


@routes.get("/v1/nodes")
async def list_nodes(request: web.Request) -> web.Response:
    svc = _svc(request)
    raft = svc.raft.status()
    with svc.state.lock:
        items = [
            node_view(n, svc.state, True if n.id == svc.node_id else raft.connected.get(n.raft))
            for n in svc.state.nodes.values()
        ]
    return json_response({"items": items, "next_cursor": None})


@routes.get("/v1/stats")
async def stats(request: web.Request) -> web.Response:
    svc = _svc(request)
    with svc.state.lock:
        records = list(svc.state.jobs.values())
    # A paused job's range the leader has not recorded yet counts as what it will be recorded as.
    extra = {job.spec.id: _overlay_counts(svc, job) for job in records if job.spec.paused}
    totals: dict[str, int] = {}
    for counts in extra.values():
        for key, n in counts:
            totals[key] = totals.get(key, 0) + n
    with svc.state.lock:
        jobs = {jid: stats_view(s, extra.get(jid, ())) for jid, s in svc.state.stats.items()}
        total = stats_view(svc.state.totals, tuple(totals.items()))
    return json_response({"cluster": total, "jobs": jobs})


def _overlay_counts(svc: Services, job: JobRecord) -> tuple[tuple[str, int], ...]:
    with svc.state.lock:  # one job at a time: writes are not held up behind a big table
        return paused_overlay(job, svc.state).counts


# ---------------------------------------------------------------- jobs


async def _consistent(request: web.Request) -> None:
    if bool_query(request, "consistent"):
        svc = _svc(request)
        await svc.raft.propose(_noop(svc))


def _noop(svc: Services) -> bytes:
    from ..commands import encode

    return encode(CommandType.NOOP, {"now_ms": svc.clock.now_ms()})


async def _see_job(svc: Services, job_id: str) -> None:
    """Before a write names a job this node does not know: a barrier, so that a job created
    through another node (committed, not yet applied here) is found rather than answered 404."""
    with svc.state.lock:
        known = job_id in svc.state.jobs
    if not known:
        await svc.raft.propose(_noop(svc))


def _job(svc: Services, job_id: str) -> JobRecord:
    job = svc.state.jobs.get(job_id)
    if job is None:
        raise NotFound(f"no job {quoted(job_id)}", field="id")
    return job


def _job_response(svc: Services, job_id: str, status: int = 200) -> web.Response:
    with svc.state.lock:
        job = _job(svc, job_id)
        body = job_view(job, svc.state)
    return json_response(body, status=status, headers={"ETag": f'"{job.version}"'})


@routes.get("/v1/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    svc = _svc(request)
    await _consistent(request)
    tag = request.query.get("tag")
    paused = bool_query(request, "paused")
    key, eq, value = (tag or "").partition("=")
    if tag is not None and not (key and eq):
        raise ValidationError("must be key=value", field="tag")
    with svc.state.lock:
        jobs: Iterable[JobRecord] = svc.state.jobs.values()
        matching = (
            j
            for j in jobs
            if (not tag or j.spec.route.tags.get(key) == value or j.spec.labels.get(key) == value)
            and (paused is None or j.spec.paused == paused)
        )
        page, cursor = _page(request, matching, lambda j: j.spec.id)
        items = [job_view(j, svc.state) for j in page]
    return json_response({"items": items, "next_cursor": cursor})


def _parse_spec(body: Any, schema: str, job_id: str | None = None, stored: JobSpec | None = None) -> JobSpec:
    """The body's shape against `schemas` first, then the semantic checks of the model and triggers;
    headers sent back as `"***"` take the `stored` job's values (`redaction.keep_stored`)."""
    schemas.validate(schema, body)
    spec = JobSpec.from_dict(body, job_id=job_id)
    triggers.check_schedule(spec.schedule)
    check_startable(spec.task)
    return keep_stored(spec, stored)


def _check_eligible(request: web.Request, svc: Services, spec: JobSpec) -> None:
    """422 `no_eligible_node` when no live node may run `spec` (`eligibility`), unless `?force=true`."""
    if bool(bool_query(request, "force")):
        return
    with svc.state.lock:
        found = eligibility.refusal(spec, svc.state.nodes.values())
    if found is not None:
        raise NoEligibleNode(found.message, field=found.field)


def _first_slot(spec: JobSpec, old: JobRecord | None, now_ms: int) -> int | None:
    """The first slot of a created or edited job (a past `at` is refused: `triggers.first_slot_ms`)."""
    after = old.last_slot_ms if old is not None and old.last_slot_ms is not None else now_ms
    return triggers.first_slot_ms(
        spec.schedule,
        None if old is None else old.spec.schedule,
        after,
        now_ms=now_ms,
        created_ms=now_ms if old is None else old.created_ms,
        grace_s=spec.misfire.grace,
    )


@routes.post("/v1/jobs")
@replayable(job_write(201))
async def create_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    spec = _parse_spec(await read_json(request), "JobCreate")
    _check_eligible(request, svc, spec)
    check_job_notify(request, svc, spec)
    now_ms = svc.clock.now_ms()
    first_slot = _first_slot(spec, None, now_ms)
    await svc.write(
        request,
        CommandType.PUT_JOB,
        {
            "spec": spec.to_dict(),
            "now_ms": now_ms,
            "mode": "create",
            "next_nominal_ms": first_slot,
        },
    )
    return _job_response(svc, spec.id, 201)


@routes.get("/v1/jobs/{id}")
async def get_job(request: web.Request) -> web.Response:
    await _consistent(request)
    return _job_response(_svc(request), request.match_info["id"])


@routes.put("/v1/jobs/{id}")
@replayable(job_write(None))
async def put_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    job_id = request.match_info["id"]
    body = await read_json(request)
    with svc.state.lock:
        old = svc.state.jobs.get(job_id)
    # "***" keeps the value of the version read here; an If-Match makes the PUT apply to it only.
    spec = _parse_spec(body, "JobReplace", job_id, old.spec if old is not None else None)
    if old is None or (spec.task, spec.route) != (old.spec.task, old.spec.route):
        # A PUT that keeps what decides where the job may run (a pause, a new schedule) is not
        # judged again: the job was accepted, and a node that allows it may just be down now.
        _check_eligible(request, svc, spec)
    if old is None or spec.notify != old.spec.notify:
        check_job_notify(request, svc, spec)
    if_version = _if_match(request)

    def build() -> tuple[dict[str, Any], int | None]:
        with svc.state.lock:
            old = svc.state.jobs.get(job_id)
            pending = [r.nominal_ms for r in _active(svc, job_id) if r.state is RunState.PENDING]
            v = usable_version(CommandType.PUT_JOB, svc.state.cluster_version)
        now_ms = svc.clock.now_ms()
        after = old.last_slot_ms if old is not None and old.last_slot_ms is not None else now_ms
        created = old.created_ms if old is not None else now_ms
        keep = [s for s in pending if triggers.next_fire_ms(spec.schedule, s - 1, created_ms=created) == s]
        put: dict[str, Any] = {
            "spec": spec.to_dict(),
            "now_ms": now_ms,
            "mode": "put",
            "if_version": if_version,
            "keep_slots": keep,
        }
        if v is not None and v >= 2:
            # The old schedule's slots the edit overtakes are recorded; the new one plans from it.
            put["accounted"] = edit_items(old, spec, now_ms)
            if old is not None and edit_replans(old, spec):
                after = max(after, now_ms)
        put["next_nominal_ms"] = triggers.first_slot_ms(
            spec.schedule,
            None if old is None else old.spec.schedule,
            after,
            now_ms=now_ms,
            created_ms=created,
            grace_s=spec.misfire.grace,
        )
        return put, v

    result = await svc.write_fresh(request, CommandType.PUT_JOB, build)
    return _job_response(svc, job_id, 201 if result.get("created") else 200)


def _active(svc: Services, job_id: str) -> list[Run]:
    return [svc.state.runs[r] for r in svc.state.job_active.get(job_id, {})]


def _if_match(request: web.Request) -> int | None:
    raw = request.headers.get("If-Match")
    if raw is None:
        return None
    # `N` or `"N"` (API.md). A weak tag (`W/"N"`) is refused: RFC 9110 has If-Match compare strongly.
    # ASCII: int() refuses some Unicode digits ('²'); 18 digits: a command carries 64-bit integers.
    match = _VERSION_TAG.fullmatch(raw.strip())
    if match is None:
        raise ValidationError('must be a job version: N or "N"', field="If-Match")
    return int(match[1] or match[2])


_VERSION_TAG = re.compile(r'([0-9]{1,18})|"([0-9]{1,18})"', re.ASCII)


@routes.delete("/v1/jobs/{id}")
@replayable(job_deleted)
async def delete_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    job_id, if_version = request.match_info["id"], _if_match(request)
    await _see_job(svc, job_id)

    def build() -> tuple[dict[str, Any], int | None]:
        body: dict[str, Any] = {"job_id": job_id, "if_version": if_version, "now_ms": svc.clock.now_ms()}
        with svc.state.lock:
            job = svc.state.jobs.get(job_id)
            v = usable_version(CommandType.DELETE_JOB, svc.state.cluster_version)
        if v is not None and v >= 2:
            # A paused job's range is counted (`skipped` / `missed` of the cluster) as it goes.
            body["accounted"] = paused_items(job, body["now_ms"])
        return body, v

    await svc.write_fresh(request, CommandType.DELETE_JOB, build)
    return web.Response(status=204)


@routes.post("/v1/jobs/{id}/pause")
@replayable(job_write(200))
async def pause_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    job_id = request.match_info["id"]
    # The missed range is worked out from this node's view of the job: a node still catching
    # up (restarted, or behind) saw a slot as unfired that a leader had fired since, the state
    # refused the range as stale, and the slots after it were neither run nor recorded (chaos
    # seed 7: a whole-cluster restart, then a pause). A barrier first: everything committed
    # before this request is applied here before the job is read.
    await svc.raft.propose(_noop(svc))
    now_ms = svc.clock.now_ms()
    with svc.state.lock:
        job = _job(svc, job_id)
    body: dict[str, Any] = {"job_id": job_id, "now_ms": now_ms, "if_version": _if_match(request)}
    if not job.spec.paused and job.next_nominal_ms is not None and job.next_nominal_ms <= now_ms:
        # Slots due before this pause that no leader fired (there was none): recorded missed, so
        # that none vanishes. The state keeps them only if no fire has moved the job on meanwhile.
        due = triggers.slots_between(
            job.spec.schedule, job.next_nominal_ms - 1, now_ms, created_ms=job.created_ms, limit=1_000_000
        )
        if due:
            body["missed"] = {"from_ms": due[0], "until_ms": due[-1], "count": len(due)}
    await svc.write(request, CommandType.PAUSE_JOB, body)
    return _job_response(svc, job_id)


@routes.post("/v1/jobs/{id}/resume")
@replayable(job_write(200))
async def resume_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    job_id, if_version = request.match_info["id"], _if_match(request)
    await _see_job(svc, job_id)

    def build() -> tuple[dict[str, Any], int | None]:
        now_ms = svc.clock.now_ms()
        with svc.state.lock:
            job = _job(svc, job_id)
            v = usable_version(CommandType.RESUME_JOB, svc.state.cluster_version)
        body: dict[str, Any] = {
            "job_id": job_id,
            "now_ms": now_ms,
            "if_version": if_version,
            "next_nominal_ms": triggers.next_fire_ms(job.spec.schedule, now_ms, created_ms=job.created_ms),
        }
        if v is not None and v >= 2:
            # The whole paused range, from the job's position (state/paused.py), is recorded.
            body["accounted"] = paused_items(job, now_ms)
        elif job.spec.paused and job.paused_ms is not None:
            start = max(job.paused_ms, job.last_slot_ms or 0)
            skipped = triggers.slots_between(
                job.spec.schedule, start, now_ms, created_ms=job.created_ms, limit=1_000_000
            )
            if skipped:
                body["skipped"] = {"from_ms": skipped[0], "until_ms": skipped[-1], "count": len(skipped)}
        return body, v

    await svc.write_fresh(request, CommandType.RESUME_JOB, build)
    return _job_response(svc, job_id)


@routes.post("/v1/jobs/{id}/trigger")
@replayable(run_write(201))
async def trigger_job(request: web.Request) -> web.Response:
    svc = _svc(request)
    job_id = request.match_info["id"]
    body = await read_json(request, optional=True)
    schemas.validate("TriggerBody", body)
    check_env(body.get("env") or {}, "env")
    check_kwargs(body.get("kwargs") or {}, "kwargs")
    for name, value in (body.get("env") or {}).items():
        if value == REDACTED:
            raise ValidationError(f'"{REDACTED}" stands for no value here', field=f"env.{name}")
    overrides = {"env": body.get("env"), "kwargs": body.get("kwargs")}
    await _see_job(svc, job_id)
    with svc.state.lock:
        job = _job(svc, job_id)
    _check_eligible(request, svc, job.spec)
    with svc.state.lock:
        allowed = set(eligibility.eligible_nodes(job.spec, svc.state.nodes.values()))
        candidates = svc.state.candidates(executing=True)
        v = usable_version(CommandType.TRIGGER_JOB, svc.state.cluster_version)
    # Among the nodes that may run it (forced: any, if none may); one run per node for broadcast
    # and shards, as a scheduled slot has — from cluster version 2 on (`nodes`): until every
    # member applies that form, a manual trigger is one run, as it always was.
    forced = bool(bool_query(request, "force"))
    usable = [c for c in candidates if c.id in allowed] or (candidates if forced else [])
    picked = pick_nodes(job.spec.route, job_id, f"{job_id}@manual", usable, broker=job.spec.task.broker)
    if not picked:
        raise NoEligibleNode("no node that may run the job takes runs now", field="route.tags")
    fan_out = {"nodes": picked} if len(picked) > 1 and v is not None and v >= 2 else {}
    result = await svc.write(
        request,
        CommandType.TRIGGER_JOB,
        {"job_id": job_id, "node": picked[0], **fan_out, **overrides},
        v=v,
    )
    return _runs_response(svc, result.get("run_ids") or [result["run_id"]])


# ---------------------------------------------------------------- runs


def _run_response(svc: Services, run_id: str, status: int = 200) -> web.Response:
    with svc.state.lock:
        run = svc.state.runs.get(run_id)
        if run is None:
            raise NotFound(f"no run {quoted(run_id)}", field="run_id")
        return json_response(run_view(run), status=status)


def _runs_response(svc: Services, run_ids: list[str]) -> web.Response:
    """201 with the first run, and `runs`: all of them (one per node for broadcast and shards)."""
    with svc.state.lock:
        runs = [svc.state.runs.get(rid) for rid in run_ids]
        views = [run_view(run) for run in runs if run is not None]
    if not views:
        raise NotFound(f"no run {run_ids[0]!r}", field="run_id")
    return json_response({**views[0], "runs": views}, status=201)


@routes.get("/v1/jobs/{id}/runs")
async def job_runs(request: web.Request) -> web.Response:
    svc = _svc(request)
    await _consistent(request)
    state_filter = _state_query(request)
    with svc.state.lock:
        _job(svc, request.match_info["id"])
        runs = _job_runs(svc, request.match_info["id"])
        page, cursor = _page(
            request, (r for r in runs if state_filter in (None, r.state)), lambda r: r.run_id
        )
        items = [run_view(r, with_output=False) for r in page]
    return json_response({"items": items, "next_cursor": cursor})


@routes.get("/v1/runs")
async def list_runs(request: web.Request) -> web.Response:
    svc = _svc(request)
    await _consistent(request)
    state_filter = _state_query(request)
    node, job = request.query.get("node"), request.query.get("job")
    with svc.state.lock:
        runs = _job_runs(svc, job) if job else svc.state.runs_newest_first()
        matching = (r for r in runs if state_filter in (None, r.state) and node in (None, r.node))
        page, cursor = _page(request, matching, lambda r: r.run_id)
        items = [run_view(r, with_output=False) for r in page]
    return json_response({"items": items, "next_cursor": cursor})


def _job_runs(svc: Services, job_id: str) -> Iterator[Run]:
    """The job's runs and records, newest first, with its paused range up to the committed clock
    (hold the lock)."""
    job = svc.state.jobs.get(job_id)
    runs = svc.state.runs_newest_first(job_id)
    return runs if job is None else paused_overlay(job, svc.state).runs(runs)


@routes.get("/v1/runs/{run_id}")
async def get_run(request: web.Request) -> web.Response:
    await _consistent(request)
    return _run_response(_svc(request), request.match_info["run_id"])


@routes.post("/v1/runs/{run_id}/cancel")
@replayable(run_write(202))
async def cancel_run(request: web.Request) -> web.Response:
    svc = _svc(request)
    run_id = request.match_info["run_id"]
    await svc.write(request, CommandType.CANCEL_RUN, {"run_id": run_id})
    return _run_response(svc, run_id, 202)


def _state_query(request: web.Request) -> RunState | None:
    raw = request.query.get("state")
    if raw is None:
        return None
    try:
        return RunState(raw)
    except ValueError:
        raise ValidationError(f"unknown run state {quoted(raw)}", field="state") from None


def _page(request: web.Request, items: Iterator[T], key: Callable[[T], str]) -> tuple[list[T], str | None]:
    """Cursor pagination over an ordered iterator: the cursor names the last item returned."""
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ValidationError("must be an integer", field="limit") from None
    if not 1 <= limit <= 1000:
        raise ValidationError("must be between 1 and 1000", field="limit")
    after = _decode_cursor(request.query.get("cursor"))
    if after is not None:
        for item in items:
            if key(item) == after:
                break
    page: list[T] = []
    for item in items:
        if len(page) == limit:
            return page, base64.urlsafe_b64encode(key(page[-1]).encode()).decode()
        page.append(item)
    return page, None


def _decode_cursor(raw: str | None) -> str | None:
    if raw is None:
        return None
    try:
        decoded = base64.b64decode(raw.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("not a valid cursor", field="cursor") from None
    if not decoded:
        raise ValidationError("not a valid cursor", field="cursor")
    return decoded


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
