"""The peers, each in its own process, running the bench's workload against the same sink.

    python -m benchlib.peers --kind aps-memory|aps-sqlite|floor --sink URL --jobs N \
        --period S --anchor-ms A [--aligned] [--db FILE]

Job i fires every `period` seconds at `anchor + phase_i + k * period` (k >= 1), phase_i spread
evenly over the first second (or 0 for every job with `--aligned`): the same slots raftsched is
given. The task is one HTTP GET to the sink carrying `X-Raftsched-Run-Id: <job>@<due ms>`, sent
with an aiohttp session as raftsched's HTTP executor does, so the ground truth is measured alike.

- `aps-memory`: APScheduler 3 AsyncIOScheduler, MemoryJobStore, AsyncIOExecutor, its defaults
  (coalesce, max_instances 1, misfire_grace_time 1 s).
- `aps-sqlite`: the same with SQLAlchemyJobStore on a SQLite file (APScheduler's durable setup).
- `floor`: a bare asyncio timer heap (`loop.call_at` per slot), nothing else: the floor for one
  Python process.

Prints `ready <epoch ms>` once every job is scheduled; runs until killed (SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import signal
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

SINK = ""
NODE = ""
SESSION: aiohttp.ClientSession | None = None
DUE: contextvars.ContextVar[datetime | None] = contextvars.ContextVar("due", default=None)


async def call_sink(job_id: str, due_ms: int | None = None) -> None:
    """The task: one GET to the sink. APScheduler's slot comes from DUE (see StampingExecutor)."""
    if due_ms is None:
        due = DUE.get()
        due_ms = int(round(due.timestamp() * 1000)) if due is not None else 0
    assert SESSION is not None
    headers = {
        "X-Raftsched-Run-Id": f"{job_id}@{due_ms}",
        "X-Raftsched-Attempt": "1",
        "X-Raftsched-Node": NODE,
    }
    try:
        async with SESSION.get(SINK, headers=headers) as resp:
            await resp.read()
    except (aiohttp.ClientError, OSError):
        pass


def phases(jobs: int, aligned: bool) -> list[int]:
    return [0 if aligned else (i * 1000) // jobs for i in range(jobs)]


def _new_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), trust_env=False)


async def run_floor(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    offset = time.time() - loop.time()  # wall = loop + offset (drift over a minute: negligible)
    period = int(args.period * 1000)
    tasks: set[asyncio.Task[None]] = set()

    def fire(job_id: str, due_ms: int) -> None:
        task = loop.create_task(call_sink(job_id, due_ms))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        nxt = due_ms + period
        loop.call_at(nxt / 1000 - offset, fire, job_id, nxt)

    now_ms = time.time() * 1000
    for i, phase in enumerate(phases(args.jobs, args.aligned)):
        start = args.anchor_ms + phase
        k = max(1, int((now_ms - start) // period) + 1)
        due = start + k * period
        loop.call_at(due / 1000 - offset, fire, f"job-{i:06d}", due)
    print(f"ready {int(time.time() * 1000)}", flush=True)
    await asyncio.Event().wait()


async def run_aps(args: argparse.Namespace) -> None:
    from apscheduler.executors.asyncio import AsyncIOExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from apscheduler.triggers.interval import IntervalTrigger

    class StampingExecutor(AsyncIOExecutor):  # type: ignore[misc]
        """AsyncIOExecutor, plus the slot in a context variable the task copies (~100 ns a run)."""

        def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
            token = DUE.set(run_times[-1])
            try:
                super()._do_submit_job(job, run_times)
            finally:
                DUE.reset(token)

    if args.kind == "aps-sqlite":
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        store: Any = SQLAlchemyJobStore(url=f"sqlite:///{args.db}")
    else:
        store = MemoryJobStore()
    scheduler = AsyncIOScheduler(
        jobstores={"default": store}, executors={"default": StampingExecutor()}, timezone=UTC
    )
    for i, phase in enumerate(phases(args.jobs, args.aligned)):
        start = datetime.fromtimestamp((args.anchor_ms + phase) / 1000, UTC)
        scheduler.add_job(
            call_sink,
            IntervalTrigger(seconds=args.period, start_date=start, timezone=UTC),
            args=[f"job-{i:06d}"],
            id=f"job-{i:06d}",
            replace_existing=True,
        )
    scheduler.start()
    print(f"ready {int(time.time() * 1000)}", flush=True)
    await asyncio.Event().wait()


async def main(args: argparse.Namespace) -> None:
    global SINK, NODE, SESSION
    SINK, NODE, SESSION = args.sink, args.kind, _new_session()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    runner = asyncio.create_task(run_floor(args) if args.kind == "floor" else run_aps(args))
    await stop.wait()
    runner.cancel()
    await SESSION.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kind", choices=("aps-memory", "aps-sqlite", "floor"), required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--jobs", type=int, required=True)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--anchor-ms", type=int, required=True)
    parser.add_argument("--aligned", action="store_true")
    parser.add_argument("--db")
    asyncio.run(main(parser.parse_args()))
