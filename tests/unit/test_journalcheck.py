"""The start-up check of the Raft journal: a torn tail is cut, any other damage is refused."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from raftsched.commands import CommandType, encode
from raftsched.journalcheck import JournalDamaged, check_data_dir, check_journal


def entry(n: int) -> bytes:
    command = encode(CommandType.NOOP, {"now_ms": 1_800_000_000_000 + n})
    return b"\x00" + pickle.dumps((0, (command,)), protocol=2)  # as PySyncObj pickles


def make_journal(path: Path, entries: int = 5) -> list[int]:
    """A real PySyncObj journal; returns the byte offset of each record."""
    journal = FileJournal(str(path))
    journal.add(b"\x01", 1, 1)  # PySyncObj's own no-op
    for n in range(entries):
        journal.add(entry(n), n + 2, 1)
    journal._destroy()
    data, offsets, offset = path.read_bytes(), [], 40
    while offset < struct.unpack_from("<I", data, 36)[0]:
        offsets.append(offset)
        offset += struct.unpack_from("<I", data, offset)[0] + 8
    return offsets


def end_of_records(path: Path) -> int:
    return struct.unpack_from("<I", path.read_bytes(), 36)[0]


def test_a_sound_journal_passes_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    make_journal(path)
    before = path.read_bytes()
    check_journal(path)
    assert path.read_bytes() == before


def test_a_record_cut_short_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    offsets = make_journal(path)
    with path.open("r+b") as f:
        f.truncate(offsets[-1] + 10)  # inside the last record
    check_journal(path)
    assert end_of_records(path) == offsets[-1]
    reopened = FileJournal(str(path))
    assert len(reopened) == len(offsets) - 1
    reopened._destroy()


def test_a_changed_byte_in_a_command_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    offsets = make_journal(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"1800000000002")
    data[at + 12] = ord("9")
    path.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match=f"byte {offsets[3]}: checksum mismatch"):
        check_journal(path)


@pytest.mark.parametrize("where", ["size", "trailer", "pickle"])
def test_damaged_framing_is_refused_never_cut(tmp_path: Path, where: str) -> None:
    path = tmp_path / "raft.journal"
    offsets = make_journal(path)
    data = bytearray(path.read_bytes())
    size = struct.unpack_from("<I", data, offsets[2])[0]
    if where == "size":
        struct.pack_into("<I", data, offsets[2], size + 3)
    elif where == "trailer":
        struct.pack_into("<I", data, offsets[2] + 4 + size, size - 1)
    else:
        data[offsets[2] + 21] ^= 0xFF  # inside the pickle of our entry
    path.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match="Refusing to start"):
        check_journal(path)
    assert end_of_records(path) == struct.unpack_from("<I", data, 36)[0]  # nothing was cut


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    dump = tmp_path / "raft.dump"
    dump.write_bytes(gzip.compress(pickle.dumps({"state": b"x" * 1000})))
    check_data_dir(tmp_path)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(JournalDamaged, match="snapshot"):
        check_data_dir(tmp_path)
