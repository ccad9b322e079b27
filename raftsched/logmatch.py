"""Raft's log-matching rule for a follower, where PySyncObj 0.3.17 truncates too eagerly.

PySyncObj's follower deletes every entry after `prevLogIdx` whenever it holds more than the
message carries, whether or not they conflict. Raft deletes only from the first entry whose term
differs. A late or repeated AppendEntries (a leader resending from an older index, which happens
when its tick thread is starved) therefore cut entries that were committed and already applied
here — PySyncObj logged "truncating already-applied log entries" under overload. Until they came
again the follower's log lacked committed entries: a crash or an election in that window is how
a replicated state diverges.

`trim_append_entries` rewrites such a message before PySyncObj sees it, so that what PySyncObj
then does is what Raft prescribes: entries this node already holds with the same term are
dropped from the message (and `prevLogIdx` moves past them), entries known to match are never
deleted, and a message that would delete an entry this node knows is committed is refused.

Known to match the leader's log: entries at or below this node's commit index (committed, so in
every later leader's log: Raft's leader completeness), and entries of the message's own term
(only that leader writes them). Pure: the caller passes a view of its log.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

__all__ = ["assemble_transmission", "fence_commit_index", "of_an_older_term", "trim_append_entries"]

TermAt = Callable[[int], "int | None"]  # the term of this node's entry at an index; None: not held


def of_an_older_term(message: dict[str, Any], current_term: int) -> bool:
    """PySyncObj ignores such a message whole (chunks of a transmission too): leave it be."""
    return bool(message.get("term", 0) < current_term)


def trim_append_entries(
    message: dict[str, Any], term_at: TermAt, last_index: int, committed: int, current_term: int = 0
) -> dict[str, Any] | None:
    """The message PySyncObj should handle (the same object when nothing changes), or None to
    refuse it: it would delete an entry this node knows is committed.

    `last_index` is the index of this node's last entry, `committed` the highest index it knows
    is committed (its commit index, or what it has applied if that is higher). A message of a
    term older than `current_term` passes unchanged: PySyncObj ignores it. (A deposed leader's
    late message carries entries that never committed, at indexes the next leader has since
    committed others: refusing it was right but logged a false alarm.)"""
    if message.get("type") != "append_entries" or "prevLogIdx" not in message:
        return message
    if of_an_older_term(message, current_term):
        return message
    if message.get("transmission") is not None:
        return message  # a snapshot or an oversized entry in chunks: PySyncObj's own path
    prev = message["prevLogIdx"]
    if term_at(prev) != message["prevLogTerm"]:
        return message  # no match at prevLogIdx: PySyncObj answers with the index to resend from

    def held(idx: int, term: int) -> bool:
        held_term = term_at(idx)
        return held_term == term or (held_term is None and idx <= min(committed, last_index))

    entries = list(message.get("entries") or ())
    skip = 0
    while skip < len(entries) and held(entries[skip][1], entries[skip][2]):
        skip += 1
    if skip:
        prev = entries[skip - 1][1]
    rest = entries[skip:]
    if rest and rest[0][1] <= committed:
        return None  # a committed entry that differs from the leader's: never overwrite it
    if not rest:
        # Nothing new: keep what follows when it is known to match, instead of cutting it.
        while prev < last_index and (prev + 1 <= committed or term_at(prev + 1) == message.get("term")):
            prev += 1
    if prev == message["prevLogIdx"]:
        return message
    return {**message, "prevLogIdx": prev, "prevLogTerm": term_at(prev), "entries": rest}


def fence_commit_index(message: dict[str, Any], commit_index: int) -> dict[str, Any]:
    """The message with a `commit_index` this node may adopt: unchanged unless it proves nothing.

    Raft lets a follower advance its commit index only over entries an AppendEntries has just
    shown to match the leader's log. PySyncObj's follower takes `min(leader's commit, own last
    index)` after *every* AppendEntries of the current term — also after a snapshot chunk, or the
    "snapshot not ready yet" message (`serialized: None`) a leader sends while its dump is being
    written, neither of which carries `prevLogIdx`. A deposed leader that rejoins as a follower of
    a leader that compacted its log still holds its own uncommitted entries of the old term; such
    a message made it apply them — its state diverged until the snapshot replaced it, and the
    proposal waiting on that entry (same index, same term) was answered "success" though no
    other node ever applied it. So a message without `prevLogIdx` may not move the commit index
    past `commit_index`, this node's own."""
    if message.get("type") != "append_entries" or "prevLogIdx" in message:
        return message
    if int(message.get("commit_index", 0)) <= commit_index:
        return message
    return {**message, "commit_index": commit_index}


def assemble_transmission(message: dict[str, Any], so_far: Any) -> tuple[dict[str, Any] | None, Any]:
    """An AppendEntries that carries one oversized entry in chunks ("start", "process", "finish"),
    made whole: returns (the message to handle, what PySyncObj's receive buffer should hold next).

    PySyncObj handles the "finish" chunk like any AppendEntries: it deletes every entry after
    `prevLogIdx`, committed or not (a repeated transmission cut applied entries under load, and
    the node then refused every later AppendEntries: stuck for good). The whole message goes
    through `trim_append_entries` instead. A chunk that comes without its start, or a whole that
    does not unpickle (PySyncObj marks "finish" by the entry's data length, not the pickle's, so a
    trailing chunk can follow it), is dropped: the leader sends again from what this node answers.
    Unpickling happens after the transport has authenticated and decrypted the message, as
    PySyncObj's own path does.
    """
    kind = message.get("transmission")
    if kind is None:
        return message, so_far
    if kind == "start":
        return message, so_far  # PySyncObj starts its buffer with this chunk
    if not isinstance(so_far, bytes) or not so_far:
        return None, so_far
    if kind != "finish":
        return message, so_far
    try:
        entry = pickle.loads(so_far + message["data"])
    except Exception:  # noqa: BLE001 - any failure means a broken transmission: drop it
        return None, ""
    whole = {k: v for k, v in message.items() if k not in ("transmission", "data")}
    whole["entries"] = [entry]
    return whole, ""
