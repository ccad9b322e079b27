"""Trigger maths, table-driven. Every time here is a fixed instant: nothing reads the clock.

The DST rule under test (API.md, "schedule"): each wall-clock time a cron expression names fires
once. A time that occurs twice (clocks go back) fires at its first occurrence only; a time that does
not exist (clocks go forward) fires at the first instant after the gap, and several wall times that
land on that same instant fire once. So an hourly job fires 24 times on a fall-back day (the second
01:00 is a repeat) and 23 times on a spring-forward day (02:00 lands on 03:00, which fires once).
"""

from __future__ import annotations

import collections
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from raftsched import triggers
from raftsched.errors import ValidationError
from raftsched.ids import stable_hash
from raftsched.model import Schedule, iso_ms
from raftsched.triggers import check_schedule, jitter_ms, next_fire_ms, slots_between

FAR_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z


def ms(text: str) -> int:
    """`2026-03-29T01:00:00Z` (or with .fff) -> epoch ms."""
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def isos(values: list[int]) -> list[str | None]:
    return [iso_ms(v) for v in values]


def local_day_ms(tz: str, day: str) -> tuple[int, int]:
    """[start, end) of a local calendar day in epoch ms (midnight exists in every zone used here)."""
    start = datetime.fromisoformat(day).replace(tzinfo=ZoneInfo(tz))
    end = datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=ZoneInfo(tz))
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


def upcoming(expr: str, tz: str, after: str, n: int) -> list[str | None]:
    schedule = Schedule(cron=expr, timezone=tz)
    return isos(slots_between(schedule, ms(after), FAR_MS, created_ms=0, limit=n))


def test_public_surface() -> None:
    assert sorted(triggers.__all__) == [
        "check_schedule",
        "first_slot_ms",
        "jitter_ms",
        "next_fire_ms",
        "slot_range",
        "slots_between",
    ]


SLOT_RANGE_SCHEDULES = [
    Schedule(every_s=0.1),
    Schedule(every_s=0.7, start_at_ms=1_000_003),
    Schedule(every_s=1.5, end_at_ms=1_030_000),
    Schedule(every_s=7),
    Schedule(cron="*/3 * * * * *"),
    Schedule(at_ms=1_010_000),
]


@pytest.mark.parametrize("schedule", SLOT_RANGE_SCHEDULES)
def test_slot_range_is_first_last_and_count_of_the_slots_between(schedule: Schedule) -> None:
    """`every` is counted by arithmetic, whatever the limit; the other kinds walk `limit` slots."""
    created = 1_000_000
    for after in range(created - 2_000, created + 40_000, 1_237):
        for span in (0, 1, 999, 1_000, 4_321, 25_000):
            every = slots_between(schedule, after, after + span, created_ms=created, limit=10**6)
            want = (every[0], every[-1], len(every)) if every else None
            assert triggers.slot_range(schedule, after, after + span, created_ms=created, limit=10**6) == want
            walked = slots_between(schedule, after, after + span, created_ms=created, limit=2)
            limited = triggers.slot_range(schedule, after, after + span, created_ms=created, limit=2)
            if schedule.every_s is None:
                assert limited == ((walked[0], walked[-1], len(walked)) if walked else None)
            else:
                assert limited == want


# ---------------------------------------------------------------- cron in UTC

CRON_UTC = [
    # expr, after, next slot
    ("*/5 * * * *", "2026-05-03T10:02:30Z", "2026-05-03T10:05:00Z"),
    ("*/5 * * * *", "2026-05-03T10:05:00Z", "2026-05-03T10:10:00Z"),  # strictly after
    ("*/5 * * * * *", "2026-05-03T10:00:03Z", "2026-05-03T10:00:05Z"),  # 6 fields: seconds first
    ("*/5 * * * * *", "2026-05-03T10:00:05Z", "2026-05-03T10:00:10Z"),
    ("*/5 * * * * *", "2026-05-03T10:00:04.999Z", "2026-05-03T10:00:05Z"),
    ("30 */15 9 * * *", "2026-05-03T09:00:30Z", "2026-05-03T09:15:30Z"),
    ("* * * * * *", "2026-05-03T10:00:00.500Z", "2026-05-03T10:00:01Z"),
    ("0 0 * * *", "2026-05-03T23:59:59.999Z", "2026-05-04T00:00:00Z"),
    ("0 12 * * mon-fri", "2026-05-02T13:00:00Z", "2026-05-04T12:00:00Z"),  # Saturday -> Monday
    ("0 0 1,15 * 5", "2026-05-02T00:00:00Z", "2026-05-08T00:00:00Z"),  # day OR weekday: a Friday
    ("0 0 1,15 * 5", "2026-05-29T00:00:00Z", "2026-06-01T00:00:00Z"),  # ... or the 1st
    ("0 0 31 * *", "2026-04-01T00:00:00Z", "2026-05-31T00:00:00Z"),  # April has no 31st
    ("0 0 29 2 *", "2026-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
    ("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"),
    ("@hourly", "2026-05-03T10:00:00Z", "2026-05-03T11:00:00Z"),
    ("@daily", "2026-05-03T10:00:00Z", "2026-05-04T00:00:00Z"),
    ("@weekly", "2026-05-03T10:00:00Z", "2026-05-10T00:00:00Z"),  # Sundays
    ("@monthly", "2026-05-03T10:00:00Z", "2026-06-01T00:00:00Z"),
    ("@yearly", "2026-05-03T10:00:00Z", "2027-01-01T00:00:00Z"),
    ("@DAILY", "2026-05-03T10:00:00Z", "2026-05-04T00:00:00Z"),
    ("0 0 L * *", "2028-02-01T00:00:00Z", "2028-02-29T00:00:00Z"),  # croniter fallback forms
    ("0 0 * * 5#2", "2026-05-01T00:00:00Z", "2026-05-08T00:00:00Z"),
    ("0 9 16W * *", "2026-05-01T00:00:00Z", "2026-05-15T09:00:00Z"),  # the 16th is a Saturday
]


@pytest.mark.parametrize(("expr", "after", "expected"), CRON_UTC)
def test_cron_next_in_utc(expr: str, after: str, expected: str) -> None:
    got = next_fire_ms(Schedule(cron=expr), ms(after), created_ms=0)
    assert iso_ms(got) == iso_ms(ms(expected))


# Our own matcher must agree with croniter wherever no DST is involved (croniter in naive mode).
SAME_AS_CRONITER = [
    "* * * * *", "*/7 * * * *", "5-1 * * * *", "0 */3 * * *", "15,45 9-17 * * mon-fri",
    "0 0 1,15 * 5", "30 4 1-7 * 1", "0 0 1-31 * 1", "0 0 * * 0", "0 0 * * 7", "0 12 1 */2 *",
    "0 0 29 2 *", "0 0 31 * *", "0 0 ? * *", "0 6 * jan,jul sat", "*/5 * * * * *",
    "0 30 9 * * 1-5", "10-20/3 */2 * * * *", "59 59 23 31 12 *", "@hourly", "@daily", "@weekly",
    "@monthly", "@yearly", "0 0 L * *", "0 0 * * 5#2", "0 0 15W * *", "0 0 * * L5",
]  # fmt: skip


@pytest.mark.parametrize("expr", SAME_AS_CRONITER)
def test_cron_matches_croniter_where_no_dst(expr: str) -> None:
    after = ms("2025-12-31T23:58:17.250Z")
    it = croniter(expr, datetime(2025, 12, 31, 23, 58, 17, 250_000), second_at_beginning=True)
    expected = [ms(it.get_next(datetime).isoformat() + "Z") for _ in range(120)]
    got = slots_between(Schedule(cron=expr), after, FAR_MS * 10, created_ms=0, limit=120)
    assert isos(got) == isos(expected)


# ---------------------------------------------------------------- zones and DST

ZONES = [
    # expr, zone, after, the next slots
    ("0 9 * * *", "America/New_York", "2026-01-15T00:00:00Z", ["2026-01-15T14:00:00Z"]),  # EST
    ("0 9 * * *", "America/New_York", "2026-07-15T00:00:00Z", ["2026-07-15T13:00:00Z"]),  # EDT
    ("0 9 * * *", "Asia/Kolkata", "2026-01-15T00:00:00Z", ["2026-01-15T03:30:00Z"]),  # +05:30
    ("30 * * * *", "Asia/Kolkata", "2026-01-01T00:10:00Z", ["2026-01-01T01:00:00Z"]),
    ("0 0 * * *", "Australia/Lord_Howe", "2026-01-15T00:00:00Z", ["2026-01-15T13:00:00Z"]),  # +11
    ("0 0 * * *", "Australia/Lord_Howe", "2026-06-15T00:00:00Z", ["2026-06-15T13:30:00Z"]),  # +10:30
]

DST = [
    # Berlin springs forward 2026-03-29 01:00Z (02:00 CET -> 03:00 CEST): 02:30 is in the gap and
    # fires once, at the first instant after it (03:00 CEST).
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
     ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]),
    ("30 30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z",
     ["2026-03-29T01:00:00Z", "2026-03-30T00:30:30Z"]),
    # Berlin falls back 2026-10-25 01:00Z (03:00 CEST -> 02:00 CET): 02:30 fires at its first
    # occurrence (CEST) only.
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z",
     ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
    # from inside the repeated hour (second pass, 02:15 CET): 02:30 CET is not fired again
    ("30 2 * * *", "Europe/Berlin", "2026-10-25T01:15:00Z", ["2026-10-26T01:30:00Z"]),
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T00:50:00Z",
     ["2026-10-25T02:00:00Z", "2026-10-25T02:15:00Z"]),  # 03:00 CET; nothing in the second pass
    ("*/15 * * * *", "Europe/Berlin", "2026-10-25T01:20:00Z", ["2026-10-25T02:00:00Z"]),
    # New York springs forward 2026-03-08 07:00Z, falls back 2026-11-01 06:00Z.
    ("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z",
     ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]),
    ("0 2,3 * * *", "America/New_York", "2026-03-07T12:00:00Z",  # 02:00 and 03:00 meet: one fire
     ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z", "2026-03-09T07:00:00Z"]),
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z",
     ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]),
    ("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z",  # 01:00 EDT, then 02:00 EST
     ["2026-11-01T05:00:00Z", "2026-11-01T07:00:00Z"]),
    # Lord Howe moves by 30 minutes: forward 2026-10-03 15:30Z (02:00 -> 02:30), back 2026-04-04
    # 15:00Z (02:00 -> 01:30).
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T12:00:00Z",
     ["2026-10-02T15:45:00Z", "2026-10-03T15:30:00Z", "2026-10-04T15:15:00Z"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2026-04-03T12:00:00Z",
     ["2026-04-03T14:45:00Z", "2026-04-04T14:45:00Z", "2026-04-05T15:15:00Z"]),
    ("*/10 * * * *", "Australia/Lord_Howe", "2026-04-04T14:35:00Z",
     ["2026-04-04T14:40:00Z", "2026-04-04T14:50:00Z", "2026-04-04T15:30:00Z"]),
    ("*/10 * * * *", "Australia/Lord_Howe", "2026-04-04T15:05:00Z", ["2026-04-04T15:30:00Z"]),  # 2nd pass
    ("*/10 * * * *", "Australia/Lord_Howe", "2026-10-03T15:05:00Z",
     ["2026-10-03T15:10:00Z", "2026-10-03T15:20:00Z", "2026-10-03T15:30:00Z", "2026-10-03T15:40:00Z"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "tz", "after", "expected"), ZONES + DST)
def test_cron_in_zones_and_across_dst(expr: str, tz: str, after: str, expected: list[str]) -> None:
    assert upcoming(expr, tz, after, len(expected)) == isos([ms(e) for e in expected])


DAY_COUNTS = [
    # expr, zone, local day, fires that day. A 25-hour day still has each wall time once; on a
    # 23-hour day the missing hour's times collapse onto the instant after the gap.
    ("0 * * * *", "America/New_York", "2026-11-01", 24),
    ("0 * * * *", "America/New_York", "2026-03-08", 23),
    ("30 * * * *", "America/New_York", "2026-03-08", 24),  # 02:30 -> 03:00, 03:30 as usual
    ("0 * * * *", "Europe/Berlin", "2026-10-25", 24),
    ("0 * * * *", "Europe/Berlin", "2026-03-29", 23),
    ("*/30 * * * *", "Australia/Lord_Howe", "2026-04-05", 48),
    ("*/30 * * * *", "Australia/Lord_Howe", "2026-10-04", 47),  # 02:00 and 02:30 meet
    ("0 * * * *", "Asia/Kolkata", "2026-03-29", 24),
]


@pytest.mark.parametrize(("expr", "tz", "day", "count"), DAY_COUNTS)
def test_fires_per_local_day(expr: str, tz: str, day: str, count: int) -> None:
    start, end = local_day_ms(tz, day)
    slots = slots_between(Schedule(cron=expr, timezone=tz), start - 1, end - 1, created_ms=0, limit=10_000)
    assert len(slots) == count
    assert len(set(slots)) == len(slots)


EVERY_MINUTE = [
    # zone, local day, slots, {gap between consecutive slots in s: how often}
    ("Europe/Berlin", "2026-03-29", 23 * 60, {60: 23 * 60 - 1}),  # no hole, no double
    ("Europe/Berlin", "2026-10-25", 24 * 60, {60: 24 * 60 - 2, 3660: 1}),  # the second pass is silent
    ("America/New_York", "2026-03-08", 23 * 60, {60: 23 * 60 - 1}),
    ("America/New_York", "2026-11-01", 24 * 60, {60: 24 * 60 - 2, 3660: 1}),
    ("Australia/Lord_Howe", "2026-10-04", 24 * 60 - 30, {60: 24 * 60 - 31}),
    ("Australia/Lord_Howe", "2026-04-05", 24 * 60, {60: 24 * 60 - 2, 1860: 1}),
]


@pytest.mark.parametrize(("tz", "day", "count", "gaps"), EVERY_MINUTE)
def test_every_minute_across_dst(tz: str, day: str, count: int, gaps: dict[int, int]) -> None:
    start, end = local_day_ms(tz, day)
    schedule = Schedule(cron="* * * * *", timezone=tz)
    slots = slots_between(schedule, start - 1, end - 1, created_ms=0, limit=5000)
    assert len(slots) == count
    assert dict(collections.Counter((b - a) // 1000 for a, b in zip(slots, slots[1:], strict=False))) == gaps
    walls = [datetime.fromtimestamp(s / 1000, ZoneInfo(tz)).replace(tzinfo=None) for s in slots]
    assert len(set(walls)) == len(walls)  # no wall-clock minute fires twice


def test_cron_search_from_inside_a_repeat_takes_one_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """From the second pass of a repeated hour the search starts after it, not second by second."""
    calls: list[datetime] = []
    original = triggers._Cron.next_wall

    def counting(self: triggers._Cron, after: datetime) -> datetime | None:
        calls.append(after)
        return original(self, after)

    monkeypatch.setattr(triggers._Cron, "next_wall", counting)
    schedule = Schedule(cron="* * * * * *", timezone="Europe/Berlin")
    after = ms("2026-10-25T01:00:00.500Z")  # 02:00:00.5 CET, the second pass
    assert next_fire_ms(schedule, after, created_ms=0) == ms("2026-10-25T02:00:00Z")  # 03:00 CET
    assert len(calls) == 1


def test_every_five_seconds_across_the_gap() -> None:
    schedule = Schedule(cron="*/5 * * * * *", timezone="Europe/Berlin")
    after, until = ms("2026-03-29T00:59:40Z"), ms("2026-03-29T01:00:20Z")  # 01:59:40 CET .. 03:00:20 CEST
    slots = slots_between(schedule, after, until, created_ms=0, limit=100)
    assert slots == [after + 5000 * k for k in range(1, 9)]


# ---------------------------------------------------------------- every and at

START = ms("2026-01-01T00:00:00Z")

EVERY = [
    # every_s, start_at, end_at, created, after, next slot
    (60, None, None, 1_000, 1_000, 61_000),
    (60, None, None, 1_000, 0, 61_000),  # before creation: the first slot
    (60, None, None, 1_000, 60_999, 61_000),
    (60, None, None, 1_000, 61_000, 121_000),
    (60, 5_000, None, 1_000, 1_000, 65_000),  # start_at wins over created
    (60, 500_000, None, 1_000, 1_000, 560_000),  # start_at in the future
    (0.5, None, None, 0, 0, 500),
    (0.5, None, None, 0, 1_250, 1_500),
    (0.1, 0, None, 0, 10**12 + 50, 10**12 + 100),  # 0.1 s is exactly 100 ms, however far
    (0.3333, 0, None, 0, 333, 667),  # slots round(k * 333.3): 333, 667, 1000
    (0.3333, 0, None, 0, 667, 1_000),
    (0.1005, 0, None, 0, 0, 101),  # halves round up
    (86400, START, None, 0, ms("2026-03-29T12:00:00Z"), ms("2026-03-30T00:00:00Z")),  # UTC arithmetic
    (60, 0, 120_000, 0, 60_000, 120_000),  # a slot on end_at still fires
    (60, 0, 119_999, 0, 60_000, None),
    (60, 0, 120_000, 0, 120_000, None),
]


@pytest.mark.parametrize(("every", "start", "end", "created", "after", "expected"), EVERY)
def test_every(
    every: float, start: int | None, end: int | None, created: int, after: int, expected: int | None
) -> None:
    schedule = Schedule(every_s=every, start_at_ms=start, end_at_ms=end)
    assert next_fire_ms(schedule, after, created_ms=created) == expected


AT = [
    # at, after, next slot
    (START, START - 1, START),
    (START, START, None),
    (START, START + 1, None),
    (START, 0, START),
]


@pytest.mark.parametrize(("at", "after", "expected"), AT)
def test_at(at: int, after: int, expected: int | None) -> None:
    assert next_fire_ms(Schedule(at_ms=at), after, created_ms=0) == expected


TEN = ms("2026-05-03T10:00:00Z")

END = [
    # schedule, after, next slot: end_at bounds every kind, inclusively
    (Schedule(cron="0 * * * *", end_at_ms=TEN), "2026-05-03T09:30:00Z", "2026-05-03T10:00:00Z"),
    (Schedule(cron="0 * * * *", end_at_ms=TEN), "2026-05-03T10:00:00Z", None),
    (Schedule(cron="0 * * * *", end_at_ms=TEN - 1000), "2026-05-03T09:30:00Z", None),
    (Schedule(at_ms=TEN, end_at_ms=TEN - 1), "2026-05-03T08:00:00Z", None),
]


@pytest.mark.parametrize(("schedule", "after", "expected"), END)
def test_end_at(schedule: Schedule, after: str, expected: str | None) -> None:
    got = next_fire_ms(schedule, ms(after), created_ms=0)
    assert got == (None if expected is None else ms(expected))


# ---------------------------------------------------------------- slots_between

BETWEEN = [
    # schedule, after, until, limit, slots
    (Schedule(every_s=10, start_at_ms=0), 0, 100_000, 3, [10_000, 20_000, 30_000]),  # the earliest
    (Schedule(every_s=10, start_at_ms=0), 0, 30_000, 100, [10_000, 20_000, 30_000]),  # until included
    (Schedule(every_s=10, start_at_ms=0), 10_000, 30_000, 100, [20_000, 30_000]),  # after excluded
    (Schedule(every_s=10, start_at_ms=0), 0, 9_999, 100, []),
    (Schedule(every_s=10, start_at_ms=0), 0, 100_000, 0, []),
    (Schedule(every_s=10, start_at_ms=0, end_at_ms=25_000), 0, 100_000, 100, [10_000, 20_000]),
    (Schedule(at_ms=5_000), 0, 100_000, 100, [5_000]),
    (Schedule(cron="*/20 * * * * *"), 0, 60_000, 100, [20_000, 40_000, 60_000]),
]


@pytest.mark.parametrize(("schedule", "after", "until", "limit", "expected"), BETWEEN)
def test_slots_between(schedule: Schedule, after: int, until: int, limit: int, expected: list[int]) -> None:
    assert slots_between(schedule, after, until, created_ms=0, limit=limit) == expected


def test_cron_maths_shares_no_state_between_calls() -> None:
    """A later question first, then an earlier one, from many threads: each answer stands alone."""
    schedule = Schedule(cron="0 0 L * *", timezone="Europe/Berlin")  # the croniter fallback path
    afters = [ms(f"2026-{m:02d}-10T00:00:00Z") for m in (12, 1, 7, 2, 11, 3)] * 20
    alone = [next_fire_ms(schedule, a, created_ms=0) for a in afters]
    with ThreadPoolExecutor(max_workers=8) as pool:
        together = list(pool.map(lambda a: next_fire_ms(schedule, a, created_ms=0), afters))
    assert together == alone
    assert iso_ms(alone[1]) == "2026-01-30T23:00:00.000Z"  # Jan 31 00:00 CET


# ---------------------------------------------------------------- jitter

JITTER = [
    # job, nominal, jitter_s, expected: pinned, so an upgrade cannot move due times silently
    ("nightly-report", 1_780_000_000_000, 1.5, 1330),
    ("nightly-report", 1_780_000_060_000, 1.5, 529),
    ("nightly-report", 1_780_000_000_000, 0, 0),
    ("nightly-report", 1_780_000_000_000, 0.0004, 0),  # less than 1 ms of room
]


@pytest.mark.parametrize(("job", "nominal", "jitter", "expected"), JITTER)
def test_jitter_is_pinned(job: str, nominal: int, jitter: float, expected: int) -> None:
    assert jitter_ms(job, nominal, jitter) == expected
    assert jitter_ms(job, nominal, jitter) == stable_hash(job, str(nominal)) % (int(jitter * 1000) + 1)


@pytest.mark.parametrize("jitter", [0.001, 0.3, 1.1, 60.0, 86400.0])
def test_jitter_stays_in_bounds_and_spreads(jitter: float) -> None:
    delays = [jitter_ms("job-a", 1_780_000_000_000 + 1000 * k, jitter) for k in range(500)]
    assert all(0 <= d <= jitter * 1000 for d in delays)
    assert len(set(delays)) > 1
    assert delays == [jitter_ms("job-a", 1_780_000_000_000 + 1000 * k, jitter) for k in range(500)]


# ---------------------------------------------------------------- check_schedule

INVALID = [
    (Schedule(cron="* * * *"), "schedule.cron"),
    (Schedule(cron="0 0 0 1 1 * 2026"), "schedule.cron"),  # 7 fields (year) are refused
    (Schedule(cron="* * * * * * *"), "schedule.cron"),
    (Schedule(cron="61 * * * *"), "schedule.cron"),
    (Schedule(cron="*/0 * * * *"), "schedule.cron"),
    (Schedule(cron="60 * * * * *"), "schedule.cron"),  # second 60 (seconds come first)
    (Schedule(cron="0 0 30 2 *"), "schedule.cron"),  # never fires
    (Schedule(cron="bogus * * * *"), "schedule.cron"),
    (Schedule(cron="* * * * 1,2#3"), "schedule.cron"),
    (Schedule(cron="H * * * *"), "schedule.cron"),
    (Schedule(cron="R * * * *"), "schedule.cron"),  # random: every node would pick another minute
    (Schedule(cron="@reboot"), "schedule.cron"),
    (Schedule(cron="@midnight"), "schedule.cron"),  # not one of the documented aliases
    (Schedule(cron=""), "schedule.cron"),
    (Schedule(cron="0 0 * * *", timezone="Mars/Olympus"), "schedule.timezone"),
    (Schedule(cron="0 0 * * *", timezone="europe/berlin"), "schedule.timezone"),
    (Schedule(cron="0 0 * * *", timezone="Europe"), "schedule.timezone"),
    (Schedule(cron="0 0 * * *", timezone="../etc/passwd"), "schedule.timezone"),
    (Schedule(cron="0 0 * * *", timezone="/etc/localtime"), "schedule.timezone"),
    (Schedule(cron="0 0 * * *", timezone="localtime"), "schedule.timezone"),  # this host's zone
    (Schedule(cron="0 0 * * *", timezone="right/UTC"), "schedule.timezone"),  # counts leap seconds
    (Schedule(cron="0 0 * * *", timezone=""), "schedule.timezone"),
    (Schedule(every_s=60, timezone="Nowhere"), "schedule.timezone"),
    (Schedule(every_s=60, start_at_ms=1_000, end_at_ms=1_000), "schedule.end_at"),
    (Schedule(every_s=60, start_at_ms=1_000, end_at_ms=999), "schedule.end_at"),
    (Schedule(every_s=0), "schedule.every"),
    (Schedule(every_s=float("nan")), "schedule.every"),
    (Schedule(), "schedule"),
    (Schedule(cron="0 0 * * *", every_s=60), "schedule"),
]


@pytest.mark.parametrize(("schedule", "field"), INVALID)
def test_check_schedule_names_the_field(schedule: Schedule, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        check_schedule(schedule)
    assert info.value.field == field
    assert "Traceback" not in info.value.message


def test_check_schedule_uses_the_given_path() -> None:
    with pytest.raises(ValidationError) as info:
        check_schedule(Schedule(cron="61 * * * *"), path="jobs.3.schedule")
    assert info.value.field == "jobs.3.schedule.cron"


VALID = [
    Schedule(cron="*/5 * * * *"),
    Schedule(cron="*/5 * * * * *"),
    Schedule(cron="@daily", timezone="Asia/Kolkata"),
    Schedule(cron="@Weekly"),
    Schedule(cron="0 0 L * *"),
    Schedule(cron="0 0 * * 5#2"),
    Schedule(cron="0 9 15W * *"),
    Schedule(cron="0 0 29 2 *"),
    Schedule(cron="0 0 ? * MON-FRI", timezone="Australia/Lord_Howe"),
    Schedule(cron="0 0 * * *", end_at_ms=START),
    Schedule(every_s=0.1, start_at_ms=1_000, end_at_ms=1_001),
    Schedule(at_ms=START, timezone="America/New_York"),
]


@pytest.mark.parametrize("schedule", VALID)
def test_check_schedule_accepts(schedule: Schedule) -> None:
    check_schedule(schedule)


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        (Schedule(cron="61 * * * *"), "schedule.cron"),
        (Schedule(cron="@daily", timezone="Nowhere"), "schedule.timezone"),
    ],
)
def test_next_fire_refuses_what_check_refuses(schedule: Schedule, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        next_fire_ms(schedule, 0, created_ms=0)
    assert info.value.field == field
