"""scripts/chaos.py's campaign bookkeeping: seed ranges, resuming, and the summary table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "chaos.py"


@pytest.fixture(scope="module")
def chaos() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chaos_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def report(seed: int, **extra: Any) -> dict[str, Any]:
    return {
        "seed": seed,
        "nodes": 3,
        "duration_s": 60.0,
        "slots_due": 100,
        "executed": 120,
        "duplicate_executions": 2,
        "lost": 0,
        "missed": 1,
        "skipped": 4,
        "lost_writes": 0,
        "violations": {"1 no lost fire": 0, "7 no lost acknowledged write": 0},
        **extra,
    }


def test_seed_ranges_include_both_ends(chaos: ModuleType) -> None:
    assert chaos.parse_seeds("3..5") == [3, 4, 5]
    assert chaos.parse_seeds("7") == [7]
    with pytest.raises(ValueError):
        chaos.parse_seeds("5..3")


def test_a_seed_is_done_only_with_a_verdict(chaos: ModuleType, tmp_path: Path) -> None:
    done, failed = tmp_path / "seed-1.json", tmp_path / "seed-2.json"
    done.write_text(json.dumps(report(1)))
    failed.write_text(json.dumps({"seed": 2, "error": "RuntimeError('no leader')"}))
    assert chaos._done(done)
    assert not chaos._done(failed)  # a run that failed is run again
    assert not chaos._done(tmp_path / "seed-3.json")


def test_the_summary_is_rebuilt_from_every_report_with_totals(chaos: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "seed-10.json").write_text(json.dumps(report(10, size=3, nodes=4)))  # a spare joined
    bad = report(9, lost_writes=1, violations={"1 no lost fire": 0, "7 no lost acknowledged write": 2})
    (tmp_path / "seed-9.json").write_text(json.dumps(bad))
    (tmp_path / "seed-11.json").write_text(json.dumps({"seed": 11, "nodes": 3, "error": "x"}))
    (tmp_path / "seed-9.history.json").write_text("{}")  # not a report
    lines = chaos.summary(tmp_path).splitlines()
    assert lines[0].startswith("| seed | nodes | duration s | slots due | runs | duplicates | lost |")
    assert [line.split("|")[1].strip() for line in lines[2:]] == ["9", "10", "11", "total (3 seeds)"]
    assert "inv 7 x2" in lines[2] and "RUN FAILED" in lines[4]
    assert lines[3].split("|")[2].strip() == "3+1"
    assert lines[-1].split("|")[4:10] == [" 200 ", " 240 ", " 4 ", " 0 ", " 2 / 8 ", " 1 "]
    assert "1 seeds with violations, 1 runs failed" in lines[-1]
