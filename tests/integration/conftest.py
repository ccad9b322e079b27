from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster import Cluster, Sink


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[type[Cluster]]:
    made: list[Cluster] = []

    def factory(**kwargs: object) -> Cluster:
        c = Cluster(tmp_path / f"c{len(made)}", **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield factory  # type: ignore[misc]
    for c in made:
        c.close()
