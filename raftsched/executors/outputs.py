"""Full outputs on the executing node's disk: one file per attempt, bounded in number and bytes.

The replicated state keeps only a tail of each output (DESIGN.md §3, "bounded state"); the full
output of an attempt whose tail cannot stand for it is written to
`<output_dir>/<safe run id>.<attempt>.log` on the node that ran it (see `base.OutputSink`), and
`GET /v1/runs/{run_id}/output` serves it from there. `OutputRetention` keeps the directory within a
number of files and a number of bytes, deleting the least recently written files first and never a
file that is still being written.

File names are safe for any run id: characters outside `[A-Za-z0-9._~@-]` are %-escaped (so
`/`, NUL and `%` itself can never reach the file system raw and distinct ids never collide), a
leading dot is escaped (no hidden files, no `.` or `..`), and an id too long for a file name is
cut and suffixed with `%H` and a hash of the whole id.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = ["OutputRetention", "PruneResult", "output_file_name", "output_path"]

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


class OutputRetention:
    """The output files of one directory, oldest first, in memory: pruning lists no directory.

    `scan` builds it once, when the node starts and before any run writes (blocking: from a
    thread); after that the worker `add`s each file as its run ends, so a file still being
    written is never in it and never deleted. `take_excess` (event loop) picks the oldest files
    over `keep_files` / `keep_bytes` and forgets them; `delete` (blocking) unlinks them.
    """

    def __init__(self, directory: Path, *, keep_files: int, keep_bytes: int) -> None:
        self.directory = directory
        self.keep_files = keep_files
        self.keep_bytes = keep_bytes
        self._files: deque[tuple[str, int]] = deque()  # (name, size), oldest first
        self.total_bytes = 0

    @property
    def files(self) -> int:
        return len(self._files)

    def scan(self) -> None:
        """Create the directory if needed, and take the files already in it, oldest first."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        for _, name, size in _scan(self.directory):
            self.add(name, size)

    def add(self, name: str, size: int) -> None:
        self._files.append((name, size))
        self.total_bytes += size

    def over(self) -> bool:
        return len(self._files) > self.keep_files or self.total_bytes > self.keep_bytes

    def take_excess(self) -> list[tuple[str, int]]:
        """The oldest files to delete to get within the limits, no longer counted here."""
        taken = []
        while self._files and self.over():
            name, size = self._files.popleft()
            self.total_bytes -= size
            taken.append((name, size))
        return taken

    def delete(self, files: list[tuple[str, int]]) -> PruneResult:
        """Unlink `files` (from `take_excess`). A file gone already is fine; one that cannot be
        deleted is logged and no longer tracked (the next scan, at the next start, sees it)."""
        removed, removed_bytes = 0, 0
        for name, size in files:
            try:
                os.unlink(self.directory / name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot delete old output %s: %s", self.directory / name, exc)
                continue
            removed, removed_bytes = removed + 1, removed_bytes + size
        if removed:
            log.info("pruned %d output files (%d bytes) in %s", removed, removed_bytes, self.directory)
        return PruneResult(self.files, self.total_bytes, removed, removed_bytes)


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
