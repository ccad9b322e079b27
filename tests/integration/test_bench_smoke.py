"""scripts/bench.py runs end to end and writes valid JSON (a smoke test: no timing is asserted).

`--smoke` is the bench at toy size: 50 jobs, a 3 s window, one leader kill, a few API calls, and
the peers that are installed (APScheduler only with the `bench` extra; the asyncio floor always).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"lateness_p99_ms", "peer_lateness_p99_ms", "runs_per_s", "missed", "failover_s"}


def test_bench_smoke_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    summary = json.loads(last)  # the script's last line is the summary, as one JSON line
    assert SUMMARY_KEYS <= summary.keys()
    results = json.loads(out.read_text())
    assert results["summary"] == summary
    assert {"meta", "sink", "spread", "failover", "api", "tables"} <= results.keys()
    spread = results["spread"]["50"]
    assert "raftsched" in spread and "floor" in spread
    for system in spread.values():
        assert {"lateness_ms", "runs_per_s", "expected_runs_per_s", "missed", "procs"} <= system.keys()
        assert {"n", "p50", "p99", "max"} <= system["lateness_ms"].keys()
    assert results["failover"]["kills"]
