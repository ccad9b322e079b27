"""One log line per state transition, with job, run, node and term as structured fields.

Registered as a state listener: it runs on the Raft tick thread right after an entry is
applied, so it does nothing unless INFO is enabled (the default level is WARNING).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .commands import Command, CommandType
from .ids import split_run_id

__all__ = ["log_transition"]

log = logging.getLogger("raftsched.transitions")
Body = dict[str, Any]


def log_transition(cmd: Command, result: Body) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    if not result.get("ok"):
        if result.get("code") != "stale_term":
            log.info("%s refused: %s", cmd.type.value, result.get("message"))
        return
    describe = _DESCRIBE.get(cmd.type)
    if describe is not None:
        describe(cmd.body, result)


def _run(what: str, rid: str, *, term: Any = None, node: Any = None) -> None:
    job, _ = split_run_id(rid)
    extra = {"job": job, "run": rid, "term": term, "node": node}
    log.info("%s: %s", what, rid, extra={k: v for k, v in extra.items() if v is not None})


def _fired(body: Body, result: Body) -> None:
    for rid in result.get("fired", ()):
        _run("run fired", rid, term=body.get("term"))
    for skip in body.get("skips", ()):
        log.info(
            "%s slot(s) of %s recorded %s: %s",
            skip.get("count"),
            skip.get("job_id"),
            skip.get("state"),
            skip.get("reason"),
            extra={"job": skip.get("job_id"), "term": body.get("term")},
        )


def _reported(verb: str | None) -> Callable[[Body, Body], None]:
    def describe(body: Body, result: Body) -> None:
        outcomes = {i.get("run_id"): i.get("outcome", "") for i in body.get("items", ())}
        for rid in result.get("accepted", ()):
            _run(verb or f"run {outcomes.get(rid)}", rid, node=body.get("node"))

    return describe


def _reassigned(body: Body, result: Body) -> None:
    for rid in result.get("moved", ()):
        _run("run reassigned", rid, term=body.get("term"))
    for rid in result.get("lost", ()):
        _run("run lost", rid, term=body.get("term"))


def _node(body: Body, result: Body) -> None:
    log.info(
        "node %s %s",
        body.get("node"),
        "up" if body.get("up") else "down",
        extra={"node": body.get("node"), "term": body.get("term")},
    )


def _term(body: Body, result: Body) -> None:
    log.info(
        "term %s begins, leader %s",
        body.get("term"),
        body.get("leader"),
        extra={"term": body.get("term"), "node": body.get("leader")},
    )


def _job(action: str) -> Callable[[Body, Body], None]:
    def describe(body: Body, result: Body) -> None:
        job = body.get("job_id") or (body.get("spec") or {}).get("id")
        log.info("job %s %s by %s", job, action, body.get("actor"), extra={"job": job})

    return describe


_DESCRIBE: dict[CommandType, Callable[[Body, Body], None]] = {
    CommandType.FIRE_RUNS: _fired,
    CommandType.CLAIM_RUNS: _reported("run claimed"),
    CommandType.START_RUNS: _reported("run started"),
    CommandType.FINISH_RUNS: _reported(None),
    CommandType.REASSIGN_RUNS: _reassigned,
    CommandType.SET_NODE: _node,
    CommandType.BEGIN_TERM: _term,
    CommandType.PUT_JOB: _job("saved"),
    CommandType.DELETE_JOB: _job("deleted"),
    CommandType.PAUSE_JOB: _job("paused"),
    CommandType.RESUME_JOB: _job("resumed"),
    CommandType.TRIGGER_JOB: _job("triggered"),
    CommandType.CANCEL_RUN: lambda body, _: _run("run cancelled", str(body.get("run_id"))),
}
