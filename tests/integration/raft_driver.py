"""One Raft node in its own process, for tests/integration/test_replication.py.

    python raft_driver.py '<json settings>'

Builds a `State` and a `Replicator` on an asyncio loop in the main thread (PySyncObj's tick
thread lives as long as the thread that constructed the SyncObj), then serves JSON lines:
requests on stdin `{"id": n, "op": ..., ...}`, one reply per request on stdout
`{"id": n, ...}`. The first line it writes is `{"id": 0, "ready": true, "pid": ...}`.
Requests run as concurrent tasks, so a slow `propose` does not hold up a `status`.
EOF on stdin (the test process died) stops the node as `stop` does. Logs go to stderr.

Ops: `status`, `propose {data, timeout_s}`, `compact`, `stop`. Timers are ClusterConfig's defaults
unless the settings name them (see TIMERS).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from raftsched.config import ClusterConfig
from raftsched.replication import RaftSettings, Replicator
from raftsched.state import State


def _emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _status(rep: Replicator) -> dict[str, Any]:
    st = rep.status()
    sync = rep._require()
    serializer = getattr(sync, "_SyncObj__serializer", None)
    raft_log = getattr(sync, "_SyncObj__raftLog", None)
    state = rep.state
    with state.lock:
        jobs = {job_id: job.version for job_id, job in state.jobs.items()}
        runs = len(state.runs)
        dump_sha = hashlib.sha256(state.dump(locked=False)).hexdigest()
        digest = state.digest_hex()
    dump_file = rep.settings.data_dir / "raft.dump"
    return {
        "role": st.role,
        "leader": st.leader,
        "term": st.term,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "log_len": st.log_len,
        "connected": st.connected,
        "digest": digest,
        "jobs": jobs,
        "runs": runs,
        "dump_sha": dump_sha,
        "snapshot_loaded": rep.snapshot_loaded.is_set(),
        "tick_alive": rep.tick_alive(),
        # Private PySyncObj fields, read-only, for the compaction tests: a forked child is
        # running while the serializer's pid is not 0; the log's first index is the snapshot's.
        "serializing": getattr(serializer, "_Serializer__pid", 0) != 0,
        "first_log_index": _first_index(raft_log),
        "dump_file": dump_file.exists(),
        "journal": type(raft_log).__name__,
    }


def _first_index(raft_log: Any) -> int | None:
    """The journal's first index; compaction rewrites the journal on the tick thread meanwhile."""
    for _ in range(10):
        try:
            return int(raft_log[0][1])
        except IndexError:
            time.sleep(0.001)
    return None


async def _handle(rep: Replicator, req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    if op == "status":
        return _status(rep)
    if op == "compact":
        rep.force_compaction()
        return {}
    if op == "propose":
        started = time.monotonic()
        try:
            result = await rep.propose(req["data"].encode(), timeout_s=float(req.get("timeout_s", 10.0)))
        except Exception as exc:  # noqa: BLE001 - the test asserts on the class name
            return {"error": type(exc).__name__, "message": str(exc), "elapsed": time.monotonic() - started}
        return {"result": result, "elapsed": time.monotonic() - started}
    return {"error": "bad_op", "message": f"unknown op {op!r}"}


async def _serve(rep: Replicator, req: dict[str, Any]) -> None:
    try:
        reply = await _handle(rep, req)
    except Exception as exc:  # noqa: BLE001 - report, keep serving
        logging.exception("request %s failed", req)
        reply = {"error": type(exc).__name__, "message": str(exc)}
    _emit({"id": req["id"], **reply})


TIMERS = (
    "raft_min_timeout_s",
    "raft_max_timeout_s",
    "append_entries_period_s",
    "heartbeat_period_s",
    "auto_tick_period_s",
    "leader_fallback_timeout_s",
    "connection_timeout_s",
    "log_compaction_min_entries",
    "log_compaction_min_time_s",
    "fsync",
)


async def main(cfg: dict[str, Any]) -> None:
    # Timers as a node with the default configuration runs them; a test may override any.
    defaults = {f.name: f.default for f in dataclasses.fields(ClusterConfig) if f.name in TIMERS}
    settings = RaftSettings(
        self_addr=cfg["self_addr"],
        partner_addrs=tuple(cfg["partner_addrs"]),
        secret=cfg["secret"],
        data_dir=Path(cfg["data_dir"]),
        **{**defaults, **{k: v for k, v in cfg.items() if k in TIMERS}},
    )
    rep = Replicator(settings, State())
    rep.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    _emit({"id": 0, "ready": True, "pid": os.getpid()})
    tasks: set[asyncio.Task[None]] = set()
    stop_id = None
    while line := await reader.readline():
        req = json.loads(line)
        if req["op"] == "stop":
            stop_id = req["id"]
            break
        task = asyncio.create_task(_serve(rep, req))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for task in list(tasks):
        task.cancel()
    rep.stop()
    transport.close()
    if stop_id is not None:
        _emit({"id": stop_id})


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(threadName)s %(name)s %(levelname)s %(message)s",
    )
    asyncio.run(main(json.loads(sys.argv[1])))
