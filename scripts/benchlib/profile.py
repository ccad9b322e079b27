"""Profiles of live node processes (py-spy, sampling, from outside) and summaries of them.

py-spy attaches by PID, needs no change to the node and samples every thread (the asyncio loop
and PySyncObj's tick thread apart). `--nonblocking` keeps it from pausing the node; it still
costs some CPU of its own on a 2-core machine, so the bench profiles after a measured window,
never during one. The raw output is collapsed stacks ("thread;frame;frame count"), kept next
to the JSON; the summary gives, per thread, the share of wall time each function was on the
stack (inclusive) or running itself (self).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

RATE = 100  # samples per second


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"  # the venv's, when its bin/ is not on PATH
    return str(beside) if beside.exists() else shutil.which("py-spy")


def record(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, Path]:
    """Sample each process for `seconds`, concurrently; returns the raw file of each that worked."""
    exe = py_spy()
    if exe is None:
        return {}
    procs, files = {}, {}
    for name, pid in pids.items():
        path = out_dir / f"pyspy-{name}.txt"
        files[name] = path
        procs[name] = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(int(seconds)),
                "--rate",
                str(RATE),
                "--format",
                "raw",
                "--threads",
                "--function",
                "--nonblocking",
                "-o",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    done = {}
    for name, proc in procs.items():
        try:
            proc.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if files[name].exists() and files[name].stat().st_size:
            done[name] = files[name]
    return done


_FRAME = re.compile(r"^(?P<fn>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame(raw: str) -> str:
    m = _FRAME.match(raw.strip())
    if not m:
        return raw.strip()
    path = m["file"]
    for marker in ("site-packages/", "raftsched/", "lib/python3"):
        if marker in path:
            path = path[path.index(marker) :].replace("site-packages/", "")
            break
    return f"{m['fn']} ({path})"


def _thread(raw: str) -> str:
    """py-spy's first frame with `--threads` is `thread (<tid>): <name>`: keep the name."""
    return raw.rpartition("): ")[2].strip() or raw.strip() or "?"


def summarize(path: Path, seconds: float, top: int = 15) -> dict[str, Any]:
    """Per thread: samples, CPU share of one core, and the top functions (inclusive and self)."""
    inclusive: dict[str, Counter[str]] = defaultdict(Counter)
    self_time: dict[str, Counter[str]] = defaultdict(Counter)
    samples: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = _thread(frames[0])
        funcs = [_frame(f) for f in frames[1:]]
        samples[thread] += count
        for fn in set(funcs):
            inclusive[thread][fn] += count
        if funcs:
            self_time[thread][funcs[-1]] += count
    possible = seconds * RATE
    out: dict[str, Any] = {}
    for thread, n in samples.most_common():
        out[thread] = {
            "samples": n,
            "cpu_pct_of_core": round(100 * n / possible, 1),
            # the trunk (runpy, the loop's run_forever, Thread.run...) is on every sample: leave it out
            "inclusive": [
                [fn, round(100 * c / n, 1)] for fn, c in inclusive[thread].most_common() if c < 0.9 * n
            ][:top],
            "self": [[fn, round(100 * c / n, 1)] for fn, c in self_time[thread].most_common(top)],
        }
    return out


def render(name: str, summary: dict[str, Any], top: int = 10) -> str:
    lines = [f"profile of {name} (py-spy, % of the thread's samples)"]
    for thread, data in summary.items():
        lines.append(f"  thread {thread}: {data['samples']} samples, ~{data['cpu_pct_of_core']}% of a core")
        lines.append("    inclusive:")
        lines += [f"      {share:5.1f}%  {fn}" for fn, share in data["inclusive"][:top]]
        lines.append("    self:")
        lines += [f"      {share:5.1f}%  {fn}" for fn, share in data["self"][:top]]
    return "\n".join(lines)
