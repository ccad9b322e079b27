"""Raft's log-matching rule in front of PySyncObj's follower (raftsched/logmatch.py).

A log here is a list of terms: entry i (from `first`) has term log[i - first]."""

from __future__ import annotations

import pickle
from typing import Any

from raftsched.logmatch import assemble_transmission, trim_append_entries


def view(terms: list[int], first: int = 1) -> tuple[Any, int]:
    def term_at(idx: int) -> int | None:
        return terms[idx - first] if first <= idx < first + len(terms) else None

    return term_at, first + len(terms) - 1


def ae(prev: int, prev_term: int, entries: list[tuple[int, int]], term: int = 3) -> dict[str, Any]:
    return {
        "type": "append_entries",
        "term": term,
        "commit_index": 0,
        "prevLogIdx": prev,
        "prevLogTerm": prev_term,
        "entries": [(b"cmd", idx, t) for idx, t in entries],
    }


def trim(
    message: dict[str, Any], terms: list[int], committed: int, first: int = 1, current_term: int = 0
) -> dict[str, Any] | None:
    term_at, last = view(terms, first)
    return trim_append_entries(message, term_at, last, committed, current_term)


def test_a_deposed_leaders_late_message_passes_for_pysyncobj_to_ignore() -> None:
    # Term 3's leader appended 11-12, never committed, and lost its term; term 4's leader
    # committed its own 11-12 here. The old leader's late resend is of term 3.
    terms = [1] * 10 + [4, 4]
    late = ae(10, 1, [(11, 3), (12, 3)], term=3)
    assert trim(late, terms, committed=12) is None  # judged as the current leader's: a false alarm
    assert trim(late, terms, committed=12, current_term=4) is late  # unchanged: PySyncObj drops it
    current = ae(10, 1, [(11, 4)], term=4)
    out = trim(current, terms, committed=12, current_term=4)
    assert out is not None and out["prevLogIdx"] == 12  # the current term's is still trimmed


def test_a_late_repeat_keeps_the_entries_that_followed_it() -> None:
    # This node holds 1..12 (term 3 from 11 on) and committed 12; a resend of (10, [11]) arrives.
    terms = [1] * 10 + [3, 3]
    out = trim(ae(10, 1, [(11, 3)]), terms, committed=12)
    assert out is not None and out["prevLogIdx"] == 12 and out["prevLogTerm"] == 3 and out["entries"] == []


def test_entries_already_held_are_dropped_and_the_new_ones_kept() -> None:
    terms = [1] * 10 + [3, 3]
    out = trim(ae(10, 1, [(11, 3), (12, 3), (13, 3)]), terms, committed=10)
    assert out is not None
    assert (out["prevLogIdx"], out["prevLogTerm"]) == (12, 3)
    assert [e[1] for e in out["entries"]] == [13]


def test_an_uncommitted_conflict_is_left_to_raft_deletion() -> None:
    # Entries 11-12 of an old term 2; the new leader (term 3) sends its own 11: delete from 11.
    terms = [1] * 10 + [2, 2]
    message = ae(10, 1, [(11, 3)])
    assert trim(message, terms, committed=10) is message


def test_old_uncommitted_entries_after_a_heartbeat_are_still_cut() -> None:
    # Nothing new and entries of an older term beyond prevLogIdx that nobody said are committed.
    terms = [1] * 10 + [2, 2]
    message = ae(10, 1, [])
    assert trim(message, terms, committed=10) is message


def test_committed_entries_after_a_heartbeat_are_kept() -> None:
    terms = [1] * 10 + [2, 2]
    out = trim(ae(10, 1, []), terms, committed=11)
    assert out is not None and (out["prevLogIdx"], out["prevLogTerm"]) == (11, 2)


def test_entries_of_the_leaders_own_term_after_a_heartbeat_are_kept() -> None:
    terms = [1] * 10 + [2, 3, 3]
    out = trim(ae(11, 2, [], term=3), terms, committed=10)
    assert out is not None and (out["prevLogIdx"], out["prevLogTerm"]) == (13, 3)


def test_a_message_that_would_overwrite_a_committed_entry_is_refused() -> None:
    terms = [1] * 10 + [2, 2]
    assert trim(ae(10, 1, [(11, 2), (12, 3)]), terms, committed=12) is None


def test_a_mismatch_at_prev_and_other_messages_pass_unchanged() -> None:
    terms = [1] * 10
    for message in (
        ae(10, 2, [(11, 3)]),  # the term at prevLogIdx differs: PySyncObj asks for older entries
        ae(15, 3, [(16, 3)]),  # beyond this node's log
        {"type": "request_vote", "term": 4},
        {**ae(10, 1, [(11, 3)]), "transmission": "start", "data": b""},
    ):
        assert trim(message, terms, committed=5) is message


def test_a_compacted_log_starts_later() -> None:
    terms = [2, 2, 3, 3]  # entries 101..104 after a snapshot at 100
    out = trim(ae(102, 2, [(103, 3)]), terms, committed=104, first=101)
    assert out is not None and (out["prevLogIdx"], out["entries"]) == (104, [])


def chunks(prev: int, prev_term: int, entry: tuple[bytes, int, int], size: int) -> list[dict[str, Any]]:
    """An oversized entry as PySyncObj's leader sends it: its pickle in start/process/finish chunks."""
    data = pickle.dumps(entry)
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    kinds = ["start"] + ["process"] * (len(parts) - 2) + ["finish"]
    base = {"type": "append_entries", "term": 3, "commit_index": 0}
    base.update(prevLogIdx=prev, prevLogTerm=prev_term)
    return [{**base, "transmission": kind, "data": part} for kind, part in zip(kinds, parts, strict=True)]


def receive(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any] | None], Any]:
    """What the guard hands on, and PySyncObj's buffer as PySyncObj itself keeps it for start/process."""
    buffer: Any = ""
    out = []
    for m in messages:
        handed, buffer = assemble_transmission(m, buffer)
        out.append(handed)
        if handed is not None and handed.get("transmission") == "start":
            buffer = handed["data"]
        elif handed is not None and handed.get("transmission") == "process":
            buffer += handed["data"]
    return out, buffer


def test_a_repeated_oversized_entry_no_longer_cuts_what_follows_it() -> None:
    # This node holds 1..12 (term 3 from 11 on), committed and applied 12; the leader resends
    # entry 11 (big, in chunks) from prevLogIdx 10. PySyncObj alone deleted 12, an applied entry.
    big = (b"x" * 5000, 11, 3)
    handed, buffer = receive(chunks(10, 1, big, 1024))
    assert [h is not None and h.get("transmission") for h in handed[:-1]] == ["start"] + ["process"] * 3
    whole = handed[-1]
    assert whole is not None and whole["entries"] == [big] and "transmission" not in whole and buffer == ""
    out = trim(whole, [1] * 10 + [3, 3], committed=12)
    assert out is not None and out["prevLogIdx"] == 12 and out["entries"] == []  # nothing deleted


def test_chunks_without_their_start_or_a_broken_whole_are_dropped() -> None:
    big = (b"y" * 3000, 11, 3)
    parts = chunks(10, 1, big, 1024)
    handed, _ = receive(parts[1:])  # joined mid-transmission (a new connection)
    assert handed == [None] * (len(parts) - 1)
    broken = [*parts[:-2], parts[-1]]  # a chunk lost: the pickle is cut
    handed, buffer = receive(broken)
    assert handed[-1] is None and buffer == ""
    plain = ae(10, 1, [(11, 3)])
    assert assemble_transmission(plain, "") == (plain, "")


def test_a_message_that_proves_no_prefix_moves_no_commit_index() -> None:
    from raftsched.logmatch import fence_commit_index

    not_ready = {"type": "append_entries", "term": 4, "commit_index": 90, "serialized": None}
    assert fence_commit_index(not_ready, 40) == {**not_ready, "commit_index": 40}
    chunk = {**not_ready, "serialized": (b"...", 0, False)}
    assert fence_commit_index(chunk, 40)["commit_index"] == 40
    behind = {**not_ready, "commit_index": 30}
    assert fence_commit_index(behind, 40) is behind
    matched = ae(10, 1, [(11, 4)], term=4) | {"commit_index": 90}
    assert fence_commit_index(matched, 40) is matched  # prevLogIdx: PySyncObj's own rule applies
