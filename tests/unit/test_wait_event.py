"""A loop that waits on an event with a timeout must end when it is cancelled, also when the event
is set at that very moment: the way a node failed to stop on SIGTERM (chaos seeds 3105, 5003)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import pytest

from raftsched.clock import wait_event

Wait = Callable[[asyncio.Event], Awaitable[object]]


async def _loop_until_cancelled(wait: Wait, event: asyncio.Event, rounds: list[int]) -> None:
    while True:
        event.clear()
        await wait(event)
        rounds.append(1)


async def _cancel_as_the_event_is_set(wait: Wait) -> bool:
    """True if the looping task ended on the cancellation."""
    event = asyncio.Event()
    rounds: list[int] = []
    task = asyncio.create_task(_loop_until_cancelled(wait, event, rounds))
    await asyncio.sleep(0.01)  # waiting now
    event.set()
    task.cancel()
    await asyncio.sleep(0.05)
    ended = task.done()
    task.cancel()  # the loop that swallowed the first one goes on: stop it for good
    with pytest.raises(asyncio.CancelledError):
        await task
    return ended


async def test_wait_event_passes_a_cancellation_on() -> None:
    assert await _cancel_as_the_event_is_set(lambda e: wait_event(e, 10))


async def test_wait_event_says_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert not await wait_event(event, 0.01)
    event.set()
    assert await wait_event(event, 0.01)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="asyncio.wait_for is fixed from Python 3.12")
async def test_asyncio_wait_for_loses_that_cancellation_here() -> None:
    """Why `wait_event`: the same loop over `asyncio.wait_for` goes on after being cancelled."""
    assert not await _cancel_as_the_event_is_set(lambda e: asyncio.wait_for(e.wait(), 10))
