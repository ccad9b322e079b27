"""Run as `python -m pypath_probe JOBS_DIR` or `python .../pypath_probe.py JOBS_DIR` (the way a
console script starts: its own directory first on sys.path): prepares the import path as a node
does at start, then runs `cwdjobs:where` and `pathjobs:where` (child and in-process) and prints
each outcome as JSON. test_python_path.py compares the two start modes."""

from __future__ import annotations

import asyncio
import json
import sys

from raftsched.executors import ExecPolicy, PythonExecutor, RunContext
from raftsched.executors.python import prepare_import_path
from raftsched.model import TaskSpec, TaskType

CTX = RunContext(job_id="j", run_id="j@1", attempt=1, scheduled_ms=1, node_id="n1", shard=0, shards=1)


async def outcomes(jobs_dir: str) -> dict[str, str]:
    executor = PythonExecutor(ExecPolicy(python_allow=("cwdjobs", "pathjobs"), python_path=(jobs_dir,)))
    found: dict[str, str] = {}
    for module in ("cwdjobs", "pathjobs"):
        for in_process in (False, True):
            task = TaskSpec(type=TaskType.PYTHON, callable=f"{module}:where", in_process=in_process)
            result = await executor.run(task, CTX, timeout_s=20, output_path=None)
            found[f"{module} in_process={in_process}"] = result.outcome
    return found


if __name__ == "__main__":
    prepare_import_path([sys.argv[1]])
    print(json.dumps(asyncio.run(outcomes(sys.argv[1]))))
