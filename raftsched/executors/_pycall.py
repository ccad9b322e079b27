"""Runs one python callable, in a child process or (for `in_process` tasks) in a node thread.

As a child process::

    python -P -u -m raftsched.executors._pyrunner TARGET RESULT_FD

stdin carries one JSON object `{"kwargs": {...}, "context": {...}, "allow": [...]}`. What the
callable prints is the run's output, followed by its return value (`[raftsched] returned: <JSON
or repr>`) or its traceback. The outcome goes to RESULT_FD, a channel of its own that the task's
prints cannot garble: one JSON object `{"ok": true}` or `{"ok": false, "error": "Type: message"}`,
at most RESULT_MAX bytes so that it always fits in the pipe and the child never blocks on it.
The child exits as soon as the callable returns (threads it left behind do not keep it alive).

Imports stay light (stdlib and orjson): every python run pays for them at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import os
import re
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import orjson

__all__ = ["NotAllowed", "Report", "encode_outcome", "load", "main", "module_allowed", "run_target"]

RESULT_MAX = 3072  # below PIPE_BUF (4096): written atomically, never blocks
_TARGET_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


class NotAllowed(Exception):
    """The target is outside the node's python_allow (or malformed)."""


@dataclass(frozen=True, slots=True)
class Report:
    ok: bool
    error: str | None = None
    text: str = ""  # the return-value line, or the traceback


def module_allowed(module: str, prefixes: Iterable[str]) -> bool:
    """`"myjobs."` allows modules under myjobs; `"myjobs"` allows myjobs itself and its submodules."""
    return any(_matches(module, prefix) for prefix in prefixes)


def _matches(module: str, prefix: str) -> bool:
    if not prefix:
        return False
    if prefix.endswith("."):
        return module.startswith(prefix)
    return module == prefix or module.startswith(prefix + ".")


def split_target(target: str) -> tuple[str, str]:
    if not _TARGET_RE.fullmatch(target):
        raise NotAllowed(f"callable must look like 'pkg.module:function', not {target!r}")
    module, _, name = target.partition(":")
    return module, name


def check_allowed(target: str, allow: Iterable[str]) -> None:
    """Refuse a target whose module is outside `allow`, before anything is imported."""
    module, _ = split_target(target)
    if not module_allowed(module, allow):
        raise NotAllowed(f"module {module!r} is not under this node's python_allow")


def load(target: str, allow: Sequence[str]) -> Callable[..., Any]:
    """Import and fetch the callable; it must also be *defined* under `allow`, so that an allowed
    module cannot lend out what it imported (e.g. `myjobs.tasks:run` being `subprocess.run`)."""
    check_allowed(target, allow)
    module_name, name = split_target(target)
    func = getattr(importlib.import_module(module_name), name)
    if not callable(func):
        raise NotAllowed(f"{target} is not callable")
    owner = getattr(func, "__module__", None)
    if not isinstance(owner, str) or not module_allowed(owner, allow):
        raise NotAllowed(f"{target} is defined in {owner!r}, which is not under python_allow")
    return func  # type: ignore[no-any-return]


def _accepts_context(func: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return any(
        p.kind is inspect.Parameter.VAR_KEYWORD or (p.name == "context" and p.kind in kinds) for p in params
    )


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def call(func: Callable[..., Any], kwargs: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
    """Call with `context=` when the function takes it (identity wins over a kwarg of that name);
    a coroutine is run to completion on a loop of its own."""
    args = {**kwargs, "context": dict(context)} if _accepts_context(func) else dict(kwargs)
    result = func(**args)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    return result


def render(value: object) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return repr(value)


def describe(exc: BaseException) -> str:
    """`ExceptionType: message`, as the run's error."""
    message = str(exc)
    name = type(exc).__name__
    return f"{name}: {message}" if message else name


def run_target(
    target: str, kwargs: Mapping[str, Any], context: Mapping[str, Any], allow: Sequence[str]
) -> Report:
    """Everything the callable raises is its outcome, so nothing escapes from here."""
    try:
        value = call(load(target, allow), kwargs, context)
    except NotAllowed as exc:
        return Report(ok=False, error=f"refused: {exc}")
    except BaseException as exc:
        return Report(ok=False, error=describe(exc), text=traceback.format_exc())
    return Report(ok=True, text=f"[raftsched] returned: {render(value)}\n")


def encode_outcome(report: Report) -> bytes:
    """The outcome as JSON of at most RESULT_MAX bytes (a long error is cut)."""
    error = report.error
    limit = 2000
    while True:
        data = orjson.dumps({"ok": report.ok, "error": error[:limit] if error else None})
        if len(data) <= RESULT_MAX:
            return data
        limit //= 2


def main(argv: Sequence[str] | None = None) -> NoReturn:
    target, fd_text = (sys.argv[1:] if argv is None else argv)[:2]
    result_fd = int(fd_text)
    os.set_inheritable(result_fd, False)  # processes the task starts must not hold it
    payload = orjson.loads(sys.stdin.buffer.read())
    report = run_target(target, payload["kwargs"], payload["context"], payload["allow"])
    _emit(report)
    os.write(result_fd, encode_outcome(report))
    os.close(result_fd)
    os._exit(0 if report.ok else 1)


def _emit(report: Report) -> None:
    with contextlib.suppress(OSError, ValueError):  # the callable may have closed or replaced them
        (sys.stdout if report.ok else sys.stderr).write(report.text)
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
