"""Structured logs: one JSON line per state transition, quiet by default."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

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
