"""What answers show of a job's secrets, and how `"***"` sent back in a request is read.

Redaction is a view concern: the state keeps what the user wrote (an inline header value, or a
`{"secret": NAME}` reference, which is only a name and is always shown). Answers replace the inline
values of sensitive headers (`model.is_sensitive_header`) by `model.REDACTED`, so that a job read
from the API, the dashboard or a backup does not hand out credentials.

So that a job read from the API can be written back as is, a PUT (or a restore) that sends
`REDACTED` for a header the stored job has under that exact name keeps the stored value; `REDACTED`
for any other header, or as an env value, is a 400 naming the field: it stands for nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..errors import ValidationError
from ..model import REDACTED, JobSpec, TextOrSecret, is_sensitive_header

__all__ = ["keep_stored", "redacted_value", "spec_view"]


def redacted_value(name: str, value: Any) -> Any:
    """A header's value as answers show it (`value` in its wire form)."""
    return REDACTED if isinstance(value, str) and is_sensitive_header(name) else value


def spec_view(spec: JobSpec, *, reveal: bool = False) -> dict[str, Any]:
    """`spec.to_dict()`, with sensitive inline header values redacted unless `reveal`; `notify`
    always (an empty list when the job has no rules)."""
    out = {**spec.to_dict(), "notify": [rule.to_dict() for rule in spec.notify]}
    headers = out["task"].get("headers")
    if not reveal and headers and any(is_sensitive_header(name) for name in headers):
        out["task"] = {
            **out["task"],
            "headers": {name: redacted_value(name, value) for name, value in headers.items()},
        }
    return out


def keep_stored(spec: JobSpec, stored: JobSpec | None, path: str = "") -> JobSpec:
    """`spec` with every header sent as `REDACTED` replaced by the stored job's value for that name.

    Raises ValidationError (`field` under `path`, e.g. `task.headers.Authorization`) for a
    `REDACTED` header the stored job does not have, and for a `REDACTED` env value."""
    task = spec.task
    prefix = f"{path}.task" if path else "task"
    for name, value in task.env.items():
        if value == REDACTED:
            raise ValidationError(_STANDS_FOR_NOTHING, field=f"{prefix}.env.{name}")
    if REDACTED not in task.headers.values():
        return spec
    old: dict[str, TextOrSecret] = stored.task.headers if stored is not None else {}
    headers = dict(task.headers)
    for name, value in task.headers.items():
        if value != REDACTED:
            continue
        if name not in old:
            raise ValidationError(_STANDS_FOR_NOTHING, field=f"{prefix}.headers.{name}")
        headers[name] = old[name]
    return dataclasses.replace(spec, task=dataclasses.replace(task, headers=headers))


_STANDS_FOR_NOTHING = (
    f'"{REDACTED}" stands for the value a stored job has for this header, and there is none to keep: '
    'send the value, or a {"secret": NAME} reference'
)
