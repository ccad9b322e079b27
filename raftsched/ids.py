"""Identifiers and stable hashes (never builtin `hash()`, which is salted per process)."""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "JOB_ID_RE",
    "manual_run_id",
    "run_id",
    "shard_run_id",
    "split_run_id",
    "stable_hash",
]

JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def stable_hash(*parts: str) -> int:
    """A 64-bit hash that is the same on every node and in every process."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def run_id(job_id: str, nominal_ms: int) -> str:
    """The deterministic id of a scheduled slot: a second fire of it is a no-op."""
    return f"{job_id}@{nominal_ms}"


def shard_run_id(job_id: str, nominal_ms: int, shard: int) -> str:
    return f"{job_id}@{nominal_ms}~{shard}"


def manual_run_id(job_id: str, now_ms: int) -> str:
    return f"{job_id}@manual-{now_ms}"


def split_run_id(rid: str) -> tuple[str, str]:
    """`job@slot` -> (job, slot); the job id cannot contain '@'."""
    job, _, slot = rid.partition("@")
    return job, slot
