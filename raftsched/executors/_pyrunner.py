"""Child-process entry point for python tasks::

    python -P -u -m raftsched.executors._pyrunner SUPERVISOR-OPTIONS -- TARGET RESULT_FD

The runner is the run's supervisor (`_supervisor.run`, with the options `_supervisor` defines):
it forks the process that calls TARGET (as the `run_as` user, with the node's original umask, its
own parent-death signal) and stops everything that process leaves behind, on timeout, on
cancellation and when the node dies. Imports happen before the fork, so the callable's process
starts with them done.

stdin carries one JSON object `{"kwargs": {...}, "context": {...}, "allow": [...]}`. What the
callable prints is the run's output, followed by its return value (`[raftsched] returned: <JSON
or repr>`) or its traceback. The outcome goes to RESULT_FD, a channel of its own that the task's
prints cannot garble: one JSON object `{"ok": true}` or `{"ok": false, "error": "Type: message"}`,
at most RESULT_MAX bytes so that it always fits in the pipe and the child never blocks on it.
The child exits as soon as the callable returns: threads it left behind do not keep it alive.

Nothing in the package imports this module (`-m` would warn that it was imported twice).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

import orjson

from ._pycall import Report, run_target
from ._supervisor import parse_options
from ._supervisor import run as supervise

__all__ = ["RESULT_MAX", "encode_outcome", "main"]

RESULT_MAX = 3072  # below PIPE_BUF (4096): written atomically, never blocks


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
    opts, args = parse_options(sys.argv[1:] if argv is None else argv)
    target, fd_text = args
    supervise(opts, _call(target, int(fd_text)))


def _call(target: str, result_fd: int) -> Callable[[int], NoReturn]:
    """The body of the task's process: started, it calls `target` and reports on `result_fd`."""

    def body(started_fd: int) -> NoReturn:
        os.set_inheritable(result_fd, False)  # processes the task starts must not hold it
        os.close(started_fd)  # the task is under way: from here on, nothing may reach `start`
        try:
            payload = orjson.loads(sys.stdin.buffer.read())
            report = run_target(target, payload["kwargs"], payload["context"], payload["allow"])
            _emit(report)
            os.write(result_fd, encode_outcome(report))
            os.close(result_fd)
        except BaseException:
            os._exit(1)  # no outcome: the node says "the runner ended without an outcome"
        os._exit(0 if report.ok else 1)

    return body


def _emit(report: Report) -> None:
    with contextlib.suppress(OSError, ValueError):  # the callable may have closed or replaced them
        (sys.stdout if report.ok else sys.stderr).write(report.text)
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
