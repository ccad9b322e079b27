"""The CLI's tables: API answers as aligned text for people (`--json` prints the answer instead).

Every function takes a decoded API answer and returns rows, the first one the header; nothing
here talks to a node. `task_summary` is the one-line form of a task that `jobs list` and
`jobs get` share (`message events → ticks`, `http POST https://…`).
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "job_view",
    "jobs_table",
    "nodes_table",
    "print_table",
    "runs_table",
    "status_table",
    "task_summary",
]

TASK_WIDTH = 48  # the TASK column of `jobs list`; `jobs get` shows the task whole
VALUE_WIDTH = 200  # a body or options shown by `jobs get`, cut past this


def print_table(rows: list[list[str]]) -> None:
    if len(rows) <= 1:
        print("(none)")
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _schedule(job: dict[str, Any]) -> str:
    s = job.get("schedule")
    if s is None:
        return "manual"
    tz = f" {s['timezone']}" if s.get("timezone", "UTC") != "UTC" else ""
    if "cron" in s:
        return f"cron {s['cron']}{tz}"
    if "every" in s:
        return f"every {s['every']:g}s"
    return f"at {s.get('at')}"


def task_summary(task: dict[str, Any]) -> str:
    """One line: the task type, then what it runs or where it publishes."""
    kind = task.get("type", "?")
    if kind == "message":
        return f"message {task.get('broker')} → {task.get('to')}"
    if kind == "shell":
        command = task.get("command")
        return f"shell {' '.join(command) if isinstance(command, list) else f'sh -c {command}'}"
    if kind == "http":
        return f"http {task.get('method', 'GET')} {task.get('url')}"
    if kind == "python":
        return f"python {task.get('callable')}"
    return str(kind)


def _ratio(stats: dict[str, Any]) -> str:
    ok, bad = stats.get("succeeded", 0), stats.get("failed", 0) + stats.get("timed_out", 0)
    return f"{ok}/{ok + bad}" if ok + bad else "-"


def jobs_table(body: Any) -> list[list[str]]:
    # Slot times, not the times fires were committed (a fire is committed lookahead_s ahead):
    # the last slot that fell due and the next one, as the runs show them.
    rows = [["ID", "SCHEDULE", "TASK", "NEXT SLOT", "LAST SLOT", "OK/DONE", "PAUSED", "VERSION"]]
    rows.extend(
        [
            job["id"],
            _schedule(job),
            _cut(task_summary(job.get("task", {})), TASK_WIDTH),
            job.get("next_slot_at") or "-",
            job.get("last_slot_at") or "-",
            _ratio(job.get("stats", {})),
            "yes" if job.get("paused") else "no",
            str(job["version"]),
        ]
        for job in body["items"]
    )
    return rows


def job_view(job: Any) -> list[list[str]]:
    """`jobs get`: one field a line, the task spelled out (a message's body, content type,
    options and header names; header values are left to `--json`, which shows them redacted)."""
    task = job.get("task", {})
    last = job.get("last_run") or {}
    pairs = [
        ("id", job["id"]),
        ("schedule", _schedule(job)),
        ("task", task_summary(task)),
        *_task_details(task),
        ("route", job.get("route", {}).get("strategy", "-")),
        ("retries", str(job.get("retries", {}).get("max", 0))),
        ("timeout", "-" if job.get("timeout") is None else f"{job['timeout']:g}s"),
        ("paused", "yes" if job.get("paused") else "no"),
        ("next slot", job.get("next_slot_at") or "-"),
        ("last slot", job.get("last_slot_at") or "-"),
        ("last run", f"{last['run_id']} {last['state']}" if last else "-"),
        ("ok/done", _ratio(job.get("stats", {}))),
        ("version", str(job.get("version", "-"))),
    ]
    return [["FIELD", "VALUE"], *([name, value] for name, value in pairs)]


def _task_details(task: dict[str, Any]) -> list[tuple[str, str]]:
    if task.get("type") != "message":
        return []
    body = task.get("body")
    shown = body if isinstance(body, str) else orjson.dumps(body).decode()
    default_type = "text/plain; charset=utf-8" if isinstance(body, str) else "application/json"
    options = " ".join(f"{k}={orjson.dumps(v).decode()}" for k, v in task.get("options", {}).items())
    return [
        ("body", _cut(shown, VALUE_WIDTH)),
        ("content type", task.get("content_type") or default_type),
        ("options", options or "-"),
        ("headers", ", ".join(task.get("headers", {})) or "-"),
    ]


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value * 1000:.0f}ms" if value < 1 else f"{value:.1f}s"


def _run_state(run: dict[str, Any]) -> str:
    """A record of a range of slots says how many: the stats count each slot, so does this."""
    count = run.get("count")
    if count is None or count == 1:
        return str(run["state"])
    return f"{run['state']} ×{count} (to {run.get('until', '?')})"


def runs_table(body: Any) -> list[list[str]]:
    rows = [["RUN", "STATE", "ATTEMPT", "NODE", "SCHEDULED", "LATENESS", "DURATION"]]
    rows.extend(
        [
            run["run_id"],
            _run_state(run),
            str(run["attempt"]),
            run.get("node") or "-",
            run.get("scheduled_at") or "-",
            _seconds(run.get("lateness")),
            _seconds(run.get("duration")),
        ]
        for run in body["items"]
    )
    return rows


def nodes_table(body: Any) -> list[list[str]]:
    rows = [["ID", "ALIVE", "LEADER", "LOAD", "TAGS", "HTTP"]]
    for node in body["items"]:
        tags = ",".join(f"{k}={v}" for k, v in node.get("tags", {}).items()) or "-"
        rows.append(
            [
                node["id"],
                "yes" if node.get("alive") else "no",
                "yes" if node.get("leader") else "",
                f"{node.get('running', 0)}/{node.get('capacity', 0)}",
                tags,
                node.get("http", ""),
            ]
        )
    return rows


def status_table(body: Any) -> list[list[str]]:
    rows = [["NODE", "ROLE", "LEADER", "TERM", "COMMIT", "APPLIED", "DIGEST"]]
    rows.append(
        [
            body["node_id"],
            body["role"],
            body.get("leader") or "-",
            str(body["term"]),
            str(body["commit_index"]),
            str(body["applied_index"]),
            body["digest"],
        ]
    )
    return rows
