"""Time as a dependency: the wall clock for slots, the monotonic clock for waits.

Pure code takes `now_ms` as a parameter; loops read a `Clock` once per iteration.
Tests pass a `FakeClock` and advance it by hand.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock", "wait_event"]


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set or `timeout_s` passed; True if it was set.

    Not `asyncio.wait_for`: on Python 3.11 it swallows a cancellation that arrives as the event
    is set, and a loop waiting on it then never ends (a node that did not stop on SIGTERM).
    `asyncio.timeout` counts cancellations and re-raises them."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


class Clock(Protocol):
    """Called from the event loop only."""

    def now_ms(self) -> int:
        """Wall-clock epoch milliseconds."""
        ...

    def monotonic(self) -> float:
        """Monotonic seconds, for timeouts and leases."""
        ...

    async def sleep_until_ms(self, wall_ms: int) -> None:
        """Sleep until the wall clock reaches `wall_ms` (returns at once if past)."""
        ...


class SystemClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_until_ms(self, wall_ms: int) -> None:
        # Sleep most of the way, then re-read the wall clock to land within ~1 ms.
        while True:
            remaining = (wall_ms * 1_000_000 - time.time_ns()) / 1e9
            if remaining <= 0:
                return
            await asyncio.sleep(remaining if remaining < 0.05 else remaining - 0.002)


class FakeClock:
    """A clock that only moves when told to; sleepers wake when it passes their time."""

    def __init__(self, now_ms: int = 1_700_000_000_000) -> None:
        self._now_ms = now_ms
        self._mono = 1000.0
        self._changed = asyncio.Event()

    def now_ms(self) -> int:
        return self._now_ms

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now_ms += int(round(seconds * 1000))
        self._mono += seconds
        self._changed.set()

    async def sleep_until_ms(self, wall_ms: int) -> None:
        while self._now_ms < wall_ms:
            self._changed.clear()
            await self._changed.wait()
