"""Check the Raft journal and snapshot at start, before PySyncObj reads them.

PySyncObj trusts its files: a journal cut inside its last record, or a changed byte, is replayed
as if it were an entry, and the node then runs on a state its peers do not have. So before the
node starts we walk the journal's records (PySyncObj's `FileJournal` format: a 40-byte header
whose last field is the end of the last record, then `size | idx term command | size` records),
check that every record is whole, that indexes follow one another, and that every command of
ours has the CRC it was written with (`commands.checked_payload`); and we read the snapshot
through, which checks its gzip CRC.

- A last record that is cut short was never acknowledged (an entry is acknowledged only after it
  is written whole): it is cut off, and the leader sends the entry again.
- Anything else is damage we cannot repair alone: the node refuses to start, naming the file and
  offset. Wiping a voter's log and letting it rejoin is not safe in general (it may hold a
  committed entry that a majority needs), so that is left to the operator (docs/operations.md).
"""

from __future__ import annotations

import codecs
import gzip
import io
import logging
import pickle
import struct
import zlib
from pathlib import Path

from .commands import DecodeError, checked_payload
from .errors import RaftschedError

__all__ = ["JournalDamaged", "check_data_dir"]

log = logging.getLogger(__name__)

_HEADER = 40  # name (24) + version (8) + format (4) + end of the last record (4)
_END_AT = 36
_REGULAR = 0


class JournalDamaged(RaftschedError):
    code, status = "journal_damaged", 500


class _NoGlobals(pickle.Unpickler):
    """Our entries are tuples of ints and bytes (which pickle protocol 2, PySyncObj's, writes as
    `_codecs.encode(text, "latin1")`): any other global is not ours."""

    def find_class(self, module: str, name: str) -> object:
        if (module, name) == ("_codecs", "encode"):
            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected {module}.{name}")


def check_data_dir(data_dir: Path) -> None:
    """Raise JournalDamaged if the journal or snapshot is damaged; repair a torn last record."""
    journal = data_dir / "raft.journal"
    if journal.exists():
        check_journal(journal)
    dump = data_dir / "raft.dump"
    if dump.exists():
        try:
            with gzip.open(dump, "rb") as f:
                while f.read(1 << 20):
                    pass
        except (OSError, EOFError, zlib.error) as exc:
            raise JournalDamaged(f"snapshot {dump} is damaged ({exc}): refusing to start") from None


def check_journal(path: Path) -> None:
    data = path.read_bytes()
    if len(data) < _HEADER:
        raise JournalDamaged(f"journal {path} is shorter than its header: refusing to start")
    (end,) = struct.unpack_from("<I", data, _END_AT)
    offset, last_index = _HEADER, None
    while offset < end:
        record = _record(data, offset, end)
        if record == "missing" and len(data) < end:  # the file was cut inside its last record
            _cut(path, offset, end)
            return
        if isinstance(record, str):
            raise _damaged(path, offset, "a record whose length fields disagree")
        index, command, size = record
        if last_index is not None and index != last_index + 1:
            raise _damaged(path, offset, f"entry {index} follows entry {last_index}")
        problem = _check_command(command)
        if problem:
            raise _damaged(path, offset, problem)
        last_index, offset = index, offset + size


def _record(data: bytes, offset: int, end: int) -> tuple[int, bytes, int] | str:
    """(index, command, record size); "missing" when the record runs past the end of the file
    (it was being written when the node stopped), "bad" when its bytes are there but wrong."""
    if offset + 4 > len(data):
        return "missing"
    (size,) = struct.unpack_from("<I", data, offset)
    if offset + 8 + size > len(data):
        return "missing"
    if size < 16 or offset + 8 + size > end:
        return "bad"
    (trailer,) = struct.unpack_from("<I", data, offset + 4 + size)
    if trailer != size:
        return "bad"
    index, _term = struct.unpack_from("<QQ", data, offset + 4)
    return index, data[offset + 20 : offset + 4 + size], size + 8


def _check_command(command: bytes) -> str | None:
    if not command:
        return "an empty entry"
    if command[0] != _REGULAR:
        return None  # no-op, membership and version entries are PySyncObj's own
    try:
        entry = _NoGlobals(io.BytesIO(command[1:])).load()
    except Exception as exc:  # noqa: BLE001 - any failure to read the entry is damage
        return f"an entry that cannot be read ({type(exc).__name__})"
    args = entry[1] if isinstance(entry, tuple) and len(entry) >= 2 else None
    if not (isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], bytes)):
        return "an entry of an unexpected shape"
    try:
        checked_payload(args[0])
    except DecodeError as exc:
        return str(exc)
    return None


def _damaged(path: Path, offset: int, what: str) -> JournalDamaged:
    return JournalDamaged(
        f"journal {path} is damaged at byte {offset}: {what}. Refusing to start. If the other nodes "
        f"are healthy, move {path.parent} aside and start this node empty to rejoin from them."
    )


def _cut(path: Path, offset: int, end: int) -> None:
    log.warning(
        "journal %s: a record cut short at byte %d (of %d) is dropped; the leader resends it",
        path,
        offset,
        end,
    )
    with path.open("r+b") as f:
        f.seek(_END_AT)
        f.write(struct.pack("<I", offset))
