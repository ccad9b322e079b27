"""The node's data directory: its user's alone, or the node does not start.

What a node keeps on disk is as sensitive as the cluster: the Raft journal and snapshots hold
every job (HTTP task headers included), the outputs hold what tasks printed, and a node's
`secret` file is root-equivalent on every node. So (docs/operations.md, "Files and modes"):

- the node runs with umask 0o077 (`node.private_umask`): every file it creates is 0600 and every
  directory 0700, whatever the umask it was started with (its tasks keep that one);
- `prepare` refuses a `data_dir`, or the node's directory in it, that another user owns or that
  group or others may write (they could swap the journal or plant a symlink), with a ConfigError
  naming `data_dir` (exit status 2); it creates what is missing as 0700;
- `prepare` tightens what an older version left readable: the node's directory, and the files
  and directories directly in it, lose every group and other permission (0755 -> 0700, 0644 ->
  0600); output files deeper down are behind their directory, now 0700. The cluster's `data_dir`
  itself, when it exists, is only checked: nodes of one user may share it, and what it holds is
  in the nodes' directories.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .errors import ConfigError

__all__ = ["PRIVATE_UMASK", "check", "prepare"]

log = logging.getLogger(__name__)

PRIVATE_UMASK = 0o077
_DIR_MODE = 0o700
_OPEN_TO_OTHERS = 0o077  # any permission for group or others
_WRITABLE_BY_OTHERS = 0o022  # group or others may write


def _refuse(path: Path, why: str) -> ConfigError:
    return ConfigError("cluster", "data_dir", f"{path} {why}")


def check(path: Path) -> bool:
    """Whether `path` exists; raises ConfigError when it is not a directory, another user owns it,
    or group or others may write it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _refuse(path, f"cannot be read: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory")
    if st.st_uid != os.geteuid():
        raise _refuse(
            path, f"is owned by uid {st.st_uid}, not by the user running the node (uid {os.geteuid()})"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & _WRITABLE_BY_OTHERS:
        raise _refuse(path, f"is writable by group or others (mode {mode:04o}): run `chmod go-w {path}`")
    return True


def prepare(data_dir: Path, node_dir: Path) -> None:
    """Check the cluster's `data_dir` and the node's directory in it, create them 0700 if missing,
    and tighten the node's directory (see the module docstring). Raises ConfigError."""
    if not check(data_dir):
        _make(data_dir)
    if check(node_dir):
        _tighten(node_dir)
    else:
        _make(node_dir)


def _make(path: Path) -> None:
    try:
        os.makedirs(path, mode=_DIR_MODE, exist_ok=True)
    except OSError as exc:
        raise _refuse(path, f"cannot be created: {exc.strerror}") from None


def _tighten(node_dir: Path) -> None:
    """Drop group and other permissions from `node_dir` and what lies directly in it (symlinks
    are left alone: what they point to is not the node's)."""
    _make_private(node_dir)
    with os.scandir(node_dir) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) or entry.is_file(follow_symlinks=False):
                _make_private(Path(entry.path))


def _make_private(path: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & _OPEN_TO_OTHERS:
            path.chmod(mode & ~_OPEN_TO_OTHERS)
            log.warning("tightened %s from mode %04o to %04o", path, mode, mode & ~_OPEN_TO_OTHERS)
    except OSError as exc:
        raise _refuse(path, f"cannot be made private: {exc.strerror}") from None
