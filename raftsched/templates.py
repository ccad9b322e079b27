"""Message body templates: `{run_id}`-style fields of the run, nothing else.

    render("tick {run_id} #{attempt} {{literal}}", values) -> "tick job@1 #2 {literal}"

Only the names in `FIELDS` may appear between braces; `{{` and `}}` are literal braces. Unlike
`str.format` there is no attribute access, indexing or format spec, so a job author cannot reach
into an object through a template. `check` is the creation-time validation (it names the first
problem); `render` assumes a checked template. Pure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["FIELDS", "TemplateError", "check", "check_value", "render", "render_value"]

FIELDS = ("run_id", "job_id", "attempt", "scheduled_at", "node", "shard", "shards")

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template that names an unknown field or has an unmatched brace."""


def check(template: str) -> None:
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        name = match.group(1)
        if name is None:
            raise TemplateError(
                f"unmatched {token!r} at {match.start()}: write {token * 2} for a literal brace"
            )
        if name not in FIELDS:
            raise TemplateError(f"unknown field {{{name[:40]}}}: use one of {', '.join(FIELDS)}")


def render(template: str, values: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        return values[match.group(1)]

    return _TOKEN.sub(replace, template)


def check_value(value: Any) -> None:
    """Every string in a JSON value (keys too) is a template."""
    for text in _strings(value):
        check(text)


def render_value(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return render(value, values)
    if isinstance(value, list):
        return [render_value(item, values) for item in value]
    if isinstance(value, dict):
        return {render(key, values): render_value(item, values) for key, item in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    if isinstance(value, dict):
        return [*value.keys(), *(text for item in value.values() for text in _strings(item))]
    return []
