"""This node's own record of the attempts it started: never run the same (run, attempt) twice.

A worker reports `StartRun` / `FinishRun` through the log, but a node can stop (SIGTERM with
the leader away, or kill -9) after a task ran and before its reports were committed. Its next
life would then see the run still pending and run the same attempt again. So the worker first
appends `start` here, before it starts the task, and `finish` with the result before it proposes
the report; on restart an attempt found here is never started again: its recorded result is reported, or, if
it has none, it is reported failed (outcome unknown), so the retry policy decides, with a
higher attempt.

One JSON line per event. `started` and `finished` record an event and queue its line; `flush`
appends every queued line in one write (flushed to the OS: it survives a crash of the process;
with `fsync` it also survives a power loss), so the runs that start together and the reports sent
together cost one write. The worker flushes before it starts the tasks (and before it proposes
the reports) whose lines are queued. Rewritten at start (and every so many lines) to keep only the
attempts the state still shows active.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AttemptJournal", "Recorded"]

log = logging.getLogger(__name__)
Key = tuple[str, int]


@dataclass(slots=True)
class Recorded:
    started_ms: int
    finish: dict[str, Any] | None = None


class AttemptJournal:
    def __init__(self, path: Path, *, fsync: bool = False) -> None:
        self.path = path
        self.fsync = fsync
        self.entries: dict[Key, Recorded] = {}
        self._fd: int | None = None
        self._queued: list[bytes] = []  # lines recorded but not written yet

    def load(self) -> None:
        """Read what the last life recorded (a torn last line, from a crash, is skipped)."""
        try:
            lines = self.path.read_bytes().splitlines()
        except FileNotFoundError:
            lines = []
        for line in lines:
            try:
                event = orjson.loads(line)
                key = (str(event["run_id"]), int(event["attempt"]))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                log.warning("skipping a damaged line in %s", self.path)
                continue
            if event.get("e") == "start":
                self.entries[key] = Recorded(int(event.get("started_ms", 0)))
            elif key in self.entries:
                self.entries[key].finish = event.get("item")

    def get(self, run_id: str, attempt: int) -> Recorded | None:
        return self.entries.get((run_id, attempt))

    def started(self, run_id: str, attempt: int, started_ms: int) -> None:
        self.entries[(run_id, attempt)] = Recorded(started_ms)
        self._queue({"e": "start", "run_id": run_id, "attempt": attempt, "started_ms": started_ms})

    def finished(self, item: dict[str, Any]) -> None:
        key = (item["run_id"], item["attempt"])
        if key in self.entries:
            self.entries[key].finish = item
        self._queue({"e": "finish", "run_id": key[0], "attempt": key[1], "item": item})

    def keep_only(self, active: set[Key]) -> None:
        """Forget attempts the state no longer shows active, and rewrite the file (atomically)."""
        self.entries = {k: v for k, v in self.entries.items() if k in active}
        self._queued.clear()  # the rewrite holds every entry kept
        self.close()
        tmp = self.path.with_suffix(".tmp")
        lines = []
        for (run_id, attempt), rec in self.entries.items():
            lines.append(
                orjson.dumps(
                    {"e": "start", "run_id": run_id, "attempt": attempt, "started_ms": rec.started_ms}
                )
            )
            if rec.finish is not None:
                lines.append(
                    orjson.dumps({"e": "finish", "run_id": run_id, "attempt": attempt, "item": rec.finish})
                )
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tmp.open("wb") as file:
            file.write(b"".join(line + b"\n" for line in lines))
            if self.fsync:
                os.fsync(file.fileno())
        os.replace(tmp, self.path)

    def _queue(self, event: dict[str, Any]) -> None:
        self._queued.append(orjson.dumps(event) + b"\n")

    @property
    def queued(self) -> int:
        return len(self._queued)

    def flush(self) -> int:
        """Append the queued lines in one write (then fsync, with `fsync`); returns how many.

        On OSError the lines stay queued, for the next flush, and the error is raised.
        """
        if not self._queued:
            return 0
        lines, self._queued = self._queued, []
        try:
            if self._fd is None:
                self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            data = memoryview(b"".join(lines))
            while data:
                data = data[os.write(self._fd, data) :]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            self._queued[:0] = lines
            raise
        return len(lines)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
