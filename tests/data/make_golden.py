"""Write golden_v1.jsonl: a command log covering every command type, for the replay test.

Run once per command version; never regenerate an existing golden file (old logs must keep
replaying to the same digest forever). `python tests/data/make_golden.py OUT`; with `handback`
after OUT, the log of the commands added later (golden_v1_handback.jsonl).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))

from raftsched.commands import CommandType  # noqa: E402

from statekit import T0, Driver  # noqa: E402


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


def scenario_handback() -> Driver:
    """golden_v1_handback.jsonl: the commands added for fast death detection and clean stops
    (UNCLAIM_RUNS, EXPIRE_RUNS, a SET_NODE down with its reason)."""
    d = Driver()
    d.boot()
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


if __name__ == "__main__":
    driver = scenario_handback() if sys.argv[2:] == ["handback"] else scenario()
    Path(sys.argv[1]).write_bytes(b"\n".join(driver.log) + b"\n")
    print(driver.state.digest_hex())
