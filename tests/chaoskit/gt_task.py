"""The ground-truth task: appends one fsynced JSON line per start and end to <dir>/<node>.jsonl.

    python gt_task.py DIR SLEEP_S [EXIT_CODE]

Run by the nodes as an argv shell task (`sys.executable` of the test run), it learns who it is
from the RAFTSCHED_* environment (API.md). Each line carries the run id, job, slot (nominal ms,
None for a manual run), node, attempt, pid, wall time (ms) and the monotonic clock (s), which is
shared by every process on the machine and so comparable across nodes. SIGTERM (a cancel, a
timeout, a drain) is recorded as an `end` with the signal before the task exits; SIGKILL cannot
be: the checkers bound such an execution by the kill of its node.

Standard library only, and no import of raftsched: it must start fast and prove nothing by
trusting the code under test.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime


def _slot_ms(iso: str) -> int | None:
    if not iso:
        return None
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _event(kind: str, **extra: object) -> dict[str, object]:
    env = os.environ
    run_id = env.get("RAFTSCHED_RUN_ID", "")
    manual = "@manual-" in run_id
    return {
        "ev": kind,
        "run_id": run_id,
        "job": env.get("RAFTSCHED_JOB_ID", ""),
        "slot": None if manual else _slot_ms(env.get("RAFTSCHED_SCHEDULED_AT", "")),
        "node": env.get("RAFTSCHED_NODE", ""),
        "attempt": int(env.get("RAFTSCHED_ATTEMPT", "0") or 0),
        "shard": int(env.get("RAFTSCHED_SHARD", "0") or 0),
        "pid": os.getpid(),
        "wall_ms": time.time() * 1000,
        "mono": time.monotonic(),
        **extra,
    }


def _append(directory: str, event: dict[str, object]) -> None:
    path = os.path.join(directory, f"{event['node'] or 'unknown'}.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(event, separators=(",", ":")) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str]) -> int:
    directory, sleep_s = argv[1], float(argv[2])
    code = int(argv[3]) if len(argv) > 3 else 0

    def on_term(signum: int, frame: object) -> None:
        _append(directory, _event("end", rc=128 + signum, signal=signum))
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    _append(directory, _event("start"))
    if sleep_s > 0:
        time.sleep(sleep_s)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _append(directory, _event("end", rc=code))
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
