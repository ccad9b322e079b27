"""Raft's log-matching rule in front of PySyncObj's follower (raftsched/logmatch.py).

A log here is a list of terms: entry i (from `first`) has term log[i - first]."""

from __future__ import annotations

from typing import Any

from raftsched.logmatch import trim_append_entries


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


def trim(message: dict[str, Any], terms: list[int], committed: int, first: int = 1) -> dict[str, Any] | None:
    term_at, last = view(terms, first)
    return trim_append_entries(message, term_at, last, committed)


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
