"""Least privilege on disk: the node's umask, the data directory it refuses, and the modes of the
files and directories it writes (the whole node is in tests/integration/test_security_disk.py)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_config import SECRET, ini, write

from raftsched import config, datadir
from raftsched.attempts import AttemptJournal
from raftsched.errors import ConfigError
from raftsched.executors import OutputSink, base
from raftsched.executors.outputs import OutputRetention, output_path
from raftsched.node import private_umask
from raftsched.replication import _journal_factory

STARTED_UMASK = 0o022


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process started with umask 022 that has captured nothing yet; both restored after."""
    base.task_umask.cache_clear()
    before = os.umask(STARTED_UMASK)
    try:
        yield
    finally:
        os.umask(before)
        base.task_umask.cache_clear()


def test_the_node_narrows_its_umask_and_tasks_keep_the_one_it_started_with(started: None) -> None:
    assert private_umask() == STARTED_UMASK
    assert os.umask(datadir.PRIVATE_UMASK) == 0o077  # (reads it back, leaving it as it was)
    assert base.task_umask() == STARTED_UMASK
    assert private_umask() == STARTED_UMASK  # idempotent: the first capture wins


def test_prepare_creates_the_directories_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    datadir.prepare(data_dir, data_dir / "n1")
    assert mode(data_dir) == 0o700 and mode(data_dir / "n1") == 0o700


@pytest.mark.parametrize(("which", "loose"), [("data_dir", 0o777), ("data_dir", 0o770), ("node", 0o757)])
def test_a_data_dir_others_can_write_is_refused(tmp_path: Path, which: str, loose: int) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "n1").mkdir(parents=True, mode=0o700)
    (data_dir if which == "data_dir" else data_dir / "n1").chmod(loose)
    with pytest.raises(ConfigError) as info:
        datadir.prepare(data_dir, data_dir / "n1")
    assert (info.value.section, info.value.key) == ("cluster", "data_dir")
    assert "writable by group or others" in str(info.value) and f"{loose:04o}" in str(info.value)


def test_a_data_dir_of_another_user_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    owner = tmp_path.stat().st_uid
    monkeypatch.setattr(datadir.os, "geteuid", lambda: owner + 1)
    with pytest.raises(ConfigError) as info:
        datadir.prepare(tmp_path, tmp_path / "n1")
    assert info.value.key == "data_dir" and f"owned by uid {owner}" in str(info.value)


def test_a_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("")
    with pytest.raises(ConfigError, match="not a directory"):
        datadir.prepare(tmp_path / "data", tmp_path / "data" / "n1")


def test_what_an_older_version_left_readable_is_tightened(tmp_path: Path) -> None:
    node_dir = tmp_path / "n1"
    (node_dir / "outputs").mkdir(parents=True)
    for path, loose in ((node_dir, 0o755), (node_dir / "outputs", 0o755)):
        path.chmod(loose)
    for name in ("raft.journal", "raft.dump", "attempts.jsonl"):
        (node_dir / name).write_text("x")
        (node_dir / name).chmod(0o644)
    (node_dir / "run.sh").write_text("x")
    (node_dir / "run.sh").chmod(0o755)
    (node_dir / "elsewhere").symlink_to(tmp_path)
    tmp_path.chmod(0o755)
    datadir.prepare(tmp_path, node_dir)
    assert mode(node_dir) == 0o700 and mode(node_dir / "outputs") == 0o700
    assert {mode(node_dir / n) for n in ("raft.journal", "raft.dump", "attempts.jsonl")} == {0o600}
    assert mode(node_dir / "run.sh") == 0o700  # the owner's own bits are kept
    assert mode(tmp_path) == 0o755  # the cluster's data_dir is checked, not changed


def test_the_default_single_node_refuses_a_loose_data_dir_before_writing_its_secret(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data").chmod(0o777)
    with pytest.raises(ConfigError) as info:
        config.default_single_node(tmp_path / "data")
    assert info.value.key == "data_dir" and not (tmp_path / "data" / "secret").exists()


def test_files_the_node_writes_are_private(started: None, tmp_path: Path) -> None:
    cluster, node = config.load(write(tmp_path, ini({"data_dir": "./data"})), "n1")
    assert cluster.secret == SECRET
    private_umask()
    node_dir = cluster.node_data_dir(node.id)
    datadir.prepare(cluster.data_dir, node_dir)
    journal_file = node_dir / "raft.journal"
    raft_journal = _journal_factory(True)(str(journal_file))  # as the node's Replicator makes it
    raft_journal.add(b"entry", 1, 1)
    raft_journal.setCurrentTerm(1, None)  # and its .meta file
    raft_journal._destroy()
    outputs = OutputRetention(node_dir / "outputs", keep_files=10, keep_bytes=1 << 20)
    outputs.scan()
    with OutputSink(4, output_path(outputs.directory, "j@1", 1)) as sink:
        sink.write(b"more than the tail")
    journal = AttemptJournal(node_dir / "attempts.jsonl")
    journal.started("j@1", 1, 0)
    journal.flush()
    journal.close()
    assert {mode(p) for p in (cluster.data_dir, node_dir, outputs.directory)} == {0o700}
    files = [
        journal_file,
        Path(f"{journal_file}.meta"),
        output_path(outputs.directory, "j@1", 1),
        journal.path,
    ]
    assert {mode(p) for p in files} == {0o600}


async def test_run_node_refuses_a_loose_data_dir_before_starting_anything(
    started: None, tmp_path: Path
) -> None:
    from raftsched.node import run_node

    cluster, node = config.load(write(tmp_path, ini({"data_dir": "./data"})), "n1")
    cluster.data_dir.mkdir(mode=0o777)
    cluster.data_dir.chmod(0o777)
    with pytest.raises(ConfigError, match=r"\[cluster\] data_dir: .* writable by group or others"):
        await asyncio.wait_for(run_node(cluster, node), 5)
    assert list(cluster.data_dir.iterdir()) == []
