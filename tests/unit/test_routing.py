"""Routing is a pure function of the candidates: tables of who gets a slot."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from raftsched.model import Route, RouteStrategy
from raftsched.routing import Candidate, DueDensity, NodeLoad, eligible, pick_nodes


def node(
    node_id: str, running: int = 0, capacity: int = 4, up: bool = True, draining: bool = False, **tags: str
) -> Candidate:
    return Candidate(id=node_id, tags=tags, capacity=capacity, running=running, up=up, draining=draining)


NODES = [
    node("n1", 3, zone="a"),
    node("n2", 0, zone="b"),
    node("n3", 1, zone="a"),
    node("n4", up=False, zone="a"),
]


def route(strategy: str, shards: int = 1, **tags: str) -> Route:
    return Route(strategy=RouteStrategy(strategy), tags=tags, shards=shards)


@pytest.mark.parametrize(
    ("the_route", "expected"),
    [
        (route("least_loaded"), ["n2"]),
        (route("least_loaded", zone="a"), ["n3"]),
        (route("least_loaded", zone="c"), []),
        (route("broadcast"), ["n1", "n2", "n3"]),
        (route("broadcast", zone="a"), ["n1", "n3"]),
    ],
)
def test_fixed_choices(the_route: Route, expected: list[str]) -> None:
    assert pick_nodes(the_route, "job", "job@1", NODES) == expected


def test_down_and_draining_nodes_never_get_runs() -> None:
    nodes = [node("n1", draining=True), node("n2", up=False), node("n3")]
    for strategy in RouteStrategy:
        picked = pick_nodes(route(strategy.value, shards=3), "job", "s", nodes)
        assert set(picked) == {"n3"}, strategy
    assert [c.id for c in eligible(nodes, {})] == ["n3"]


def test_full_nodes_are_avoided_while_others_have_room() -> None:
    nodes = [
        node("n1", running=4, capacity=4),
        node("n2", running=1, capacity=1),
        node("n3", running=9, capacity=10),
    ]
    assert pick_nodes(route("least_loaded"), "job", "s", nodes) == ["n3"]
    assert pick_nodes(route("round_robin"), "job", "s", nodes, counter=0) == ["n3"]
    full = [node("n1", running=4, capacity=4)]
    assert pick_nodes(route("least_loaded"), "job", "s", full) == ["n1"]  # all full: still runs (queues)


def test_round_robin_cycles_in_id_order() -> None:
    picks = [pick_nodes(route("round_robin"), "job", "s", NODES, counter=k)[0] for k in range(6)]
    assert picks == ["n1", "n2", "n3", "n1", "n2", "n3"]


def test_hash_is_stable_per_job_and_moves_only_the_departed_nodes_jobs() -> None:
    jobs = [f"job-{i}" for i in range(200)]
    before = {j: pick_nodes(route("hash"), j, "any", NODES)[0] for j in jobs}
    again = {j: pick_nodes(route("hash"), j, "other salt", NODES)[0] for j in jobs}
    assert before == again
    assert len(set(before.values())) == 3  # spread over the live nodes
    without_n2 = [n for n in NODES if n.id != "n2"]
    after = {j: pick_nodes(route("hash"), j, "any", without_n2)[0] for j in jobs}
    assert all(after[j] == before[j] for j in jobs if before[j] != "n2")


def test_random_is_deterministic_per_salt_and_spreads() -> None:
    picks = [pick_nodes(route("random"), "job", f"job@{k}", NODES)[0] for k in range(300)]
    assert picks == [pick_nodes(route("random"), "job", f"job@{k}", NODES)[0] for k in range(300)]
    assert {p: picks.count(p) for p in set(picks)}.keys() == {"n1", "n2", "n3"}


def test_shards_give_n_runs_spread_over_nodes() -> None:
    picked = pick_nodes(route("shards", shards=5), "job", "job@1", NODES)
    assert len(picked) == 5 and set(picked) == {"n1", "n2", "n3"}
    assert pick_nodes(route("shards", shards=2, zone="a"), "job", "job@1", NODES) in (
        ["n1", "n3"],
        ["n3", "n1"],
    )


LOADED = [
    Candidate(id="n1", tags={"zone": "a"}, capacity=3, running=1),
    Candidate(id="n2", tags={"zone": "b"}, capacity=2, running=0),
    Candidate(id="n3", tags={"zone": "a"}, capacity=4, running=2),
    Candidate(id="n4", tags={"zone": "a"}, capacity=4, running=0, draining=True),
    Candidate(id="n5", tags={"zone": "b"}, capacity=1, running=0),
]
ROUTES = [
    Route(strategy=strategy, tags=tags, shards=3 if strategy is RouteStrategy.SHARDS else 1)
    for strategy, tags in itertools.product(RouteStrategy, ({}, {"zone": "a"}, {"zone": "c"}))
]


def add_load(candidates: list[Candidate], node_id: str) -> list[Candidate]:
    """The old way: a new list with the node's Candidate replaced, per assigned run."""
    return [dataclasses.replace(c, running=c.running + 1) if c.id == node_id else c for c in candidates]


def test_node_load_picks_as_pick_nodes_on_the_raised_load() -> None:
    """Thirty-six picks in a row, every strategy and tag set: the same nodes as the load fills up."""
    load, candidates = NodeLoad(LOADED), list(LOADED)
    for k, the_route in enumerate(ROUTES * 2):
        salt = f"job{k}@{k * 1000}"
        expected = pick_nodes(the_route, f"job{k}", salt, candidates, counter=k)
        assert load.pick(the_route, f"job{k}", salt, counter=k) == expected, the_route
        for node in expected:
            load.add(node)
            candidates = add_load(candidates, node)
    assert {c.id: c.running for c in candidates} == {c.id: load.running(c) for c in LOADED}


def test_planner_grain_spreads_nodes_within_a_step_and_still_steers_past_it() -> None:
    """Loads that differ by less than capacity/grain are equal for the planner: a batch spreads
    over them by hash instead of filling the least loaded first; a real difference still steers."""
    lagging = [node("n1", 0, capacity=256), node("n2", 20, capacity=256), node("n3", 30, capacity=256)]
    exact, coarse = NodeLoad(lagging), NodeLoad(lagging, grain=8)
    picked_exact = [exact.pick(route("least_loaded"), "j", f"j@{i}")[0] for i in range(30)]
    picked_coarse = [coarse.pick(route("least_loaded"), "j", f"j@{i}")[0] for i in range(30)]
    assert set(picked_exact) == {"n1"}  # exact: the lagging figure wins every pick
    assert {picked_coarse.count(n) for n in ("n1", "n2", "n3")} <= set(range(5, 16))  # spread
    busy = [node("n1", 0, capacity=256), node("n2", 100, capacity=256)]
    steered = NodeLoad(busy, grain=8)
    assert {steered.pick(route("least_loaded"), "j", f"j@{i}")[0] for i in range(20)} == {"n1"}


def test_due_density_spreads_runs_due_together_and_remembers_across_batches() -> None:
    """Among equally loaded nodes, the next run goes to the node with the fewest runs due near it:
    an aligned burst splits evenly, and a later batch evens out what an earlier one left."""
    density = DueDensity(bucket_ms=50)
    nodes = [node(f"n{i}", 0, capacity=256) for i in (1, 2, 3)]
    first = NodeLoad(nodes, grain=8, density=density)
    for i in range(31):
        first.add(first.pick(route("least_loaded"), f"j{i}", f"j{i}@1000", due_ms=1000)[0], 1000)
    assert sorted(density.count(n, 1000) for n in ("n1", "n2", "n3")) == [10, 10, 11]
    second = NodeLoad(nodes, grain=8, density=density)  # the next plan: fresh counts, same memory
    for i in range(2):
        second.add(second.pick(route("least_loaded"), f"k{i}", f"k{i}@1010", due_ms=1010)[0], 1010)
    assert [density.count(n, 1049) for n in ("n1", "n2", "n3")] == [11, 11, 11]
    assert density.count("n1", 1050) == 0  # another bucket
    density.forget_before(1050)
    assert density.count("n1", 1000) == 0
