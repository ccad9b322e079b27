"""Small python tasks for the local cluster of `scripts/start`.

A job names one as `{"type": "python", "callable": "examples.tasks:greet", "kwargs": {...}}`.
The local cluster's nodes allow them (`python_allow = examples` in `.cluster/cluster.ini`) and
import them from the repository's root (`python_path`). For code of your own: put a package next
to this one (say `myjobs/`), add it to `python_allow` (`python_allow = examples,myjobs`), restart
the nodes, and name its functions the same way.

A callable gets the job's `kwargs`, and a `context` keyword argument too if it takes one: the
run's identity (`job_id`, `run_id`, `attempt`, `scheduled_at`, `node`, `shard`, `shards`), so
that it can be idempotent. What it prints is the run's output; what it returns (as JSON) is the
output's last line; an exception fails the run. An `async def` runs on an event loop of its own.
"""

from __future__ import annotations

import asyncio
import platform
import time
from typing import Any

__all__ = ["greet", "nap", "system"]


def greet(name: str = "world", context: dict[str, Any] | None = None) -> dict[str, Any]:
    """Print a greeting that names the run, and return who was greeted."""
    ctx = context or {}
    print(f"hello {name}, from {ctx.get('run_id')} (attempt {ctx.get('attempt')}) on {ctx.get('node')}")
    return {"greeted": name, "node": ctx.get("node")}


async def nap(seconds: float = 0.2) -> dict[str, float]:
    """Sleep without blocking (an `async def`), and say how long it took."""
    began = time.monotonic()
    await asyncio.sleep(seconds)
    return {"slept_s": round(time.monotonic() - began, 3)}


def system() -> dict[str, str]:
    """What the node's machine is: no arguments, no context."""
    return {"python": platform.python_version(), "system": platform.system(), "host": platform.node()}
