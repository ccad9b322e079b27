"""The CLI's tables: each task type in one line, a message task spelled out by `jobs get`."""

from __future__ import annotations

from typing import Any

import pytest

from raftsched.clitables import job_view, jobs_table, task_summary

MESSAGE = {
    "type": "message",
    "broker": "events",
    "to": "orders:created",
    "body": {"run": "{run_id}"},
    "content_type": None,
    "headers": {"Authorization": {"secret": "TOKEN"}},
    "options": {"mode": "list"},
}


@pytest.mark.parametrize(
    ("task", "line"),
    [
        (MESSAGE, "message events → orders:created"),
        ({"type": "shell", "command": ["echo", "hi"]}, "shell echo hi"),
        ({"type": "shell", "command": "ls | wc -l"}, "shell sh -c ls | wc -l"),
        ({"type": "http", "method": "POST", "url": "https://x.test/"}, "http POST https://x.test/"),
        ({"type": "python", "callable": "m:f"}, "python m:f"),
    ],
)
def test_task_summary(task: dict[str, Any], line: str) -> None:
    assert task_summary(task) == line


def job(**extra: Any) -> dict[str, Any]:
    return {"id": "ticks", "schedule": {"every": 5}, "task": MESSAGE, "version": 3, **extra}


def test_jobs_list_has_a_task_column_cut_to_its_width() -> None:
    long = {**MESSAGE, "to": "t" * 100}
    rows = jobs_table({"items": [job(), job(id="long", task=long)]})
    assert rows[0][2] == "TASK"
    assert rows[1][2] == "message events → orders:created"
    assert len(rows[2][2]) == 48 and rows[2][2].endswith("…")


def test_jobs_get_spells_out_a_message_task_without_header_values() -> None:
    view = dict(job_view(job(last_run={"run_id": "ticks@1", "state": "succeeded"}))[1:])
    assert view["task"] == "message events → orders:created"
    assert view["body"] == '{"run":"{run_id}"}'
    assert view["content type"] == "application/json"  # the default for a JSON body
    assert view["options"] == 'mode="list"'
    assert view["headers"] == "Authorization" and "TOKEN" not in str(view)
    assert view["last run"] == "ticks@1 succeeded"
    text = dict(job_view(job(task={**MESSAGE, "body": "tick {run_id}"}))[1:])
    assert text["content type"] == "text/plain; charset=utf-8"


def test_jobs_get_of_other_tasks_has_no_message_rows() -> None:
    fields = [row[0] for row in job_view(job(task={"type": "shell", "command": ["true"]}))]
    assert "body" not in fields and "task" in fields
