"""The death-detection rule (deathwatch.py) with an injected clock and probe, and the real probe
against loopback ports: refused means dead, a listening port (even one nobody accepts on) does not."""

from __future__ import annotations

import asyncio
import socket

from raftsched.clock import FakeClock
from raftsched.deathwatch import DeathWatch, refuses_connections
from raftsched.records import NodeRecord

from statekit import T0

NODE = NodeRecord(id="n2", http="http://127.0.0.1:1", raft="127.0.0.1:2")


class FakeProbe:
    """Answers each probe with `refused`; counts the probes."""

    def __init__(self, refused: bool = True) -> None:
        self.refused = refused
        self.calls = 0

    async def __call__(self, node: NodeRecord) -> bool:
        self.calls += 1
        return self.refused


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def watch_until(watch: DeathWatch, clock: FakeClock, seconds: float, connected: bool = False) -> bool:
    """Check every 50 ms (the scheduler's tick) for `seconds`; the verdict at the end."""
    verdict = False
    for _ in range(round(seconds / 0.05)):
        verdict = watch.check(NODE, connected)
        await settle()
        clock.advance(0.05)
    return verdict or watch.check(NODE, connected)


async def test_refusals_spanning_the_confirmation_time_prove_death() -> None:
    clock, probe = FakeClock(T0), FakeProbe()
    watch = DeathWatch(probe, clock.monotonic, confirm_s=0.2, probe_every_s=0.1)
    assert not watch.check(NODE, False)  # first probe started: no evidence yet
    await settle()
    assert not await watch_until(watch, clock, 0.1)  # one refusal is not enough
    assert await watch_until(watch, clock, 0.25)  # refusals 0.2 s apart: certainly dead
    assert 3 <= probe.calls <= 5


async def test_a_probe_that_connects_or_times_out_proves_nothing() -> None:
    clock, probe = FakeClock(T0), FakeProbe(refused=False)
    watch = DeathWatch(probe, clock.monotonic)
    assert not await watch_until(watch, clock, 5.0)  # a paused or partitioned node: the timeout decides
    assert probe.calls >= 10


async def test_an_answer_in_between_wipes_the_evidence() -> None:
    clock, probe = FakeClock(T0), FakeProbe()
    watch = DeathWatch(probe, clock.monotonic, confirm_s=0.2, probe_every_s=0.1)
    assert not await watch_until(watch, clock, 0.15)
    probe.refused = False  # its port accepted a connection: it was restarting, or it is alive
    assert not await watch_until(watch, clock, 0.15)
    probe.refused = True
    assert not await watch_until(watch, clock, 0.15)  # counting starts again
    assert await watch_until(watch, clock, 0.25)


async def test_a_raft_connection_wipes_the_evidence_and_stops_the_probes() -> None:
    clock, probe = FakeClock(T0), FakeProbe()
    watch = DeathWatch(probe, clock.monotonic, confirm_s=0.2, probe_every_s=0.1)
    assert not await watch_until(watch, clock, 0.15)
    calls = probe.calls
    assert not await watch_until(watch, clock, 1.0, connected=True)
    assert probe.calls == calls  # a connected peer is never probed
    assert not await watch_until(watch, clock, 0.15)  # evidence gathered afresh


async def test_a_probe_result_arriving_after_forget_is_dropped() -> None:
    clock = FakeClock(T0)
    gate = asyncio.Event()

    async def slow_refusal(node: NodeRecord) -> bool:
        await gate.wait()
        return True

    watch = DeathWatch(slow_refusal, clock.monotonic, confirm_s=0.0)
    watch.check(NODE, False)
    await settle()
    watch.clear()  # a new term began while the probe was in flight
    gate.set()
    await settle()
    assert not watch.check(NODE, False)


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()
    return port


async def test_real_probe_refused_only_when_both_ports_refuse() -> None:
    dead_raft, dead_http = _closed_port(), _closed_port()
    assert await refuses_connections(
        NodeRecord(id="x", http=f"http://127.0.0.1:{dead_http}", raft=f"127.0.0.1:{dead_raft}")
    )
    with _listening() as raft, _listening() as http:  # never accepted: like a SIGSTOP'd node
        raft_port, http_port = raft.getsockname()[1], http.getsockname()[1]
        assert not await refuses_connections(
            NodeRecord(id="x", http=f"http://127.0.0.1:{http_port}", raft=f"127.0.0.1:{raft_port}")
        )
        assert not await refuses_connections(
            NodeRecord(id="x", http=f"http://127.0.0.1:{http_port}", raft=f"127.0.0.1:{dead_raft}")
        )
