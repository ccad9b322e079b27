"""Secrets a node resolves for its runs: names in jobs, values only on the nodes that run them.

A job names a secret (`{"secret": "NAME"}` in `task.headers` or `task.env`, see `model.SecretRef`);
the Raft log, snapshots and backups hold that name, never a value. The executing node looks the
name up when a run starts, first match wins (API.md "New node keys"):

    1. the node's environment, `RAFTSCHED_SECRET_<NAME>`
    2. the node's `secrets_file` (`NAME = value` lines, mode 0600, read by that node only)
    3. the cluster file's `[secrets]` section (every node that reads the file)

Invariant: no message, repr or log line built here contains a secret's value; errors name the
file, the line number and at most the secret's name.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "ENV_PREFIX",
    "SECRET_NAME_RE",
    "SecretStore",
    "check_secret_name",
    "parse_secret_lines",
    "read_secrets_file",
]

SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ENV_PREFIX = "RAFTSCHED_SECRET_"
_NAME_HINT = "a secret name must match [A-Za-z_][A-Za-z0-9_]*"


def check_secret_name(name: str) -> str:
    """`name` if it is a valid secret name, else ValueError (which may show it: names are not secret)."""
    if not SECRET_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r}: {_NAME_HINT}")
    return name


@dataclass(frozen=True, slots=True)
class SecretStore:
    """Name -> value, already merged by precedence. Immutable; safe from any thread.

    The values are left out of repr and equality shows nothing either; `names` may be logged.
    """

    _values: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @classmethod
    def build(
        cls,
        *,
        environ: Mapping[str, str] | None = None,
        file_values: Mapping[str, str] | None = None,
        section_values: Mapping[str, str] | None = None,
    ) -> SecretStore:
        """Merge the three sources; the environment wins over the file, the file over `[secrets]`.

        Environment variables whose suffix is not a valid name are ignored (they cannot be named)."""
        from_env = {
            key.removeprefix(ENV_PREFIX): value
            for key, value in (environ or {}).items()
            if key.startswith(ENV_PREFIX) and SECRET_NAME_RE.fullmatch(key.removeprefix(ENV_PREFIX))
        }
        merged = {**(section_values or {}), **(file_values or {}), **from_env}
        return cls(MappingProxyType(merged))

    def get(self, name: str) -> str | None:
        return self._values.get(name)

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self._values)


def parse_secret_lines(lines: Iterable[str]) -> dict[str, str]:
    """`NAME = value` lines -> a dict. Blank lines and lines starting with `#` or `;` are skipped.

    The value is everything after the first `=`, stripped of surrounding whitespace (no inline
    comments: a value may contain `#` and `;`). ValueError names the line number, never its text.
    """
    values: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = (part.strip() for part in line.partition("="))
        if not sep:
            raise ValueError(f"line {number}: expected NAME = value")
        if not SECRET_NAME_RE.fullmatch(name):
            raise ValueError(f"line {number}: {_NAME_HINT}")
        if name in values:
            raise ValueError(f"line {number}: secret {name!r} is given twice")
        values[name] = value
    return values


def read_secrets_file(path: Path) -> dict[str, str]:
    """Read a node's secrets file; ValueError (no value in it) if it is unreadable, malformed, or
    readable or writable by group or others (it must be mode 0600 or stricter)."""
    try:
        info = os.stat(path)
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text") from None
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"{path} is not a regular file")
    if mode & 0o077:
        raise ValueError(f"{path} is mode {mode:04o}; it holds secrets, so it must be 0600 (chmod 600)")
    try:
        return parse_secret_lines(text.splitlines())
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
