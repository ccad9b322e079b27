"""Full outputs on the executing node's disk: one file per attempt, bounded in number and bytes.

The replicated state keeps only a tail of each output (DESIGN.md §3, "bounded state"); the full
output of every attempt is appended to `<output_dir>/<safe run id>.<attempt>.log` on the node that
ran it, and `GET /v1/runs/{run_id}/output` serves it from there. `prune_outputs` keeps the
directory within a number of files and a number of bytes, deleting the least recently written
files first and never a file that is still being written.

File names are safe for any run id: characters outside `[A-Za-z0-9._~@-]` are %-escaped (so
`/`, NUL and `%` itself can never reach the file system raw and distinct ids never collide), a
leading dot is escaped (no hidden files, no `.` or `..`), and an id too long for a file name is
cut and suffixed with `%H` and a hash of the whole id.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["PruneResult", "output_file_name", "output_path", "prune_outputs"]

log = logging.getLogger(__name__)

SUFFIX = ".log"
_MAX_STEM = 180  # leaves room for ".<attempt>.log" under the usual 255-byte name limit


def output_file_name(run_id: str, attempt: int) -> str:
    """`<safe run id>.<attempt>.log`: injective in (run_id, attempt), safe on any file system."""
    safe = quote(run_id, safe="@~._-")  # letters and digits are never quoted
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    if len(safe) > _MAX_STEM:
        digest = hashlib.blake2b(run_id.encode(), digest_size=12).hexdigest()
        safe = f"{safe[: _MAX_STEM - 26]}%H{digest}"  # quote() never writes "%H": no collision
    return f"{safe}.{int(attempt)}{SUFFIX}"


def output_path(output_dir: Path, run_id: str, attempt: int) -> Path:
    return output_dir / output_file_name(run_id, attempt)


@dataclass(frozen=True, slots=True)
class PruneResult:
    kept_files: int
    kept_bytes: int
    removed_files: int
    removed_bytes: int


def prune_outputs(
    output_dir: Path, *, keep_files: int, keep_bytes: int, busy: Container[str] = ()
) -> PruneResult:
    """Delete the oldest output files until at most `keep_files` files and `keep_bytes` bytes remain.

    Age is the last write (mtime). File names in `busy` (runs still executing) are never deleted,
    though they count. Blocking (it lists and stats the directory): call it from a thread. A file
    that cannot be deleted is logged and skipped; a missing directory holds nothing.
    """
    entries = _scan(output_dir)
    files, total = len(entries), sum(size for _, _, size in entries)
    removed, removed_bytes = 0, 0
    for _, name, size in entries:
        if files <= keep_files and total <= keep_bytes:
            break
        if name in busy:
            continue
        try:
            os.unlink(output_dir / name)
        except FileNotFoundError:
            pass  # gone already: it no longer counts
        except OSError as exc:
            log.warning("cannot delete old output %s: %s", output_dir / name, exc)
            continue
        files, total = files - 1, total - size
        removed, removed_bytes = removed + 1, removed_bytes + size
    if removed:
        log.info("pruned %d output files (%d bytes) in %s", removed, removed_bytes, output_dir)
    return PruneResult(files, total, removed, removed_bytes)


def _scan(output_dir: Path) -> list[tuple[int, str, int]]:
    """(mtime_ns, name, size) of every output file, oldest first."""
    entries = []
    try:
        with os.scandir(output_dir) as it:
            for entry in it:
                if not entry.name.endswith(SUFFIX):
                    continue
                try:
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # deleted while we looked
                entries.append((st.st_mtime_ns, entry.name, st.st_size))
    except FileNotFoundError:
        return []
    entries.sort()
    return entries
