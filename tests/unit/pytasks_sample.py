"""Callables for the python executor tests, imported by name (`pytasks_sample:hello`) in a child.

The child finds this module because it gets the node's (here: pytest's) sys.path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

run = subprocess.run  # re-exported: must be refused, it is not defined under python_allow


def hello(name: str = "world") -> dict[str, str]:
    print(f"hello {name}")
    return {"greeted": name}


def fail() -> None:
    print("about to fail")
    raise ValueError("boom")


async def async_hello(delay: float = 0.01) -> str:
    await asyncio.sleep(delay)
    print("async hello")
    return "done"


def sleep(seconds: float, pidfile: str | None = None) -> None:
    if pidfile:
        Path(pidfile).write_text(str(os.getpid()))
    time.sleep(seconds)


def spawn_and_sleep(pidfile: str, childfile: str) -> None:
    """Starts a grandchild, then sleeps: a timeout must kill both."""
    child = subprocess.Popen(["sleep", "60"])
    Path(childfile).write_text(str(child.pid))
    Path(pidfile).write_text(str(os.getpid()))
    time.sleep(60)


def escape_and_sleep(workdir: str) -> None:
    """Starts a process in a session of its own (out of the task's group), then sleeps."""
    script = "echo $$ > p1; exec sleep 306"
    subprocess.Popen(["sh", "-c", script], cwd=workdir, start_new_session=True)
    Path(workdir, "p0").write_text(str(os.getpid()))
    time.sleep(60)


def whoami() -> dict[str, Any]:
    return {"uid": os.getuid(), "gid": os.getgid(), "home": os.environ.get("HOME"), "cwd": os.getcwd()}


def identity(context: dict[str, Any]) -> dict[str, Any]:
    for key in sorted(os.environ):
        if key.startswith("RAFTSCHED_"):
            print(f"{key}={os.environ[key]}")
    return context


def identity_kwargs(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def no_context(x: int = 1) -> int:
    return x


def environment() -> dict[str, str]:
    return dict(os.environ)


def big(n: int) -> None:
    sys.stdout.write("x" * n)
    print("END")


def unjsonable() -> set[int]:
    return {1, 2}
