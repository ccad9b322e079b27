"""The figures every chaos run reports (TESTING.md), computed from a History and the checkers."""

from __future__ import annotations

from typing import Any

from .checkers import History, Result, fault_windows, leader_times

__all__ = ["figures", "table"]

LEADER_FAULTS = ("kill", "stop", "pause", "isolate", "split", "partition")
# Runs that start late on purpose: queued or skipped by their overlap policy, or edited mid-flight
# (the churn and the slot races).
LATE_BY_DESIGN = ("ov-", "churn-", "race-")


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def _lateness(history: History) -> dict[str, dict[str, float | None]]:
    """Start minus slot (ms) of first attempts as the task itself saw it (so including the start
    of a Python process), steady and during faults (a fault's window from `lookahead_s` before
    it to 5 s after its end, on any node). Overlap and churn jobs are left out: late by design."""
    windows = [w for ws in fault_windows(history).values() for w in ws]
    wall_minus_mono = history.end_wall_ms / 1000 - history.end_mono
    steady: list[float] = []
    faulty: list[float] = []
    for ex in history.executions:
        if ex.slot is None or ex.attempt != 1 or ex.job.startswith(LATE_BY_DESIGN):
            continue
        late = ex.start_wall_ms - ex.slot
        slot_mono = ex.slot / 1000 - wall_minus_mono  # a slot is on node clocks: widened by their offset
        off = history.max_clock_offset_s
        hit = any(s - history.lookahead_s - off <= slot_mono <= e + 5 + off for s, e, _ in windows)
        (faulty if hit else steady).append(late)
    out = {}
    for name, values in (("steady", steady), ("faults", faulty), ("all", steady + faulty)):
        out[name] = {
            "n": len(values),
            "p50": _pct(values, 0.5),
            "p99": _pct(values, 0.99),
            "max": round(max(values), 1) if values else None,
        }
    return out


def _recorded_lateness(history: History) -> dict[str, float | None]:
    """The scheduler's own figure (started_ms - due_ms in the records of one node), first attempts,
    without the start of the task's process that the ground truth includes."""
    items = next(iter(history.records.values()), [])
    values = [
        r["lateness"] * 1000
        for r in items
        if r.get("lateness") is not None
        and r.get("attempt") == 1
        and not r["job_id"].startswith(LATE_BY_DESIGN)
    ]
    return {
        "n": len(values),
        "p50": _pct(values, 0.5),
        "p99": _pct(values, 0.99),
        "max": round(max(values), 1) if values else None,
    }


def _leader_at(history: History, t: float) -> str | None:
    best = None
    for s in history.samples:
        if s["mono"] > t:
            break
        if s.get("ok") and s.get("role") == "leader":
            best = s["node"]
    return best


def _failovers(history: History) -> list[dict[str, Any]]:
    """For each fault that hit the leader: time to a new leader, and to its next committed fire."""
    leaders = leader_times(history)
    created = sorted(
        c for items in history.records.values() for r in items if (c := _created_ms(r)) is not None
    )
    out = []
    for f in history.faults:
        if f["kind"] not in LEADER_FAULTS:
            continue
        hit = _fault_targets(f)
        old = _leader_at(history, f["mono"])
        if old is None or old not in hit:
            continue
        back = _recovered_at(history, hit, f["mono"])
        # A node the fault hit counts once it is back (after a full-cluster restart the old leader
        # may well lead again; waiting for another node measured the next fault instead).
        new = next(
            ((m, n) for m, n, _ in leaders if m > f["mono"] and (n not in hit or m > back.get(n, m))), None
        )
        fire = next((c for c in created if c > f["wall_ms"]), None)
        out.append(
            {
                "fault": f["kind"],
                "old_leader": old,
                "new_leader": new[1] if new else None,
                "new_leader_s": round(new[0] - f["mono"], 3) if new else None,
                "next_fire_s": round((fire - f["wall_ms"]) / 1000, 3) if fire else None,
            }
        )
    return out


def _recovered_at(history: History, nodes: set[str], after: float) -> dict[str, float]:
    """When each node was next started, resumed or healed after `after` (absent: not yet)."""
    out: dict[str, float] = {}
    for g in sorted(history.faults, key=lambda g: g["mono"]):
        if g["mono"] <= after or g["kind"] not in ("start", "resume", "heal"):
            continue
        for n in nodes if g["kind"] == "heal" else _fault_targets(g) & nodes:
            out.setdefault(n, g["mono"])
    return out


def _fault_targets(f: dict[str, Any]) -> set[str]:
    if "node" in f:
        return {f["node"]}
    if "nodes" in f:
        return set(f["nodes"])
    return set(f.get("side_a", ()))


def _created_ms(r: dict[str, Any]) -> float | None:
    from datetime import datetime

    iso = r.get("created_at")
    if not iso or r["state"] in ("skipped", "missed"):
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


def two_leader_window(history: History, stale_s: float = 0.5) -> float:
    """The longest stretch in which two nodes answered that they led (each answer counts for
    `stale_s` after it was given)."""
    latest: dict[str, tuple[float, bool]] = {}
    longest, since = 0.0, None
    for s in sorted(history.samples, key=lambda s: s["mono"]):
        latest[s["node"]] = (s["mono"], bool(s.get("ok") and s.get("role") == "leader"))
        now = s["mono"]
        leading = [n for n, (t, lead) in latest.items() if lead and now - t <= stale_s]
        if len(leading) >= 2:
            since = now if since is None else since
            longest = max(longest, now - since)
        else:
            since = None
    return round(longest, 3)


def figures(history: History, results: list[Result], **extra: Any) -> dict[str, Any]:
    by = {r.name.split()[0]: r for r in results}
    c = {k: v for r in results for k, v in r.counts.items()}
    lateness = _lateness(history)
    failovers = _failovers(history)
    times = [f["new_leader_s"] for f in failovers if f["new_leader_s"] is not None]
    ops = c.get("admin_ops", {})
    return {
        **extra,
        "slots_due": c.get("slots_due"),
        "executed": len(history.executions),
        "lost": by["1"].counts.get("lost") if "1" in by else None,
        "duplicate_decisions": c.get("duplicate_decisions"),
        "duplicate_executions": c.get("duplicate_executions"),
        "duplicates_overlapping": c.get("duplicates_overlapping"),
        "missed": _count_records(history, "missed"),
        "skipped": _count_records(history, "skipped"),
        "lateness_ms": lateness,
        "lateness_ms_recorded": _recorded_lateness(history),
        "failover_s": {
            "n": len(times),
            "median": _pct(times, 0.5),
            "max": max(times) if times else None,
            "events": failovers,
        },
        "two_leader_window_s": two_leader_window(history),
        "admin_ops": {
            "ok": ops.get("ok", 0),
            "failed": ops.get("failed", 0),
            "indeterminate": ops.get("indeterminate", 0),
        },
        "lost_writes": c.get("lost_writes"),
        "cut_off_starts": c.get("cut_off_starts"),
        "overlap_superseded": c.get("overlap_superseded"),
        "violations": {r.name: len(r.violations) for r in results},
    }


def _count_records(history: History, state: str) -> int:
    seen: dict[str, int] = {}
    for items in history.records.values():
        for r in items:
            if r["state"] == state:
                seen[r["run_id"]] = int(r.get("count") or 1)
    return sum(seen.values())


def table(report: dict[str, Any]) -> str:
    late = report["lateness_ms"]
    fo = report["failover_s"]
    ops = report["admin_ops"]
    rows = [
        ("seed", report.get("seed")),
        ("nodes / duration", f"{report.get('nodes')} / {report.get('duration_s')} s"),
        ("faults injected", report.get("fault_count")),
        ("slots due (checked)", report["slots_due"]),
        ("executions (ground truth)", report["executed"]),
        ("lost", report["lost"]),
        ("duplicate fire decisions", report["duplicate_decisions"]),
        (
            "duplicate executions (overlapping)",
            f"{report['duplicate_executions']} ({report['duplicates_overlapping']})",
        ),
        ("missed / skipped records", f"{report['missed']} / {report['skipped']}"),
        (
            "lateness ms steady p50/p99/max",
            f"{late['steady']['p50']} / {late['steady']['p99']} / "
            f"{late['steady']['max']}  (n={late['steady']['n']})",
        ),
        (
            "lateness ms faults p50/p99/max",
            f"{late['faults']['p50']} / {late['faults']['p99']} / "
            f"{late['faults']['max']}  (n={late['faults']['n']})",
        ),
        (
            "lateness ms recorded p50/p99/max",
            "{p50} / {p99} / {max}  (n={n})".format(**report["lateness_ms_recorded"]),
        ),
        ("failover s median/max (n)", f"{fo['median']} / {fo['max']} ({fo['n']})"),
        ("longest two-leader window s", report["two_leader_window_s"]),
        ("admin ops ok/failed/indeterminate", f"{ops['ok']} / {ops['failed']} / {ops['indeterminate']}"),
        ("lost acknowledged writes", report["lost_writes"]),
        ("starts by cut-off workers", report["cut_off_starts"]),
    ]
    for name, count in report["violations"].items():
        rows.append((f"invariant {name}", "ok" if count == 0 else f"VIOLATED x{count}"))
    for node, r in sorted((report.get("resources") or {}).items()):
        rows.append((f"cpu s / max rss MB {node}", f"{r['cpu_s']:.1f} / {r['max_rss_mb']:.0f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
