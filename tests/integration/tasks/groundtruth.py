"""A ground-truth task: one fsynced JSON line per event, appended to the file named in argv[1].

Events: `start` (as soon as the task runs), `grandchild` (when --grandchild starts a `sleep 60` in
the task's own process group), `end` (just before a normal exit). Every line carries the run's
identity from the RAFTSCHED_* environment, the pid and process group, and the wall-clock time, so a
test can tell exactly which attempt ran where and when, independently of what the cluster reports.

    python groundtruth.py FILE [--sleep S] [--exit N] [--grandchild] [--env NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time


def record(path: str, event: str, **extra: object) -> None:
    env = os.environ
    line = {
        "ev": event,
        "job": env.get("RAFTSCHED_JOB_ID"),
        "run": env.get("RAFTSCHED_RUN_ID"),
        "attempt": int(env.get("RAFTSCHED_ATTEMPT", "0")),
        "node": env.get("RAFTSCHED_NODE"),
        "shard": int(env.get("RAFTSCHED_SHARD", "-1")),
        "shards": int(env.get("RAFTSCHED_SHARDS", "-1")),
        "scheduled_at": env.get("RAFTSCHED_SCHEDULED_AT"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "t": time.time(),
        **extra,
    }
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())  # one write: lines of concurrent tasks never mix
        os.fsync(fd)
    finally:
        os.close(fd)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file")
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--grandchild", action="store_true")
    parser.add_argument("--env", action="append", default=[])
    args = parser.parse_args()
    record(args.file, "start", env={name: os.environ.get(name) for name in args.env})
    if args.grandchild:
        child = subprocess.Popen(["sleep", "60"])  # stays in our process group
        record(args.file, "grandchild", child_pid=child.pid)
    time.sleep(args.sleep)
    record(args.file, "end", exit=args.exit)
    return args.exit


if __name__ == "__main__":
    raise SystemExit(main())
