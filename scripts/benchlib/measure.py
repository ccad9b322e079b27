"""Measurement helpers: child processes, /proc figures, percentiles, lateness, tables."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# ---------------------------------------------------------------- processes


def start_module(module: str, args: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    """`python -m benchlib.<module> args`, with scripts/ on the path, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", f"benchlib.{module}", *args],
            stdout=subprocess.PIPE,
            stderr=out,
            env={**os.environ, "PYTHONPATH": str(SCRIPTS), "PYTHONUNBUFFERED": "1"},
        )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop one process we started, by its PID: SIGTERM, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def read_line(proc: subprocess.Popen[bytes], prefix: str, timeout: float = 60) -> str:
    """The first stdout line of `proc` that starts with `prefix` (its rest, stripped)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            raise RuntimeError(f"process {proc.pid} exited before printing {prefix!r}")
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise TimeoutError(f"no {prefix!r} from process {proc.pid}")


@dataclass
class ProcSample:
    pid: int
    cpu_s: float
    at: float
    wait_s: float | None = None  # the main thread's time runnable but not on a CPU (schedstat)

    @classmethod
    def take(cls, pid: int) -> ProcSample | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return cls(pid, (int(fields[11]) + int(fields[12])) / CLK_TCK, time.monotonic(), _run_delay_s(pid))


def _run_delay_s(pid: int) -> float | None:
    """The run-queue wait of the process's main thread (for a node: its asyncio loop), from
    /proc/PID/task/PID/schedstat (on CPU ns, waiting ns, slices); None without schedstats."""
    try:
        return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def wait_percent(before: ProcSample | None, after: ProcSample | None) -> float | None:
    """Share of the wall time the main thread was ready to run and waited for a core."""
    return _percent_of_wall(before, after, "wait_s")


def rss_mb(pid: int) -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return None
    return round(pages * PAGE / 2**20, 1)


def cpu_percent(before: ProcSample | None, after: ProcSample | None) -> float | None:
    return _percent_of_wall(before, after, "cpu_s")


def _percent_of_wall(before: ProcSample | None, after: ProcSample | None, field: str) -> float | None:
    """How much of a seconds counter (`field`) grew, as a share of the wall time between samples."""
    if before is None or after is None or after.at <= before.at:
        return None
    start, end = getattr(before, field), getattr(after, field)
    if start is None or end is None:
        return None
    return round(100 * (end - start) / (after.at - before.at), 1)


def _machine() -> tuple[int, int]:
    parts = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return sum(parts), parts[3] + parts[4]


@dataclass
class CpuWatch:
    """CPU % and RSS of a set of named processes over a window, and what the rest of the machine
    used meanwhile (`others_cores`: other engineers' tests share these 2 cores)."""

    pids: dict[str, int]
    before: dict[str, ProcSample | None] = field(default_factory=dict)
    machine: tuple[int, int] = (0, 0)

    def start(self) -> CpuWatch:
        self.before = {name: ProcSample.take(pid) for name, pid in self.pids.items()}
        self.machine = _machine()
        return self

    def stop(self) -> dict[str, dict[str, float | None]]:
        out: dict[str, dict[str, float | None]] = {}
        for name, pid in self.pids.items():
            before, after = self.before.get(name), ProcSample.take(pid)
            out[name] = {
                "cpu_pct": cpu_percent(before, after),
                "rss_mb": rss_mb(pid),
                "wait_pct": wait_percent(before, after),
            }
        total, idle = _machine()
        dt, di = total - self.machine[0], idle - self.machine[1]
        busy = (os.cpu_count() or 1) * (1 - di / dt) if dt > 0 else 0.0
        ours = sum((v["cpu_pct"] or 0.0) for v in out.values()) / 100
        out["others"] = {"cores": round(max(0.0, busy - ours), 2), "machine_busy_cores": round(busy, 2)}
        return out


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def busy_other_cpu(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time (in cores) busy over `seconds`, from /proc/stat."""

    def sample() -> tuple[int, int]:
        parts = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    cores = os.cpu_count() or 1
    return round(cores * (1 - (idle1 - idle0) / max(1, total1 - total0)), 2)


# ---------------------------------------------------------------- statistics


def pct(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of sorted `values`."""
    if not values:
        return None
    idx = min(len(values) - 1, max(0, int(round(q * len(values) + 0.5)) - 1))
    return values[idx]


def dist(values: Iterable[float]) -> dict[str, float | int | None]:
    data = sorted(values)
    r = _round
    return {
        "n": len(data),
        "p50": r(pct(data, 0.50)),
        "p99": r(pct(data, 0.99)),
        "max": r(data[-1] if data else None),
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 2)


# ---------------------------------------------------------------- ground truth


@dataclass(frozen=True)
class Event:
    t_ms: float  # arrival at the sink, epoch ms
    job: str
    due_ms: int
    attempt: str
    node: str


def parse_events(raw: list[list[Any]]) -> list[Event]:
    out = []
    for t_ns, run_id, attempt, node in raw:
        job, _, due = run_id.rpartition("@")
        if not due.isdigit():
            continue
        out.append(Event(t_ns / 1e6, job, int(due), attempt, node))
    return out


def save_events(events: list[Event], path: Path) -> None:
    with path.open("w") as f:
        for e in events:
            f.write(json.dumps(dataclasses.astuple(e)) + "\n")


def lateness_report(events: list[Event], window: tuple[int, int], expected: int) -> dict[str, Any]:
    """Ground truth over the runs due in [window): lateness, runs/s, missed, duplicates."""
    lo, hi = window
    inside = [e for e in events if lo <= e.due_ms < hi]
    slots = {(e.job, e.due_ms) for e in inside}
    seconds = (hi - lo) / 1000
    arrived = [e for e in events if lo <= e.t_ms < hi]
    return {
        "lateness_ms": dist(e.t_ms - e.due_ms for e in inside),
        "expected_runs": expected,
        "runs": len(inside),
        "missed": max(0, expected - len(slots)),
        "duplicates": len(inside) - len(slots),
        "runs_per_s": round(len(arrived) / seconds, 1),
        "expected_runs_per_s": round(expected / seconds, 1),
        "by_node": {
            node: dist(e.t_ms - e.due_ms for e in inside if e.node == node)
            for node in sorted({e.node for e in inside})
        },
        "late_timeline": late_timeline(inside),
    }


def late_timeline(events: list[Event], late_ms: float = 10.0, bucket_ms: int = 100) -> list[list[Any]]:
    """When the late runs were due: [bucket start (ms into the window), late runs, worst ms, nodes].

    Late runs that bunch in a few buckets point at a stall (a pause of one process: GC, a long
    callback, a held lock); late runs spread evenly point at a steady shortage of CPU.
    """
    if not events:
        return []
    lo = min(e.due_ms for e in events)
    buckets: dict[int, list[Event]] = {}
    for e in events:
        if e.t_ms - e.due_ms > late_ms:
            buckets.setdefault((e.due_ms - lo) // bucket_ms * bucket_ms, []).append(e)
    return [
        [start, len(late), round(max(e.t_ms - e.due_ms for e in late), 1), sorted({e.node for e in late})]
        for start, late in sorted(buckets.items())
    ]


def http_json(url: str, method: str = "GET", body: Any = None, timeout: float = 30) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", "Connection": "close"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None


# ---------------------------------------------------------------- tables


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[_cell(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend(
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".") or "0"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def ratio(value: float | None, base: float | None) -> str | None:
    """`value / base` as `1.3x`, for figures printed next to a reference."""
    if value is None or base is None or base == 0:
        return None
    return f"{value / base:.2f}x"
