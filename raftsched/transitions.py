"""Log lines for state transitions, with job, run, node and term as structured fields.

Registered as a state listener: it runs on the Raft tick thread right after an entry is
applied, on every node, so it does nothing unless INFO is enabled (the default level is
WARNING). At INFO a command about runs logs one line (what happened, how many, the first
run ids); the line per run (`run fired: <run id>`, with its job and run fields) is at DEBUG.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from .commands import Command, CommandType
from .ids import split_run_id

__all__ = ["log_transition"]

log = logging.getLogger("raftsched.transitions")
Body = dict[str, Any]
FIRST_IDS = 3  # run ids named in a command's INFO line


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


def _run(what: str, rid: str, *, term: Any = None, node: Any = None, level: int = logging.INFO) -> None:
    job, _ = split_run_id(rid)
    extra = {"job": job, "run": rid, "term": term, "node": node}
    log.log(level, "%s: %s", what, rid, extra={k: v for k, v in extra.items() if v is not None})


def _runs(
    what: str, rids: list[str], *, term: Any = None, node: Any = None, each: Body | None = None
) -> None:
    """One INFO line for the runs of one command (for a single run, its own line with job and run
    fields), then a DEBUG line per run. `each`: a run's own word when it differs (its outcome)."""
    if not rids:
        return
    words = each or {}
    if len(rids) == 1:
        _run(f"run {words.get(rids[0], what)}", rids[0], term=term, node=node)
        return
    extra = {k: v for k, v in {"term": term, "node": node}.items() if v is not None}
    more = f", +{len(rids) - FIRST_IDS} more" if len(rids) > FIRST_IDS else ""
    log.info("%d runs %s: %s%s", len(rids), what, ", ".join(rids[:FIRST_IDS]), more, extra=extra)
    if log.isEnabledFor(logging.DEBUG):
        for rid in rids:
            _run(f"run {words.get(rid, what)}", rid, term=term, node=node, level=logging.DEBUG)


def _fired(body: Body, result: Body) -> None:
    term = body.get("term")
    _runs("fired", list(result.get("fired", ())), term=term)
    skips = body.get("skips", ())
    if len(skips) > 1:
        log.info("slots of %d jobs recorded missed or skipped", len(skips), extra={"term": term})
    level = logging.INFO if len(skips) == 1 else logging.DEBUG
    for skip in skips if log.isEnabledFor(level) else ():
        log.log(
            level,
            "%s slot(s) of %s recorded %s: %s",
            skip.get("count"),
            skip.get("job_id"),
            skip.get("state"),
            skip.get("reason"),
            extra={"job": skip.get("job_id"), "term": term},
        )


def _reported(what: str | None) -> Callable[[Body, Body], None]:
    """Worker reports; a finish names each run's outcome (`run failed: <id>`, `3 runs finished
    (2 succeeded, 1 failed): ...`)."""

    def describe(body: Body, result: Body) -> None:
        rids = list(result.get("accepted", ()))
        if what is not None:
            _runs(what, rids, node=body.get("node"))
            return
        outcomes = {i.get("run_id"): str(i.get("outcome", "")) for i in body.get("items", ())}
        counts = Counter(outcomes.get(rid) for rid in rids)
        summary = "finished (" + ", ".join(f"{n} {outcome}" for outcome, n in counts.items()) + ")"
        _runs(summary, rids, node=body.get("node"), each=outcomes)

    return describe


def _reassigned(body: Body, result: Body) -> None:
    _runs("reassigned", list(result.get("moved", ())), term=body.get("term"))
    _runs("lost", list(result.get("lost", ())), term=body.get("term"))


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
    CommandType.CLAIM_RUNS: _reported("claimed"),
    CommandType.START_RUNS: _reported("started"),
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
