"""Pure node choice: which live nodes get a job's runs.

Every function takes the candidates and their load as data and returns node ids; the
leader calls it when firing, the state when it must move a run (deterministic: no random
source but a stable hash of the run's identity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .ids import stable_hash
from .model import Route, RouteStrategy

__all__ = ["PLANNER_GRAIN", "Candidate", "DueDensity", "NodeLoad", "eligible", "pick_nodes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Candidate:
    id: str
    tags: Mapping[str, str]
    capacity: int
    running: int
    up: bool = True
    draining: bool = False
    brokers: frozenset[str] | None = None  # the brokers the node has; None: not published (any)


def eligible(
    candidates: Sequence[Candidate], tags: Mapping[str, str], broker: str | None = None
) -> list[Candidate]:
    """Nodes that are up, not draining, carry every tag the job asks for and have its broker (a
    message task's), sorted by id."""
    out = [
        c
        for c in candidates
        if c.up
        and not c.draining
        and all(c.tags.get(k) == v for k, v in tags.items())
        and (broker is None or c.brokers is None or broker in c.brokers)
    ]
    return sorted(out, key=lambda c: c.id)


def pick_nodes(
    route: Route,
    job_id: str,
    salt: str,
    candidates: Sequence[Candidate],
    *,
    counter: int = 0,
    broker: str | None = None,
) -> list[str]:
    """Node ids for one slot: one per run (broadcast: every node; shards: `route.shards`).

    `salt` varies per slot (e.g. the run id) and makes `random` deterministic; `counter`
    is the job's fire count, for `round_robin`. Returns [] when no node is eligible.
    """
    return NodeLoad(candidates).pick(route, job_id, salt, counter=counter, broker=broker)


PLANNER_GRAIN = 8  # the leader's least-loaded: loads within 1/8 of capacity count as equal


class DueDensity:
    """How many runs the leader has assigned to each node, per `bucket_ms` of due time.

    Fire-ahead assigns runs seconds before they are due, while the executing counts that
    least-loaded compares lag behind the reports. Among nodes equally loaded by those counts,
    the one with the fewest runs due in the same bucket gets the next: a node never takes a
    whole stretch of due times, nor the bulk of an aligned burst. The leader's own memory,
    not replicated: a new leader starts empty, and a fire that did not commit counts until its
    bucket is forgotten.
    """

    __slots__ = ("bucket_ms", "_counts")

    def __init__(self, bucket_ms: int = 50) -> None:
        self.bucket_ms = bucket_ms
        self._counts: dict[int, dict[str, int]] = {}

    def count(self, node_id: str, due_ms: int) -> int:
        return self._counts.get(due_ms // self.bucket_ms, {}).get(node_id, 0)

    def add(self, node_id: str, due_ms: int) -> None:
        bucket = self._counts.setdefault(due_ms // self.bucket_ms, {})
        bucket[node_id] = bucket.get(node_id, 0) + 1

    def forget_before(self, ms: int) -> None:
        """Drop the buckets wholly before `ms` (their runs are due: the executing counts know)."""
        first = ms // self.bucket_ms
        for bucket in [b for b in self._counts if b < first]:
            del self._counts[bucket]


class NodeLoad:
    """The candidates as one batch of choices sees them: each tag set's eligible nodes, filtered and
    sorted once, and the runs the batch has assigned so far (`add`), counted in a dict.

    `pick` answers exactly as `pick_nodes` would on the candidates with `running` raised by
    what was added: eligibility does not depend on load, so the cached lists stay valid.

    `grain`: least-loaded compares loads in steps of 1/grain of a node's capacity and spreads
    nodes within one step by the slot's hash. The leader's planner uses `PLANNER_GRAIN`: its load
    figures lag by the report round trip, and exact comparisons of lagging figures send a whole
    batch of fires to one node. None (exact) is what the replicated retry routing always used.
    `density` (the planner's) breaks ties between equally loaded nodes by the runs each has due
    near the run's due time (`DueDensity`), before the hash.
    """

    __slots__ = ("_candidates", "_eligible", "added", "_grain", "_density")

    def __init__(
        self,
        candidates: Sequence[Candidate],
        *,
        grain: int | None = None,
        density: DueDensity | None = None,
    ) -> None:
        self._candidates = candidates
        self._eligible: dict[tuple[frozenset[tuple[str, str]], str | None], list[Candidate]] = {}
        self.added: dict[str, int] = {}
        self._grain = grain
        self._density = density

    def eligible(self, tags: Mapping[str, str], broker: str | None = None) -> list[Candidate]:
        key = (frozenset(tags.items()), broker)
        nodes = self._eligible.get(key)
        if nodes is None:
            nodes = self._eligible[key] = eligible(self._candidates, tags, broker)
        return nodes

    def add(self, node_id: str, due_ms: int | None = None) -> None:
        """Count one more run on `node_id` (due at `due_ms`, for the density)."""
        self.added[node_id] = self.added.get(node_id, 0) + 1
        if self._density is not None and due_ms is not None:
            self._density.add(node_id, due_ms)

    def running(self, c: Candidate) -> int:
        return c.running + self.added.get(c.id, 0)

    def pick(
        self,
        route: Route,
        job_id: str,
        salt: str,
        *,
        counter: int = 0,
        due_ms: int | None = None,
        broker: str | None = None,
    ) -> list[str]:
        """As `pick_nodes`, on this view; `due_ms`: when the run is due (for the density)."""
        nodes = self.eligible(route.tags, broker)
        if not nodes:
            return []
        strategy = route.strategy
        if strategy is RouteStrategy.BROADCAST:
            return [c.id for c in nodes]
        if strategy is RouteStrategy.SHARDS:
            free = sorted(nodes, key=lambda c: (self.full(c), stable_hash(salt, c.id)))
            return [free[i % len(free)].id for i in range(route.shards)]
        with_room = [c for c in nodes if not self.full(c)] or nodes
        if strategy is RouteStrategy.ROUND_ROBIN:
            return [with_room[counter % len(with_room)].id]
        if strategy is RouteStrategy.RANDOM:
            return [with_room[stable_hash(salt) % len(with_room)].id]
        if strategy is RouteStrategy.HASH:
            # Rendezvous hashing: stable per job, moves only the jobs of a node that leaves.
            return [max(nodes, key=lambda c: stable_hash(job_id, c.id)).id]
        # Least loaded: free capacity first; ties broken by a stable hash so equal nodes share the load.
        best = min(
            with_room,
            key=lambda c: (self.full(c), self.load(c), self.near(c, due_ms), stable_hash(salt, c.id)),
        )
        return [best.id]

    def near(self, c: Candidate, due_ms: int | None) -> int:
        """The runs this leader has assigned to `c` due near `due_ms` (0 without a density)."""
        return 0 if self._density is None or due_ms is None else self._density.count(c.id, due_ms)

    def load(self, c: Candidate) -> float:
        """How loaded least-loaded sees `c`: its share of capacity in use, exact or in grains."""
        if self._grain is None:
            return self.running(c) / max(1, c.capacity)
        return self.running(c) * self._grain // max(1, c.capacity)

    def full(self, c: Candidate) -> bool:
        return self.running(c) >= c.capacity
