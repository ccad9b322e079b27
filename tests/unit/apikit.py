"""An admin API over a real State and an in-memory Raft, for fast API tests."""

from __future__ import annotations

from typing import Any

from raftsched.clock import FakeClock
from raftsched.errors import RaftschedError
from raftsched.replication import RaftStatus
from raftsched.state import State

T0 = 1_800_000_000_000


class MemoryRaft:
    """Commits by applying at once; `fail_with` makes the next proposals raise that error."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.fail_with: RaftschedError | None = None
        self.proposals = 0
        self.membership: list[tuple[str, str]] = []

    async def propose(self, data: bytes, *, timeout_s: float = 10.0) -> dict[str, Any]:
        if self.fail_with is not None:
            raise self.fail_with
        self.proposals += 1
        return self.state.apply(data)

    def status(self) -> RaftStatus:
        return RaftStatus(
            role="leader",
            leader="127.0.0.1:7101",
            term=1,
            commit_index=self.state.applied,
            applied_index=self.state.applied,
            log_len=self.state.applied,
            connected={},
            match_index={},
        )

    async def wait_applied(self, index: int, timeout_s: float = 5.0) -> None:
        return None

    def tick_alive(self) -> bool:
        return True

    async def change_membership(self, kind: str, addr: str, *, timeout_s: float = 10.0) -> None:
        self.membership.append((kind, addr))


def register(
    state: State,
    clock: FakeClock,
    node_id: str,
    *,
    tags: dict[str, str] | None = None,
    policy: dict[str, Any] | None = None,
) -> None:
    """Node `node_id` registers itself (port 71xx/81xx by its number), publishing `policy` if given."""
    from raftsched.commands import CommandType, encode

    n = int(node_id.lstrip("n"))
    body: dict[str, Any] = {
        "node": node_id,
        "http": f"http://127.0.0.1:{8100 + n}",
        "raft": f"127.0.0.1:{7100 + n}",
        "tags": tags if tags is not None else {"zone": "a"},
        "capacity": 4,
        "now_ms": clock.now_ms(),
    }
    if policy is not None:
        body["policy"] = policy
    assert state.apply(encode(CommandType.REGISTER_NODE, body))["ok"]


def boot(state: State, clock: FakeClock) -> None:
    from raftsched.commands import CommandType, encode

    register(state, clock, "n1")
    state.apply(encode(CommandType.BEGIN_TERM, {"term": 1, "leader": "n1", "now_ms": clock.now_ms()}))


def raise_cluster_version(state: State, clock: FakeClock) -> None:
    """Every registered node publishes the current command version and the leader commits it."""
    from raftsched.commands import VERSION, CommandType, encode

    for node_id, node in list(state.nodes.items()):
        body = {"node": node_id, "http": node.http, "raft": node.raft, "tags": node.tags}
        body |= {"capacity": node.capacity, "now_ms": clock.now_ms(), "commands": VERSION}
        assert state.apply(encode(CommandType.REGISTER_NODE, body))["ok"]
    body = {"term": state.term, "now_ms": clock.now_ms(), "version": VERSION}
    assert state.apply(encode(CommandType.SET_CLUSTER_VERSION, body))["ok"]
