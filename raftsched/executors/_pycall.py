"""Calling one python callable: the allow-list check, `context=`, coroutines, the outcome.

Shared by the child-process runner (`_pyrunner`) and the in-process thread of `python.py`.
Imports stay light (stdlib and orjson): every python run's child pays for them at start.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["NotAllowed", "Report", "check_allowed", "load", "module_allowed", "run_target"]

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
        return Report(ok=False, error=describe(exc), text=user_traceback(exc))
    return Report(ok=True, text=f"[raftsched] returned: {render(value)}\n")


def user_traceback(exc: BaseException) -> str:
    """The traceback without this module's own frames: they are noise to the task's author."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_globals.get("__name__") == __name__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))
