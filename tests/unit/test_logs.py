"""Structured logs: one JSON line per state transition, quiet by default."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from raftsched.commands import CommandType
from raftsched.logs import setup_logging
from raftsched.transitions import log_transition

from statekit import T0, Driver


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _transitions(driver: Driver) -> None:
    driver.state.listeners.append(log_transition)
    driver.boot()
    driver.add("j")
    driver.fire("j", T0 + 1000)
    driver.start("j@1800000001000")
    driver.finish("j@1800000001000", outcome="failed")


def test_json_lines_name_job_run_node_and_term(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("info", "json", "n1")
    _transitions(Driver())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    by_msg = {line["msg"]: line for line in lines}
    fired = by_msg["run fired: j@1800000001000"]
    assert (fired["job"], fired["run"], fired["term"], fired["level"]) == ("j", "j@1800000001000", 1, "info")
    assert by_msg["run started: j@1800000001000"]["node"] == "n2"
    assert "run failed: j@1800000001000" in by_msg
    assert "term 1 begins, leader n1" in by_msg
    assert all(line["ts"].endswith("Z") for line in lines)


def test_quiet_by_default(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning", "text", "n1")
    _transitions(Driver())
    assert capsys.readouterr().err == ""


def _batch(driver: Driver) -> None:
    """Five runs fired in one command, then started and finished (two failed) in one report each."""
    driver.state.listeners.append(log_transition)
    driver.boot()
    for k in range(5):
        driver.add(f"j{k}")
    fires = [
        {
            "job_id": f"j{k}",
            "incarnation": k + 1,
            "nominal_ms": T0 + 1000,
            "due_ms": T0 + 1000,
            "nodes": ["n2"],
        }
        for k in range(5)
    ]
    driver.cmd(CommandType.FIRE_RUNS, term=1, now_ms=T0, fires=fires, skips=[])
    items = [{"run_id": f"j{k}@{T0 + 1000}", "attempt": 1} for k in range(5)]
    driver.cmd(CommandType.START_RUNS, node="n2", now_ms=T0, items=[{**i, "started_ms": T0} for i in items])
    outcomes = ["succeeded", "failed", "succeeded", "failed", "succeeded"]
    finished = [{**i, "outcome": o, "finished_ms": T0} for i, o in zip(items, outcomes, strict=True)]
    driver.cmd(CommandType.FINISH_RUNS, node="n2", now_ms=T0, items=finished)


def test_info_logs_one_line_per_command_of_many_runs(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging("info", "json", "n1")
    _batch(Driver())
    msgs = [json.loads(line)["msg"] for line in capsys.readouterr().err.splitlines()]
    runs = [m for m in msgs if " runs " in m or m.startswith("run ")]
    first = ", ".join(f"j{k}@{T0 + 1000}" for k in range(3))
    assert runs == [
        f"5 runs fired: {first}, +2 more",
        f"5 runs started: {first}, +2 more",
        f"5 runs finished (3 succeeded, 2 failed): {first}, +2 more",
    ]


def test_debug_adds_the_line_per_run(restore_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "json", "n1")
    _batch(Driver())
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    per_run = [
        line for line in lines if line["level"] == "debug" and line.get("logger") == "raftsched.transitions"
    ]
    assert len(per_run) == 15
    failed = [line["run"] for line in per_run if line["msg"].startswith("run failed: ")]
    assert failed == [f"j1@{T0 + 1000}", f"j3@{T0 + 1000}"]
    assert {line["job"] for line in per_run} == {f"j{k}" for k in range(5)}
