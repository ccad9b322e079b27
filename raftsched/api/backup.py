"""Backup and restore of the job table (and optionally run history) over the API.

`GET /v1/backup` exports a consistent, versioned document: it first commits a no-op so that
this node has applied everything committed before the call, then copies the state under its
lock. `POST /v1/restore` takes a chunk of that document's jobs: absent jobs are recreated with
their creation time and schedule position (next fire times survive), existing jobs that differ
are replaced like a PUT, equal ones are left alone; `?dry_run=true` only reports which is which.

Backups are redacted like every answer (`redaction.spec_view`: sensitive inline header values are
`"***"`, and the document says `"redacted": true`) unless asked with `?secrets=true`. Secret
references are names and always kept. A restore reads `"***"` as a PUT does: the value the
cluster has now for that job's header, and a 400 naming the field where it has none (a redacted
backup cannot recreate an inline credential; take the backup with `?secrets=true` for that).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .. import __version__, triggers
from ..commands import CommandType, encode
from ..errors import ValidationError, quoted
from ..model import JobSpec, check_startable, iso_ms, parse_iso_ms
from . import schemas
from .app import SERVICES, Services, bool_query, json_response, read_json
from .redaction import keep_stored, spec_view
from .views import run_view

__all__ = ["BACKUP_FORMAT", "add_routes"]

BACKUP_FORMAT = "raftsched-backup"
BACKUP_VERSION = 1
routes = web.RouteTableDef()


@routes.get("/v1/backup")
async def backup(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    await svc.raft.propose(encode(CommandType.NOOP, {"now_ms": svc.clock.now_ms()}))
    with_runs = bool_query(request, "runs") or False
    reveal = bool_query(request, "secrets") or False
    with svc.state.lock:
        jobs = [
            {
                "spec": spec_view(j.spec, reveal=reveal),
                "created_at": iso_ms(j.created_ms),
                "last_slot_at": iso_ms(j.last_slot_ms),
                "next_fire_at": iso_ms(j.next_nominal_ms),
                "version": j.version,
            }
            for j in svc.state.jobs.values()
        ]
        runs = [run_view(r) for r in svc.state.runs.values()] if with_runs else None
        digest = svc.state.digest_hex()
    doc: dict[str, Any] = {
        "format": BACKUP_FORMAT,
        "version": BACKUP_VERSION,
        "raftsched": __version__,
        "created_at": iso_ms(svc.clock.now_ms()),
        "node": svc.node_id,
        "digest": digest,
        "redacted": not reveal,
        "jobs": jobs,
    }
    if runs is not None:
        doc["runs"] = runs
    return json_response(doc)


def _entries(svc: Services, body: Any) -> list[tuple[JobSpec, dict[str, Any]]]:
    schemas.validate("RestoreBody", body)
    if not isinstance(body, dict) or body.get("format") != BACKUP_FORMAT:
        raise ValidationError(f"not a {BACKUP_FORMAT} document", field="format")
    if body.get("version") != BACKUP_VERSION:
        raise ValidationError(f"unsupported backup version {quoted(body.get('version'))}", field="version")
    if not isinstance(body.get("jobs"), list):
        raise ValidationError("must be a list", field="jobs")
    out = []
    for i, item in enumerate(body["jobs"]):
        if not isinstance(item, dict):
            raise ValidationError("must be an object", field=f"jobs.{i}")
        try:
            spec = JobSpec.from_dict(item.get("spec"))
            triggers.check_schedule(spec.schedule)
            check_startable(spec.task)
        except ValidationError as exc:
            raise ValidationError(exc.message, field=f"jobs.{i}.spec.{exc.field}") from None
        with svc.state.lock:
            stored = svc.state.jobs.get(spec.id)
        spec = keep_stored(spec, stored.spec if stored is not None else None, f"jobs.{i}.spec")
        times = {
            key: parse_iso_ms(item[key], f"jobs.{i}.{key}") if item.get(key) else None
            for key in ("created_at", "last_slot_at", "next_fire_at")
        }
        out.append((spec, times))
    return out


def _plan(svc: Services, entries: list[tuple[JobSpec, dict[str, Any]]]) -> dict[str, list[str]]:
    plan: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
    with svc.state.lock:
        for spec, _ in entries:
            old = svc.state.jobs.get(spec.id)
            key = "created" if old is None else "unchanged" if old.spec == spec else "updated"
            plan[key].append(spec.id)
    return plan


@routes.post("/v1/restore")
async def restore(request: web.Request) -> web.Response:
    svc = request.app[SERVICES]
    entries = _entries(svc, await read_json(request))
    plan = _plan(svc, entries)
    if bool_query(request, "dry_run"):
        return json_response({"dry_run": True, **plan})
    now_ms = svc.clock.now_ms()
    by_id = {spec.id: (spec, times) for spec, times in entries}
    fresh = [
        {
            "spec": by_id[jid][0].to_dict(),
            "created_ms": by_id[jid][1]["created_at"] or now_ms,
            "last_slot_ms": by_id[jid][1]["last_slot_at"],
            "next_nominal_ms": by_id[jid][1]["next_fire_at"],
        }
        for jid in plan["created"]
    ]
    if fresh:
        await svc.write(request, CommandType.RESTORE_JOBS, {"jobs": fresh}, part=":restore")
    for jid in plan["updated"]:
        spec = by_id[jid][0]
        with svc.state.lock:
            old = svc.state.jobs.get(jid)
        after = old.last_slot_ms if old is not None and old.last_slot_ms is not None else now_ms
        created = old.created_ms if old is not None else now_ms
        await svc.write(
            request,
            CommandType.PUT_JOB,
            {
                "spec": spec.to_dict(),
                "now_ms": now_ms,
                "mode": "put",
                "next_nominal_ms": triggers.next_fire_ms(spec.schedule, after, created_ms=created),
            },
            part=f":{jid}",
        )
    return json_response({"dry_run": False, **plan})


def add_routes(app: web.Application) -> None:
    app.add_routes(routes)
