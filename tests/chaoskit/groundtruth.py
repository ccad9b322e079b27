"""Ground truth: what really ran, recorded outside the scheduler.

Shell tasks run `gt_task.py` (one fsynced JSON line per start and end, per node); HTTP tasks call
the `Sink` of tests/cluster.py, which records the `X-Raftsched-*` headers. `executions()` turns
both into one list of `Execution` records, the checkers' view of reality.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

TASK = Path(__file__).with_name("gt_task.py")

__all__ = ["TASK", "Execution", "executions", "read_events", "shell_task", "sink_executions"]


def shell_task(gt_dir: Path, sleep_s: float = 0.0, exit_code: int = 0) -> dict[str, Any]:
    """A job's `task`: the ground-truth script as an argv list (no shell needed on the node)."""
    argv = [sys.executable, "-S", str(TASK), str(gt_dir), f"{sleep_s:g}"]  # -S: no site, a faster start
    if exit_code:
        argv.append(str(exit_code))
    return {"type": "shell", "command": argv}


@dataclass(slots=True)
class Execution:
    """One execution of one (run, attempt) on one node, as the task itself recorded it."""

    run_id: str
    job: str
    slot: int | None  # nominal ms; None for a manual run
    node: str
    attempt: int
    pid: int
    start_mono: float
    start_wall_ms: float
    end_mono: float | None = None
    end_wall_ms: float | None = None
    rc: int | None = None
    signal: int | None = None
    source: str = "shell"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Execution:
        return cls(**d)


def read_events(gt_dir: Path) -> list[dict[str, Any]]:
    """Every line of every node's file; a torn last line (a crash mid-write) is skipped."""
    events: list[dict[str, Any]] = []
    for path in sorted(gt_dir.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


def executions(events: list[dict[str, Any]]) -> list[Execution]:
    """Pair start and end lines by (node, pid): one record per execution, sorted by start."""
    out: dict[tuple[str, int], Execution] = {}
    ends: dict[tuple[str, int], dict[str, Any]] = {}
    for e in events:
        key = (str(e.get("node")), int(e.get("pid", 0)))
        if e.get("ev") == "start":
            out[key] = Execution(
                run_id=e["run_id"],
                job=e["job"],
                slot=e.get("slot"),
                node=e["node"],
                attempt=int(e["attempt"]),
                pid=int(e["pid"]),
                start_mono=float(e["mono"]),
                start_wall_ms=float(e["wall_ms"]),
            )
        elif e.get("ev") == "end":
            ends[key] = e
    for key, e in ends.items():
        ex = out.get(key)
        if ex is not None and float(e["mono"]) >= ex.start_mono:
            ex.end_mono, ex.end_wall_ms = float(e["mono"]), float(e["wall_ms"])
            ex.rc, ex.signal = e.get("rc"), e.get("signal")
    return sorted(out.values(), key=lambda x: x.start_mono)


def _ms(iso: str) -> int | None:
    if not iso:
        return None
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def sink_executions(events: list[dict[str, Any]], wall_minus_mono: float | None = None) -> list[Execution]:
    """The Sink's records as executions (an HTTP call is instantaneous: start == end)."""
    offset = time.time() - time.monotonic() if wall_minus_mono is None else wall_minus_mono
    out = []
    for i, e in enumerate(events):
        run_id = e.get("x-raftsched-run-id", "")
        if not run_id:
            continue
        mono = float(e["t"]) - offset
        out.append(
            Execution(
                run_id=run_id,
                job=e.get("x-raftsched-job-id", ""),
                slot=None if "@manual-" in run_id else _ms(e.get("x-raftsched-scheduled-at", "")),
                node=e.get("x-raftsched-node", ""),
                attempt=int(e.get("x-raftsched-attempt", "0") or 0),
                pid=-(i + 1),
                start_mono=mono,
                start_wall_ms=float(e["t"]) * 1000,
                end_mono=mono,
                end_wall_ms=float(e["t"]) * 1000,
                rc=0,
                source="http",
            )
        )
    return out
