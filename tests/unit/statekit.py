"""Helpers to drive the state machine with encoded commands in unit tests."""

from __future__ import annotations

from typing import Any

from raftsched.commands import CommandType, encode
from raftsched.state import State

T0 = 1_800_000_000_000


def job_spec(job_id: str = "j", **over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "id": job_id,
        "schedule": {"every": 1},
        "task": {"type": "shell", "command": ["true"]},
    }
    spec.update(over)
    return spec


class Driver:
    """A state plus shorthands for each command, with time and term passed in."""

    def __init__(self) -> None:
        self.state = State()
        self.log: list[bytes] = []

    def cmd(
        self, t: CommandType, rid: str | None = None, v: int | None = None, **body: Any
    ) -> dict[str, Any]:
        data = encode(t, body, rid=rid, v=v)
        self.log.append(data)
        return self.state.apply(data)

    def boot(self, nodes: tuple[str, ...] = ("n1", "n2", "n3"), term: int = 1, version: int = 1) -> None:
        """Nodes registered, a leader's term begun; with `version` above 1, every node publishes
        it and the leader commits it as the cluster's version, as current nodes do."""
        published = {"commands": version} if version > 1 else {}
        for n in nodes:
            self.cmd(
                CommandType.REGISTER_NODE,
                node=n,
                http=f"http://{n}",
                raft=f"{n}:1",
                tags={},
                capacity=4,
                now_ms=T0,
                **published,
            )
        assert self.cmd(CommandType.BEGIN_TERM, term=term, leader=nodes[0], now_ms=T0)["ok"]
        if version > 1:
            assert self.cmd(CommandType.SET_CLUSTER_VERSION, term=term, now_ms=T0, version=version)["ok"]

    def add(self, job_id: str = "j", now_ms: int = T0, **over: Any) -> dict[str, Any]:
        return self.cmd(
            CommandType.PUT_JOB,
            spec=job_spec(job_id, **over),
            now_ms=now_ms,
            mode="create",
            next_nominal_ms=now_ms + 1000,
        )

    def fire(
        self, job_id: str, nominal_ms: int, node: str = "n2", term: int = 1, **extra: Any
    ) -> dict[str, Any]:
        inc = self.state.jobs[job_id].incarnation
        item = {
            "job_id": job_id,
            "incarnation": inc,
            "nominal_ms": nominal_ms,
            "due_ms": nominal_ms,
            "nodes": [node],
            "next_nominal_ms": nominal_ms + 1000,
            **extra,
        }
        return self.cmd(CommandType.FIRE_RUNS, term=term, now_ms=nominal_ms - 500, fires=[item], skips=[])

    def start(self, run_id: str, node: str = "n2", attempt: int = 1, at: int = T0) -> dict[str, Any]:
        return self.cmd(
            CommandType.START_RUNS,
            node=node,
            now_ms=at,
            items=[{"run_id": run_id, "attempt": attempt, "started_ms": at}],
        )

    def finish(
        self,
        run_id: str,
        outcome: str = "succeeded",
        node: str = "n2",
        attempt: int = 1,
        at: int = T0,
        **extra: Any,
    ) -> dict[str, Any]:
        return self.cmd(
            CommandType.FINISH_RUNS,
            node=node,
            now_ms=at,
            items=[
                {
                    "run_id": run_id,
                    "attempt": attempt,
                    "outcome": outcome,
                    "finished_ms": at,
                    "exit_code": 0,
                    "output": "out",
                    **extra,
                }
            ],
        )


def upgrade(d: Driver, version: int = 2, term: int = 1, now_ms: int = T0) -> None:
    """Every node publishes command `version`, then the leader commits it as the cluster's."""
    for node in list(d.state.nodes):
        record = d.state.nodes[node]
        d.cmd(
            CommandType.REGISTER_NODE,
            node=node,
            http=record.http,
            raft=record.raft,
            tags=dict(record.tags),
            capacity=record.capacity,
            commands=version,
            now_ms=now_ms,
        )
    result = d.cmd(CommandType.SET_CLUSTER_VERSION, term=term, now_ms=now_ms, version=version)
    assert result["ok"], result
