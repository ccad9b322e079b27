"""Write a golden command log for the replay test: golden_v1.jsonl covers every command type of
version 1, golden_v2.jsonl every command and form that version 2 added.

Run once per command version; never regenerate an existing golden file (old logs must keep
replaying to the same digest forever). `python tests/data/make_golden.py OUT [1|2|handback|alerts]`:
the first release's log, version 2's, the commands of fast death detection and clean stops, or
the alert commands.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from raftsched.commands import CommandType  # noqa: E402

from statekit import T0, Driver, job_spec  # noqa: E402


def scenario() -> Driver:
    d = Driver()
    d.boot()
    d.add("a", overlap="allow", retries={"max": 1, "initial_delay": 1, "jitter": 0.5})
    d.add("b", delivery="at_most_once", schedule={"cron": "*/5 * * * * *", "timezone": "Europe/Berlin"})
    d.add("q", overlap="queue")
    for k in (1, 2, 3):
        d.fire("a", T0 + k * 1000)
        d.fire("q", T0 + k * 1000)
    d.fire("b", T0 + 5000)
    d.cmd(
        CommandType.CLAIM_RUNS,
        node="n2",
        now_ms=T0 + 4000,
        items=[{"run_id": "b@1800000005000", "attempt": 1}],
    )
    d.start("b@1800000005000", at=T0 + 5001)
    d.start("a@1800000001000", at=T0 + 1002)
    d.finish("a@1800000001000", outcome="failed", at=T0 + 1100)
    d.finish("q@1800000001000", at=T0 + 1200)
    d.cmd(CommandType.SET_NODE, term=1, node="n2", up=False, now_ms=T0 + 6000)
    d.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=T0 + 6000,
        moves=[
            {"run_id": "b@1800000005000", "attempt": 1, "node": "n3"},
            {"run_id": "a@1800000002000", "attempt": 1, "node": "n3"},
        ],
    )
    d.cmd(CommandType.BEGIN_TERM, term=2, leader="n3", now_ms=T0 + 7000)
    d.fire("a", T0 + 4000, term=1)  # stale term: rejected
    d.cmd(
        CommandType.FIRE_RUNS,
        term=2,
        now_ms=T0 + 9000,
        fires=[],
        skips=[
            {
                "job_id": "a",
                "incarnation": 1,
                "state": "missed",
                "nominal_ms": T0 + 4000,
                "until_ms": T0 + 8000,
                "count": 5,
                "reason": "coalesced",
                "next_nominal_ms": T0 + 9000,
            }
        ],
    )
    d.cmd(CommandType.TRIGGER_JOB, job_id="a", now_ms=T0 + 9500, node="n1", env={"X": "1"}, kwargs=None)
    d.cmd(CommandType.CANCEL_RUN, run_id="a@manual-1800000009500", now_ms=T0 + 9600, actor="test")
    d.cmd(CommandType.PAUSE_JOB, job_id="q", now_ms=T0 + 9700)
    d.cmd(
        CommandType.RESUME_JOB,
        job_id="q",
        now_ms=T0 + 12000,
        next_nominal_ms=T0 + 13000,
        skipped={"from_ms": T0 + 10000, "until_ms": T0 + 12000, "count": 3},
    )
    d.cmd(
        CommandType.PUT_JOB,
        rid="idem:k1",
        spec={"id": "a", "schedule": {"every": 2}, "task": {"type": "shell", "command": ["true"]}},
        now_ms=T0 + 12500,
        mode="put",
        if_version=1,
        fp="f",
    )
    d.cmd(CommandType.PUT_JOB, rid="idem:k1", spec={}, now_ms=T0 + 12600, mode="put", fp="f")
    d.cmd(CommandType.DELETE_JOB, job_id="b", now_ms=T0 + 13000)
    d.cmd(CommandType.NOOP, now_ms=T0 + 13100)
    d.state.apply(b"not json")
    d.log.append(b"not json")
    return d


def scenario_v2() -> Driver:
    """Version 2: the cluster's version, the committed clock, paused ranges recorded by the leader
    and by resume, edit and delete, and what the state refuses."""
    d = Driver()
    d.boot()
    d.add("p", overlap="forbid")
    d.add("e", overlap="queue", delivery="at_most_once")
    d.cmd(CommandType.ACCOUNT_PAUSED, v=2, term=1, now_ms=T0 + 500, items=[])  # refused: version 1
    d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0 + 500, version=2)  # refused: not published
    for node in ("n1", "n2", "n3"):
        d.cmd(
            CommandType.REGISTER_NODE,
            node=node,
            http=f"http://{node}",
            raft=f"{node}:1",
            commands=2,
            now_ms=T0,
        )
    d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0 + 600, version=2)
    d.fire("p", T0 + 1000)
    d.fire("e", T0 + 1000)
    d.cmd(CommandType.PAUSE_JOB, job_id="p", now_ms=T0 + 2500)  # T0+2s was never fired: missed
    item = {"job_id": "p", "incarnation": 1, "version": 2, "after_ms": T0 + 1000}
    d.cmd(
        CommandType.ACCOUNT_PAUSED,
        term=1,
        now_ms=T0 + 6000,
        items=[
            {**item, "from_ms": T0 + 2000, "until_ms": T0 + 2000, "count": 1},
            {**item, "after_ms": T0 + 2000, "from_ms": T0 + 3000, "until_ms": T0 + 6000, "count": 4},
            {**item, "from_ms": T0 + 2000, "until_ms": T0 + 2000, "count": 1},  # refused: stale
        ],
    )
    stale = [{**item, "after_ms": T0 + 2000, "from_ms": T0 + 3000, "until_ms": T0 + 8000, "count": 6}]
    d.cmd(
        CommandType.RESUME_JOB,
        v=2,
        rid="idem:r",
        job_id="p",
        now_ms=T0 + 8500,
        next_nominal_ms=T0 + 9000,
        accounted=stale,
    )
    fresh = [{**item, "after_ms": T0 + 6000, "from_ms": T0 + 7000, "until_ms": T0 + 8000, "count": 2}]
    d.cmd(
        CommandType.RESUME_JOB,
        v=2,
        rid="idem:r",
        job_id="p",
        now_ms=T0 + 8500,
        next_nominal_ms=T0 + 9000,
        accounted=fresh,
    )
    d.start("e@1800000001000", at=T0 + 1000)
    overtaken = {"job_id": "e", "incarnation": 2, "version": 1, "after_ms": T0 + 1000}
    d.cmd(
        CommandType.PUT_JOB,
        v=2,
        spec=job_spec("e", overlap="queue", delivery="at_most_once", schedule={"every": 5}),
        now_ms=T0 + 3200,
        mode="put",
        next_nominal_ms=T0 + 5000,
        accounted=[{**overtaken, "from_ms": T0 + 2000, "until_ms": T0 + 3000, "count": 2}],
    )
    d.cmd(CommandType.PAUSE_JOB, job_id="e", now_ms=T0 + 9000)
    ranged = {"job_id": "e", "incarnation": 2, "version": 3, "after_ms": T0 + 3200}
    d.cmd(
        CommandType.PUT_JOB,
        v=2,
        spec=job_spec("e", overlap="queue", delivery="at_most_once", schedule={"every": 5}, paused=False),
        now_ms=T0 + 16_000,
        mode="put",
        next_nominal_ms=T0 + 20_000,
        accounted=[
            {**ranged, "from_ms": T0 + 5000, "until_ms": T0 + 5000, "count": 1},  # before the pause
            {**ranged, "after_ms": T0 + 5000, "from_ms": T0 + 10_000, "until_ms": T0 + 15_000, "count": 2},
        ],
    )
    d.cmd(CommandType.PAUSE_JOB, job_id="p", now_ms=T0 + 9100)
    gone = {"job_id": "p", "incarnation": 1, "version": 4}
    d.cmd(
        CommandType.DELETE_JOB,
        v=2,
        job_id="p",
        now_ms=T0 + 12_000,
        accounted=[
            {**gone, "after_ms": T0 + 8500, "from_ms": T0 + 9000, "until_ms": T0 + 9000, "count": 1},
            {**gone, "after_ms": T0 + 9000, "from_ms": T0 + 10_000, "until_ms": T0 + 12_000, "count": 3},
        ],
    )
    d.cmd(CommandType.PAUSE_JOB, job_id="e", now_ms=T0 + 16_200)
    d.cmd(  # version 1 in a version 2 cluster: its own `skipped` range; `accounted` means nothing in it
        CommandType.RESUME_JOB,
        job_id="e",
        now_ms=T0 + 26_000,
        next_nominal_ms=T0 + 30_000,
        skipped={"from_ms": T0 + 20_000, "until_ms": T0 + 25_000, "count": 2},
        accounted=[{"ignored": True}],
    )
    d.cmd(CommandType.NOOP, now_ms=T0 + 26_100)


def scenario_handback() -> Driver:
    """golden_v2_handback.jsonl: the commands added for fast death detection and clean stops
    (UNCLAIM_RUNS, EXPIRE_RUNS: version 2, so the cluster's version is raised first; a SET_NODE
    down with its reason)."""
    d = Driver()
    d.boot()
    for node in ("n1", "n2", "n3"):
        d.cmd(
            CommandType.REGISTER_NODE,
            node=node,
            http=f"http://{node}",
            raft=f"{node}:1",
            commands=2,
            now_ms=T0,
        )
    d.cmd(CommandType.SET_CLUSTER_VERSION, term=1, now_ms=T0 + 1, version=2)
    d.add("j", overlap="allow")
    d.add("k", delivery="at_most_once")
    d.fire("j", T0 + 1000)
    d.fire("k", T0 + 1000)
    d.fire("j", T0 + 2000, node="n3")
    d.cmd(
        CommandType.CLAIM_RUNS,
        node="n2",
        now_ms=T0 + 600,
        items=[{"run_id": "k@1800000001000", "attempt": 1}],
    )
    d.cmd(
        CommandType.UNCLAIM_RUNS,
        node="n2",
        now_ms=T0 + 700,
        actor="shutdown",
        items=[{"run_id": "k@1800000001000", "attempt": 1}, {"run_id": "j@1800000001000", "attempt": 2}],
    )
    d.cmd(
        CommandType.REASSIGN_RUNS,
        term=1,
        now_ms=T0 + 800,
        moves=[{"run_id": "k@1800000001000", "attempt": 1, "node": "n3"}],
    )
    d.cmd(CommandType.SET_NODE, term=1, node="n3", up=False, now_ms=T0 + 900, reason="refused connections")
    d.cmd(
        CommandType.EXPIRE_RUNS,
        term=1,
        now_ms=T0 + 70_000,
        items=[
            {"run_id": "j@1800000002000", "attempt": 1, "reason": "not started within its misfire grace"},
            {"run_id": "j@1800000001000", "attempt": 2, "reason": "wrong attempt: left alone"},
        ],
    )
    d.cmd(CommandType.EXPIRE_RUNS, term=0, now_ms=T0 + 70_000, items=[])  # stale term: rejected
    return d


def scenario_alerts() -> Driver:
    """golden_v2_alerts.jsonl: the alert commands (version 2): channels, the cluster's rules, a job's
    notify rule, events noted by finishes, skips and a node down, the leader's decisions (one
    refused for its cursor, one for its term), delivery reports (one fenced off) and a delete."""
    d = Driver()
    d.boot(version=2)
    hook = {
        "name": "ops",
        "type": "webhook",
        "url": "http://127.0.0.1:9/h",
        "signing_secret": {"secret": "K"},
    }
    d.cmd(CommandType.PUT_CHANNEL, name="ops", channel={**hook, "group_window_s": 10}, now_ms=T0)
    mail = {"name": "mail", "type": "email", "smtp": "localhost:25", "from": "a@b", "to": ["c@d"]}
    d.cmd(CommandType.PUT_CHANNEL, name="mail", channel=mail, now_ms=T0)
    rules = [{"on": ["node_down"], "channel": "mail"}, {"on": ["late"], "channel": "ops", "threshold_s": 1}]
    d.cmd(CommandType.SET_ALERT_RULES, rules=rules, cluster="golden", now_ms=T0)
    d.add("f", overlap="allow", notify=[{"on": ["failed", "skipped"], "channel": "ops"}])
    for k in (1, 2, 3):
        d.fire("f", T0 + k * 1000)
        d.finish(f"f@{T0 + k * 1000}", outcome="failed", at=T0 + k * 1000 + 5, error="exit 1")
    d.start("f@1800000001000", at=T0 + 3000)  # already failed: no start, no late event
    d.cmd(CommandType.SET_NODE, term=1, node="n3", up=False, now_ms=T0 + 3500, reason="refused connections")
    first = {
        "alert_id": "a1",
        "channel": "ops",
        "event": "run.failed",
        "at_ms": T0 + 1005,
        "decided_ms": T0 + 4000,
        "job_id": "f",
        "run_id": "f@1800000001000",
        "run_attempt": 1,
        "state": "failed",
        "error": "exit 1",
        "scheduled_ms": T0 + 1000,
        "node": "n1",
        "due_ms": T0 + 4000,
    }
    group = {"first": {**first, "alert_id": "a2"}, "count": 2, "summary": {"run.failed": 2}}
    decision = {
        "now_ms": T0 + 4000,
        "after_seq": 0,
        "through_seq": 4,
        "alerts": [first],
        "throttle": {"ops": {"next_ms": T0 + 14_000, "group": group}},
        "moves": [],
    }
    d.cmd(CommandType.RAISE_ALERTS, term=0, **decision)  # a deposed leader: refused
    d.cmd(CommandType.RAISE_ALERTS, term=1, **decision)
    d.cmd(CommandType.RAISE_ALERTS, term=1, **decision)  # the same events again: refused (cursor)
    item = {"alert_id": "a1", "attempt": 1}
    d.cmd(CommandType.REPORT_ALERTS, node="n2", now_ms=T0 + 4100, items=[{**item, "ok": True}])  # fenced off
    d.cmd(
        CommandType.REPORT_ALERTS, node="n1", now_ms=T0 + 4100, items=[{**item, "ok": False, "error": "500"}]
    )
    d.cmd(
        CommandType.RAISE_ALERTS,
        term=1,
        now_ms=T0 + 4200,
        after_seq=4,
        through_seq=4,
        alerts=[],
        throttle={},
        moves=[{"alert_id": "a1", "attempt": 2, "node": "n2"}],
    )
    d.cmd(CommandType.REPORT_ALERTS, node="n2", now_ms=T0 + 5200, items=[{**item, "attempt": 2, "ok": True}])
    d.cmd(CommandType.DELETE_CHANNEL, name="mail", now_ms=T0 + 6000)
    return d


if __name__ == "__main__":
    scenarios = {"2": scenario_v2, "handback": scenario_handback, "alerts": scenario_alerts}
    driver = scenarios.get(sys.argv[2] if sys.argv[2:] else "", scenario)()
    Path(sys.argv[1]).write_bytes(b"\n".join(driver.log) + b"\n")
    print(driver.state.digest_hex())
