"""Pure trigger maths: when does a schedule fire next?

No clock reads and no I/O: "now" comes in as `after_ms`, and every node computes the same slots
from the same inputs. Slots are epoch milliseconds.

- `every`: slots are `start + round(k * every)` for k >= 1, with `every` taken as the decimal the user
  wrote (so 0.1 s is exactly 100 ms) and halves rounded up; found by integer arithmetic, not by a loop.
- `at`: the one slot `at_ms`.
- `None` (`"schedule": null`): a manual-only job; it has no slots.
- `cron`: whole-second wall-clock times in the schedule's IANA zone. Each wall-clock time the
  expression names fires once: a time that occurs twice (clocks go back) fires at its first
  occurrence; a time that does not exist (clocks go forward) fires at the first instant after the
  gap, and wall times that land on the same instant fire once. Cron maths runs on naive wall time
  (croniter's own DST handling fires repeated times twice) and each candidate is converted to UTC
  here, which keeps slots monotonic in wall time.

croniter parses and expands the expression once per expression (cached, ~100-300 us); the common
syntax is then matched by `_Cron.next_wall` in a few microseconds. The rarer `L`, `#` and `W` forms
are delegated to a private copy of a cached croniter, so no iterator state is shared across calls.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import zoneinfo
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction
from typing import Any

from croniter import CroniterBadDateError, CroniterError, croniter

from .errors import ValidationError
from .ids import stable_hash
from .model import MAX_TIME_MS, Schedule

__all__ = ["check_schedule", "first_slot_ms", "jitter_ms", "next_fire_ms", "slot_range", "slots_between"]

_ALIASES = frozenset({"@hourly", "@daily", "@weekly", "@monthly", "@yearly"})
_FIELD_RE = re.compile(r"\S+", re.ASCII)  # how croniter splits fields
_RANDOM_RE = re.compile(r"^r(\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)  # croniter's R: differs per process
_BAD_ZONES = frozenset({"localtime", "posixrules"})  # aliases of this host's zone, not IANA names
_EPOCH = datetime(1970, 1, 1)
_SECOND = timedelta(seconds=1)
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_SEARCH_YEARS = 50  # as croniter: an expression that matches nothing for this long never fires
_LAST_YEAR = 9998  # keeps date arithmetic inside datetime's range


# ---------------------------------------------------------------- public API


def check_schedule(schedule: Schedule | None, path: str = "schedule") -> None:
    """Refuse a schedule that cannot be planned, naming the field (`path.cron`, `path.timezone`, ...)."""
    if schedule is None:
        return
    kinds = [k for k in (schedule.cron, schedule.every_s, schedule.at_ms) if k is not None]
    if len(kinds) != 1:
        raise ValidationError("exactly one of cron, every, at is required", field=path)
    if schedule.cron is not None:
        _cron(schedule.cron, f"{path}.cron")
    if schedule.every_s is not None:
        _period_ms(schedule.every_s, f"{path}.every")
    _zone(schedule.timezone, f"{path}.timezone")
    start, end = schedule.start_at_ms, schedule.end_at_ms
    if start is not None and end is not None and end <= start:
        raise ValidationError("end_at must be later than start_at", field=f"{path}.end_at")


def next_fire_ms(schedule: Schedule | None, after_ms: int, *, created_ms: int) -> int | None:
    """The first slot strictly after `after_ms`, or None when the schedule has no more slots.

    `created_ms` anchors an `every` schedule without `start_at`; `end_at_ms` bounds every kind
    (a slot equal to it still fires). Raises ValidationError for a schedule `check_schedule` refuses.
    """
    if schedule is None:
        return None
    slot = _next_slot(schedule, after_ms, created_ms)
    if slot is None or (schedule.end_at_ms is not None and slot > schedule.end_at_ms) or slot > MAX_TIME_MS:
        return None
    return slot


def first_slot_ms(
    schedule: Schedule | None,
    old: Schedule | None,
    after_ms: int,
    *,
    now_ms: int,
    created_ms: int,
    grace_s: float,
    path: str = "schedule.at",
) -> int | None:
    """The first slot of a new or edited job (`old`: the schedule it replaces, None for a new job):
    the first slot after `after_ms`, except for a one-shot `at` set (new, or changed) to the past.

    Such an `at` is refused (ValidationError at `path`) unless it lies within `grace_s` of `now_ms`:
    then it is the first slot, and the job fires once at once. An `at` left as it was is not
    checked: it keeps its place, and once past it never fires again."""
    at = schedule.at_ms if schedule is not None else None
    changed = old is None or old.at_ms != at
    if at is None or at > now_ms or not changed:
        return next_fire_ms(schedule, after_ms, created_ms=created_ms)
    if now_ms - at > grace_s * 1000:
        raise ValidationError(f"is in the past, more than misfire.grace ({grace_s:g} s) ago", field=path)
    return at


def slots_between(
    schedule: Schedule | None, after_ms: int, until_ms: int, *, created_ms: int, limit: int
) -> list[int]:
    """The slots in (after_ms, until_ms], ascending: the earliest `limit` of them."""
    slots: list[int] = []
    while len(slots) < limit:
        slot = next_fire_ms(schedule, slots[-1] if slots else after_ms, created_ms=created_ms)
        if slot is None or slot > until_ms:
            break
        slots.append(slot)
    return slots


def slot_range(
    schedule: Schedule, after_ms: int, until_ms: int, *, created_ms: int, limit: int
) -> tuple[int, int, int] | None:
    """(first, last, count) of the slots in (after_ms, until_ms]; None when there is none.

    `every` is counted by arithmetic, however many slots there are; the other kinds are walked
    slot by slot, the earliest `limit` of them (then `last` is the last one walked, and the
    rest follows from there)."""
    if schedule.every_s is not None:
        start = schedule.start_at_ms if schedule.start_at_ms is not None else created_ms
        end = min(MAX_TIME_MS, until_ms if schedule.end_at_ms is None else min(until_ms, schedule.end_at_ms))
        return _every_range(schedule.every_s, start, after_ms, end)
    slots = slots_between(schedule, after_ms, until_ms, created_ms=created_ms, limit=limit)
    return (slots[0], slots[-1], len(slots)) if slots else None


def jitter_ms(job_id: str, nominal_ms: int, jitter_s: float) -> int:
    """A delay in [0, jitter_s * 1000] ms that every node derives alike from the job and the slot."""
    if not (math.isfinite(jitter_s) and jitter_s > 0):
        return 0
    span = math.floor(_exact_ms(jitter_s))
    return stable_hash(job_id, str(nominal_ms)) % (span + 1)


def _next_slot(schedule: Schedule, after_ms: int, created_ms: int) -> int | None:
    if schedule.at_ms is not None:
        return schedule.at_ms if schedule.at_ms > after_ms else None
    if schedule.every_s is not None:
        start = schedule.start_at_ms if schedule.start_at_ms is not None else created_ms
        return _every_next_ms(schedule.every_s, start, after_ms)
    if schedule.cron is not None:
        zone = _zone(schedule.timezone, "schedule.timezone")
        second = _cron_next_s(_cron(schedule.cron, "schedule.cron"), zone, after_ms // 1000)
        return None if second is None else second * 1000
    raise ValidationError("exactly one of cron, every, at is required", field="schedule")


# ---------------------------------------------------------------- every


def _every_next_ms(every_s: float, start_ms: int, after_ms: int) -> int:
    """Slot k is start + floor(k*num/den + 1/2); take the least k >= 1 whose slot is > after_ms."""
    num, den = _period_ms(every_s, "schedule.every")
    return _every_slot(num, den, start_ms, _every_k(num, den, start_ms, after_ms))


def _every_k(num: int, den: int, start_ms: int, after_ms: int) -> int:
    """The least k >= 1 whose slot is > after_ms."""
    return max(1, -(-den * (2 * (after_ms - start_ms) + 1) // (2 * num)))


def _every_slot(num: int, den: int, start_ms: int, k: int) -> int:
    return start_ms + (2 * k * num + den) // (2 * den)


def _every_range(every_s: float, start_ms: int, after_ms: int, until_ms: int) -> tuple[int, int, int] | None:
    """`slot_range` of an `every` schedule (`until_ms` already bounded by its end): the k of the
    first slot after each bound."""
    num, den = _period_ms(every_s, "schedule.every")
    first_k, past_k = _every_k(num, den, start_ms, after_ms), _every_k(num, den, start_ms, until_ms)
    if past_k <= first_k:
        return None
    return (
        _every_slot(num, den, start_ms, first_k),
        _every_slot(num, den, start_ms, past_k - 1),
        past_k - first_k,
    )


def _period_ms(every_s: float, field: str) -> tuple[int, int]:
    """The period in ms as an exact fraction (numerator, denominator)."""
    if not (math.isfinite(every_s) and every_s > 0):
        raise ValidationError("must be a positive number of seconds", field=field)
    period = _exact_ms(every_s)
    return period.numerator, period.denominator


@functools.lru_cache(maxsize=1024)
def _exact_ms(seconds: float) -> Fraction:
    """Seconds as the decimal the user wrote (repr round-trips), times 1000, exactly."""
    return Fraction(repr(float(seconds))) * 1000


# ---------------------------------------------------------------- time zones


def _zone(name: str, field: str) -> zoneinfo.ZoneInfo:
    try:
        return _load_zone(name)
    except (ValueError, OSError, LookupError) as exc:
        raise ValidationError(f"unknown IANA time zone {name!r}", field=field) from exc


@functools.lru_cache(maxsize=1024)
def _load_zone(name: str) -> zoneinfo.ZoneInfo:
    """An IANA zone; names that mean something else per host (`localtime`, `right/...`) are refused."""
    if name in _BAD_ZONES or name not in _zone_names():
        raise LookupError(name)
    return zoneinfo.ZoneInfo(name)


@functools.lru_cache(maxsize=1)
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _offset_s(moment: datetime) -> int:
    offset = moment.utcoffset()
    return 0 if offset is None else offset // _SECOND


def _wall(second: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """The naive local wall time of an epoch second."""
    return datetime.fromtimestamp(second, zone).replace(tzinfo=None)


def _transition_s(zone: zoneinfo.ZoneInfo, low: int, high: int) -> int:
    """The first second in (low, high] whose UTC offset differs from low's (one transition assumed)."""
    base = _offset_s(datetime.fromtimestamp(low, zone))
    while high - low > 1:
        mid = (low + high) // 2
        if _offset_s(datetime.fromtimestamp(mid, zone)) == base:
            low = mid
        else:
            high = mid
    return high


def _utc_s(wall: datetime, zone: zoneinfo.ZoneInfo) -> int:
    """A wall time's instant: its first occurrence if repeated, the gap's end if it does not exist."""
    naive_s = (wall - _EPOCH) // _SECOND
    early = naive_s - _offset_s(wall.replace(tzinfo=zone, fold=0))
    late = naive_s - _offset_s(wall.replace(tzinfo=zone, fold=1))
    low, high = min(early, late), max(early, late)
    if low == high or _wall(low, zone) == wall:
        return low
    return _transition_s(zone, low, high)


def _search_from(second: int, zone: zoneinfo.ZoneInfo) -> datetime:
    """A wall time such that exactly the cron times after it fall after `second`.

    Normally the wall time of `second`; during the second pass of a repeated hour, the last wall
    time before the repeat ends (the repeated times already fired at their first occurrence).
    """
    local = datetime.fromtimestamp(second, zone)
    if not local.fold:
        return local.replace(tzinfo=None)
    first_pass = second - (_offset_s(local.replace(fold=0)) - _offset_s(local))
    return _wall(_transition_s(zone, first_pass, second) - 1, zone)


# ---------------------------------------------------------------- cron


@dataclass(frozen=True, slots=True)
class _Cron:
    """A cron expression expanded to sorted value sets (None: any day), matched in naive wall time."""

    levels: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]  # hours, minutes, seconds
    months: frozenset[int]
    days: frozenset[int] | None
    weekdays: frozenset[int] | None  # 0 = Sunday, as cron
    step: timedelta  # one second with a seconds field, else one minute
    fallback: Any = None  # a croniter for the L, # and W forms

    def next_wall(self, after: datetime) -> datetime | None:
        """The first matching wall time strictly after `after`, or None within the search horizon."""
        if self.fallback is not None:
            return _croniter_next(self.fallback, after)
        start = after.replace(microsecond=0) + self.step
        if self.step == _MINUTE:
            start = start.replace(second=0)
        day = self._next_day(start.date())
        if day == start.date():
            hms = _first_at_or_after(self.levels, (start.hour, start.minute, start.second))
            if hms is not None:
                return _at(day, hms)
            day = self._next_day(day + _DAY)
        return None if day is None else _at(day, tuple(level[0] for level in self.levels))

    def _next_day(self, day: date) -> date | None:
        limit = min(day.year + _SEARCH_YEARS, _LAST_YEAR)
        while day.year <= limit:
            if day.month not in self.months:
                day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            elif self._day_matches(day):
                return day
            else:
                day += _DAY
        return None

    def _day_matches(self, day: date) -> bool:
        """Cron's rule: when both day fields are restricted, either may match; else both must."""
        in_days = self.days is None or day.day in self.days
        in_weekdays = self.weekdays is None or day.isoweekday() % 7 in self.weekdays
        if self.days is not None and self.weekdays is not None:
            return in_days or in_weekdays
        return in_days and in_weekdays


def _first_at_or_after(levels: tuple[tuple[int, ...], ...], start: tuple[int, ...]) -> tuple[int, ...] | None:
    """The least tuple of level values >= `start` (lexicographic), or None: hour, minute, second."""
    if not levels:
        return ()
    values, rest = levels[0], levels[1:]
    i = bisect_left(values, start[0])
    if i < len(values) and values[i] == start[0]:
        tail = _first_at_or_after(rest, start[1:])
        if tail is not None:
            return (values[i], *tail)
        i += 1
    if i < len(values):
        return (values[i], *(level[0] for level in rest))
    return None


def _at(day: date, hms: tuple[int, ...]) -> datetime:
    hour, minute, second = hms
    return datetime.combine(day, time(hour, minute, second))


def _croniter_next(template: Any, after: datetime) -> datetime | None:
    """croniter in naive (wall-clock) mode, on a private copy: croniter objects are stateful."""
    it = copy.copy(template)
    it.nth_weekday_of_month = {k: set(v) for k, v in template.nth_weekday_of_month.items()}
    try:
        found: datetime = it.get_next(datetime, start_time=after)
    except CroniterBadDateError:
        return None
    return found


def _cron_next_s(cron: _Cron, zone: zoneinfo.ZoneInfo, after_s: int) -> int | None:
    """The first cron slot (epoch second) strictly after `after_s`.

    Wall time maps to UTC monotonically under our DST rule, so the first candidate after
    `_search_from` is the answer; the loop only guards that reasoning.
    """
    wall: datetime | None = _search_from(after_s, zone)
    while wall is not None:
        wall = cron.next_wall(wall)
        if wall is not None and (second := _utc_s(wall, zone)) > after_s:
            return second
    return None


def _cron(expr: str, field: str) -> _Cron:
    try:
        return _compile(expr)
    except ValueError as exc:
        raise ValidationError(f"invalid cron expression {expr!r}: {exc}", field=field) from exc


@functools.lru_cache(maxsize=8192)
def _compile(expr: str) -> _Cron:
    """Expand once per expression; raises ValueError with a short reason."""
    fields = _FIELD_RE.findall(expr)
    if expr.startswith("@") and expr.lower() not in _ALIASES:
        raise ValueError("the aliases are @hourly, @daily, @weekly, @monthly and @yearly")
    if not expr.startswith("@") and len(fields) not in (5, 6):
        raise ValueError("expected 5 fields, or 6 with seconds first")
    if any(_RANDOM_RE.match(f) for f in fields):
        raise ValueError("random 'R' values would differ from node to node")
    try:
        croniter.expand(expr, second_at_beginning=True, strict=True)  # strict: no "Feb 30"
        template = croniter(expr, _EPOCH, second_at_beginning=True)
    except (CroniterError, ValueError, LookupError, TypeError) as exc:
        raise ValueError(_reason(exc)) from exc
    return _from_template(template)


def _reason(exc: Exception) -> str:
    """croniter's message, shortened (some carry a whole traceback)."""
    lines = str(exc).strip().splitlines()
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _from_template(template: Any) -> _Cron:
    expanded: list[list[Any]] = template.expanded
    minutes, hours, days, months, weekdays = expanded[:5]
    seconds = expanded[5] if len(expanded) > 5 else [0]
    special = bool(template.nth_weekday_of_month or template.nearest_weekday or "l" in days)
    return _Cron(
        levels=(_values(hours, 0, 23), _values(minutes, 0, 59), _values(seconds, 0, 59)),
        months=frozenset(_values(months, 1, 12)),
        days=None if days == ["*"] else frozenset(_values(days, 1, 31)),
        weekdays=None if weekdays == ["*"] else frozenset(_values(weekdays, 0, 6)),
        step=_SECOND if len(expanded) > 5 else _MINUTE,
        fallback=template if special else None,
    )


def _values(field: list[Any], low: int, high: int) -> tuple[int, ...]:
    """croniter's expanded field ('*' or ints; 'l' is left to the croniter fallback) as sorted ints."""
    if field == ["*"]:
        return tuple(range(low, high + 1))
    return tuple(sorted(v for v in field if isinstance(v, int)))
