"""Message tasks on time: what a 3-node cluster publishes to a local Redis and RabbitMQ, next to a
bare asyncio publisher in the same run.

    python scripts/bench_messages.py [--rates 100,500] [--window 20] [--brokers redis,amqp]
                                     [--out FILE] [--keep]

The brokers are Debian's servers, started by tests/brokerkit.py on free loopback ports. For each
broker and each rate R:

- raftsched: R jobs `every: 1`, phases spread evenly over the second, each a message task
  (Redis: XADD to a stream; RabbitMQ: the default exchange to a durable queue, persistent, with
  publisher confirms), on 3 node processes running this work tree (scripts/bench.py's cluster:
  lookahead_s 3, capacity 1,024, overlap `allow`). Latency = due → acknowledged: a run finishes
  when the broker has acknowledged its message, so it is the run's `lateness + duration`
  (`finished_at - due_at`, one machine's clock), over every run due in the window.
- bare: this process alone, one asyncio loop, the same client library publishing the same
  messages (body, identity fields or headers, persistence, confirms) at the same due times
  (`loop.call_at`); latency = acknowledged - due.

"On time" is acknowledged within ON_TIME_MS of the due time; "start p99" is due → the publish
began (raftsched: the run's `lateness`), so the rest of the latency is the publish itself. CPU is
the nodes' (or this process's) cores over the window, "others' cores" what the rest of the shared
machine used meanwhile; the brokers' own CPU is not counted. The commonest errors of failed
publishes are printed under the table. Every process it starts it stops by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import bench as b  # puts tests/ on the path (brokerkit, cluster)
from benchlib import measure as m
from brokerkit import Broker, rabbitmq_server, redis_server

ROOT = Path(__file__).resolve().parent.parent
ON_TIME_MS = 100.0
TARGET = "bench"  # the stream key, or the queue on RabbitMQ's default exchange
BODY = {"run": "{run_id}", "n": "{attempt}"}
Publish = Callable[[str, int], Awaitable[None]]  # (run id, due ms) -> acknowledged


@dataclass
class Row:
    broker: str
    rate: int
    who: str
    expected: int
    acked: int
    failed: int
    on_time_pct: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    start_p99_ms: float | None  # due → the publish began (the rest is the broker's round trip)
    cpu_cores: float | None
    others_cores: float | None  # what the rest of the shared machine used meanwhile
    errors: dict[str, int]  # the failures' errors (their first 80 characters), the commonest 3


def row(
    who: str,
    latencies: list[float],
    starts: list[float],
    errors: list[str],
    cpu: dict[str, Any],
    **common: Any,
) -> Row:
    """`cpu`: a CpuWatch result over the window; `common`: broker, rate and expected."""
    d = m.dist(latencies)
    on_time = sum(1 for v in latencies if v <= ON_TIME_MS)
    expected = common["expected"]
    ours = sum(v["cpu_pct"] or 0.0 for k, v in cpu.items() if k != "others") / 100
    return Row(
        **common,
        who=who,
        acked=len(latencies),
        failed=len(errors),
        on_time_pct=round(100 * on_time / expected, 1) if expected else 0.0,
        p50_ms=d["p50"],
        p99_ms=d["p99"],
        max_ms=d["max"],
        start_p99_ms=m.dist(starts)["p99"],
        cpu_cores=round(ours, 2),
        others_cores=cpu["others"]["cores"],
        errors=dict(Counter(e[:80] for e in errors).most_common(3)),
    )


# ---------------------------------------------------------------- brokers


@contextlib.contextmanager
def brokers(root: Path, kinds: list[str]) -> Iterator[dict[str, Broker]]:
    starters = {"redis": redis_server, "amqp": rabbitmq_server}
    with contextlib.ExitStack() as stack:
        yield {kind: stack.enter_context(starters[kind](root)) for kind in kinds}


def split_password(url: str) -> tuple[str, str | None]:
    """The URL without its password (the config refuses one there) and the password."""
    parts = urlsplit(url)
    if not parts.password:
        return url, None
    return url.replace(f":{parts.password}@", "@", 1), parts.password


def declare_queue(url: str) -> None:
    async def declare() -> None:
        import aio_pika

        connection = await aio_pika.connect(url)
        async with connection:
            await (await connection.channel()).declare_queue(TARGET, durable=True)

    asyncio.run(declare())


# ---------------------------------------------------------------- raftsched


def new_cluster(work: Path, kinds: dict[str, Broker]) -> b.BenchCluster:
    sections: dict[str, dict[str, Any]] = {"secrets": {}}
    for kind, broker in kinds.items():
        url, password = split_password(broker.url)
        sections[f"broker {kind}"] = {"url": url}
        if password:
            sections[f"broker {kind}"]["password_secret"] = f"{kind.upper()}_PASSWORD"
            sections["secrets"][f"{kind.upper()}_PASSWORD"] = password
    cluster = b.BenchCluster(
        work / "cluster",
        cluster_keys={"lookahead_s": 3, "node_timeout_s": 2, "max_body_bytes": 32 << 20},
        node_keys={"capacity": b.CAPACITY},
        sections=sections,
    )
    cluster.code_dir = ROOT  # the nodes import this work tree, not whatever is installed
    cluster.start()
    b.progress(f"cluster up, leader {cluster.leader(timeout=60)}")
    cluster.wait_registered(timeout=60)
    return cluster


def message_jobs(kind: str, rate: int, anchor: int, end_ms: int) -> list[dict[str, Any]]:
    t = b.now_ms()
    items = []
    for i, phase in enumerate(b.phases(rate, aligned=False)):
        start = anchor + phase
        spec = {
            "id": job_id(kind, rate, i),
            "schedule": {"every": 1, "start_at": b.iso(start), "end_at": b.iso(end_ms)},
            "task": {
                "type": "message",
                "broker": kind,
                "to": f":{TARGET}" if kind == "amqp" else TARGET,
                "body": BODY,
            },
            "overlap": "allow",
        }
        items.append({"spec": spec, "next_fire_at": b.iso(b.next_slot(start, 1000, t))})
    return items


def job_id(kind: str, rate: int, i: int) -> str:
    return f"{kind}-{rate}-{i:05d}"


def cluster_run(cluster: b.BenchCluster, kind: str, rate: int, window_s: int) -> Row:
    """R jobs fire from their creation; the window starts once every node has dialled the broker
    (a few seconds in) and the jobs end with it (`end_at`), so nothing fires into the next run."""
    anchor = b.now_ms()
    w0 = anchor + 6000
    w1 = w0 + window_s * 1000
    b.restore(cluster, cluster.ids[0], message_jobs(kind, rate, anchor, w1 - 1), 500, f"{kind} {rate}")
    b.sleep_until(w0)
    watch = m.CpuWatch({n: p.pid for n, p in cluster.procs.items()}).start()
    b.progress(f"  raftsched → {kind} at {rate}/s: measuring {window_s} s")
    b.sleep_until(w1)
    cpu = watch.stop()
    time.sleep(3)  # the last runs report their ends
    latencies, starts, errors = run_latencies(cluster, kind, rate, w0, w1)
    expected = b.expected_slots(rate, False, anchor, 1000, w0, w1)
    return row(
        "raftsched, 3 nodes", latencies, starts, errors, cpu, broker=kind, rate=rate, expected=expected
    )


def run_latencies(
    cluster: b.BenchCluster, kind: str, rate: int, w0: int, w1: int
) -> tuple[list[float], list[float], list[str]]:
    """Due → acknowledged and due → started of every succeeded run due in [w0, w1), and the
    errors of those that failed there."""
    latencies: list[float] = []
    starts: list[float] = []
    errors: list[str] = []
    for i in range(rate):
        path = f"/v1/jobs/{job_id(kind, rate, i)}/runs?limit=100"
        code, body = cluster.api(cluster.ids[i % 3], "GET", path)
        assert code == 200, body
        for run in body["items"]:
            due = int(run["run_id"].rpartition("@")[2])
            if not w0 <= due < w1:
                continue
            if run["state"] == "succeeded":
                latencies.append((run["lateness"] + run["duration"]) * 1000)
                starts.append(run["lateness"] * 1000)
            elif run["state"] in ("failed", "timed_out", "lost"):
                errors.append(f"{run['state']}: {run.get('error')}")
    return latencies, starts, errors


# ---------------------------------------------------------------- the bare publisher


def fields(run_id: str, due_ms: int) -> dict[str, str]:
    """The identity a raftsched message carries (executors/message.py), for the same bytes."""
    body = json.dumps({"run": run_id, "n": "1"}, separators=(",", ":"))
    return {
        "body": body,
        "message_id": f"{run_id}/1",
        "run_id": run_id,
        "job_id": run_id.partition("@")[0],
        "attempt": "1",
        "scheduled_at": b.iso(due_ms),
        "node": "bare",
        "shard": "0",
        "shards": "1",
    }


@contextlib.asynccontextmanager
async def redis_publisher(url: str) -> AsyncIterator[Publish]:
    import redis.asyncio as redis

    # As raftsched's RedisPublisher: a bounded pool that makes a burst wait for a connection.
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=100, timeout=None)
    client = redis.Redis.from_pool(pool)

    async def publish(run_id: str, due_ms: int) -> None:
        entry: dict[Any, Any] = dict(fields(run_id, due_ms))  # redis' types want both sides wide
        await client.xadd(TARGET, entry)

    try:
        yield publish
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def amqp_publisher(url: str) -> AsyncIterator[Publish]:
    import aio_pika

    connection = await aio_pika.connect(url)
    channel = await connection.channel(publisher_confirms=True, on_return_raises=True)

    async def publish(run_id: str, due_ms: int) -> None:
        f = fields(run_id, due_ms)
        body = f.pop("body").encode()
        message = aio_pika.Message(
            body,
            content_type="application/json",
            message_id=f.pop("message_id"),
            headers={f"x-raftsched-{k.replace('_', '-')}": v for k, v in f.items()},
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await channel.default_exchange.publish(message, routing_key=TARGET, mandatory=True)

    async with connection:
        yield publish


async def bare_publish(
    kind: str, url: str, rate: int, window_s: int
) -> tuple[list[float], list[float], list[str]]:
    """The same slots as the cluster's (R a second, spread evenly), each published by a task
    started at its due time; latencies of the acknowledged ones, and the failures."""
    latencies: list[float] = []
    starts: list[float] = []
    failures: list[str] = []
    opener = redis_publisher if kind == "redis" else amqp_publisher
    async with opener(url) as publish:
        await publish("warmup@0", 0)
        loop = asyncio.get_running_loop()
        offset = time.time() - loop.time()
        first = b.now_ms() + 1000
        tasks: set[asyncio.Task[None]] = set()

        async def one(run_id: str, due_ms: int) -> None:
            starts.append(time.time() * 1000 - due_ms)
            try:
                await publish(run_id, due_ms)
            except Exception as exc:  # noqa: BLE001 - a refusal counts as failed, as a run would
                failures.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(time.time() * 1000 - due_ms)

        def fire(run_id: str, due_ms: int) -> None:
            task = loop.create_task(one(run_id, due_ms))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        for k in range(rate * window_s):
            due = first + (k * 1000) // rate
            loop.call_at(due / 1000 - offset, fire, f"bare-{k % rate}@{due}", due)
        await asyncio.sleep(window_s + 1)
        while tasks:
            await asyncio.gather(*tasks)
    return latencies, starts, failures


def bare_run(kind: str, url: str, rate: int, window_s: int) -> Row:
    b.progress(f"  bare asyncio → {kind} at {rate}/s: measuring {window_s} s")
    watch = m.CpuWatch({"bare": os.getpid()}).start()
    latencies, starts, errors = asyncio.run(bare_publish(kind, url, rate, window_s))
    cpu = watch.stop()
    expected = rate * window_s
    return row("bare asyncio", latencies, starts, errors, cpu, broker=kind, rate=rate, expected=expected)


# ---------------------------------------------------------------- report


HEADER = [
    "broker",
    "msgs/s",
    "publisher",
    "acked/s",
    "on time",
    "failed",
    "p50 ms",
    "p99 ms",
    "max ms",
    "start p99",
    "CPU cores",
    "others' cores",
]


def table(rows: list[Row], window_s: int) -> str:
    """Each raftsched row, the bare row of the same broker and rate, then their ratios."""
    lines: list[list[Any]] = []
    for ours, bare in zip(rows[::2], rows[1::2], strict=True):
        lines.extend([line(ours, window_s), line(bare, window_s)])
        keys = ("p50_ms", "p99_ms", "max_ms", "start_p99_ms")
        ratios = [m.ratio(getattr(ours, k), getattr(bare, k)) for k in keys]
        cpu = m.ratio(ours.cpu_cores, bare.cpu_cores)
        lines.append([ours.broker, ours.rate, "ratio raftsched / bare", None, None, None, *ratios, cpu, None])
    title = f"message tasks, {window_s} s windows: due → acknowledged (on time: ≤ {ON_TIME_MS:g} ms)"
    return m.table(title, HEADER, lines)


def line(r: Row, window_s: int) -> list[Any]:
    return [r.broker, r.rate, r.who, r.acked / window_s, f"{r.on_time_pct}%", r.failed] + [
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.start_p99_ms,
        r.cpu_cores,
        r.others_cores,
    ]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rates", default="100,500", help="messages per second, comma-separated")
    parser.add_argument("--window", type=int, default=20, help="measured seconds per run")
    parser.add_argument("--brokers", default="redis,amqp", help="redis and/or amqp")
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs, data)")
    args = parser.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    kinds = args.brokers.split(",")
    work = Path(tempfile.mkdtemp(prefix="raftsched-bench-messages-"))
    rows: list[Row] = []
    try:
        with brokers(work, kinds) as running:
            b.progress(f"brokers up: {', '.join(f'{k} {v.url}' for k, v in running.items())}")
            if "amqp" in running:
                declare_queue(running["amqp"].url)
            cluster = new_cluster(work, running)
            try:
                for kind in kinds:
                    for rate in rates:
                        rows.append(cluster_run(cluster, kind, rate, args.window))
                        rows.append(bare_run(kind, running[kind].url, rate, args.window))
            finally:
                cluster.close()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\n" + table(rows, args.window), flush=True)
    for r in rows:
        for error, count in r.errors.items():
            print(f"  {r.broker} {r.rate}/s {r.who}: {count} × {error}", flush=True)
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
