"""Each publisher against its real broker (Debian's servers on free loopback ports): the message
arrives with the run's identity, refusals fail, and a broker restart costs only the runs that
met it down."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from brokerkit import Broker, mosquitto_server, nats_server, rabbitmq_server, redis_server

from raftsched.executors.publishers import BrokerSpec, Message, PublishFailed, publisher_for

pytestmark = pytest.mark.integration

FIELDS = {
    "run_id": "tick@1796680000000",
    "job_id": "tick",
    "attempt": "2",
    "scheduled_at": "2026-12-07T22:13:20.000Z",
    "node": "n2",
    "shard": "0",
    "shards": "1",
}


def message(to: str, **options: object) -> Message:
    return Message(
        to=to,
        body=b'{"n": 1}',
        content_type="application/json",
        message_id="tick@1796680000000/2",
        run_id="tick@1796680000000",
        fields=FIELDS,
        headers={"X-Team": "ops"},
        options=options,
    )


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Broker]:
    with redis_server(tmp_path) as broker:
        yield broker


async def test_redis_stream_list_and_channel(redis: Broker) -> None:
    import redis.asyncio as aioredis

    publisher = publisher_for(BrokerSpec(name="events", url=redis.url))
    reader = aioredis.Redis.from_url(redis.url)
    try:
        answer = await publisher.publish(message("ticks"))
        assert answer.startswith("XADD ticks -> ")
        [(_, entry)] = await reader.xrange("ticks")
        assert entry[b"body"] == b'{"n": 1}' and entry[b"message_id"] == b"tick@1796680000000/2"
        assert entry[b"run_id"] == b"tick@1796680000000" and entry[b"attempt"] == b"2"
        await publisher.publish(message("queue", mode="list"))
        envelope = orjson.loads(await reader.rpop("queue"))
        assert envelope["message_id"] == "tick@1796680000000/2" and envelope["body"] == '{"n": 1}'
        with pytest.raises(PublishFailed, match="no subscriber"):
            await publisher.publish(message("nobody", mode="pubsub", require_receivers=True))
        assert "0 receivers" in await publisher.publish(message("nobody", mode="pubsub"))
    finally:
        await reader.aclose()
        await publisher.close()


async def test_a_broker_restart_fails_the_publish_in_between_then_reconnects(redis: Broker) -> None:
    publisher = publisher_for(BrokerSpec(name="events", url=redis.url))
    try:
        await publisher.publish(message("ticks"))
        redis.stop()
        with pytest.raises(PublishFailed, match="redis 'events'"):
            await asyncio.wait_for(publisher.publish(message("ticks")), 20)
        redis.start()
        redis.wait_listening(15)
        assert (await publisher.publish(message("ticks"))).startswith("XADD")
    finally:
        await publisher.close()


async def test_a_burst_beyond_the_redis_pool_waits_for_a_connection(redis: Broker) -> None:
    """More publishes in flight than the client's pool has connections (a slow Redis, or a node's
    loop that stalled and starts its due runs together): each waits for a free connection, none
    fails. Redis is stopped for a second so that every publish of the burst is in flight at once."""
    from raftsched.executors.publishers import REDIS_MAX_CONNECTIONS

    publisher = publisher_for(BrokerSpec(name="events", url=redis.url))
    server = redis.procs[-1].pid
    try:
        await publisher.publish(message("burst"))  # connected
        os.kill(server, signal.SIGSTOP)
        try:
            burst = [publisher.publish(message("burst")) for _ in range(2 * REDIS_MAX_CONNECTIONS)]
            pending = asyncio.gather(*burst, return_exceptions=True)
            await asyncio.sleep(1)
        finally:
            os.kill(server, signal.SIGCONT)
        answers = await asyncio.wait_for(pending, 60)
        assert [a for a in answers if not isinstance(a, str)] == []
        assert all(a.startswith("XADD burst -> ") for a in answers)
    finally:
        await publisher.close()


async def test_mqtt_qos1_with_v5_user_properties(tmp_path: Path) -> None:
    import aiomqtt

    with mosquitto_server(tmp_path) as broker:
        publisher = publisher_for(BrokerSpec(name="iot", url=broker.url))
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as consumer:
            await consumer.subscribe("ticks/#", qos=1)
            answer = await publisher.publish(message("ticks/a"))
            assert answer.startswith("PUBACK")
            async with asyncio.timeout(10):
                received = await anext(consumer.messages)
            props = dict(received.properties.UserProperty)  # type: ignore[union-attr]
            assert received.payload == b'{"n": 1}' and props["message_id"] == "tick@1796680000000/2"
            assert props["run_id"] == "tick@1796680000000" and props["X-Team"] == "ops"
        await publisher.close()


async def test_nats_jetstream_acks_and_drops_a_duplicate_run(tmp_path: Path) -> None:
    import nats

    with nats_server(tmp_path) as broker:
        publisher = publisher_for(BrokerSpec(name="bus", url=broker.url))
        nc = await nats.connect(broker.url)
        try:
            js = nc.jetstream()
            await js.add_stream(name="TICKS", subjects=["ticks.>"])
            first = await publisher.publish(message("ticks.a"))
            again = await publisher.publish(message("ticks.a"))  # a retry of the same run
            assert first.startswith("JetStream TICKS seq 1") and "duplicate" in again
            stored = await js.get_last_msg("TICKS", "ticks.a")
            assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == "tick@1796680000000"
            assert stored.headers["X-Raftsched-Attempt"] == "2"
            sub = await nc.subscribe("plain.x")
            assert "no stream" in await publisher.publish(message("plain.x"))
            got = await sub.next_msg(timeout=5)
            assert got.data == b'{"n": 1}'
        finally:
            await nc.close()
            await publisher.close()


async def test_amqp_confirms_and_refuses_the_unroutable(tmp_path: Path) -> None:
    import aio_pika

    with rabbitmq_server(tmp_path) as broker:
        connection = await aio_pika.connect(broker.url)
        publisher = publisher_for(BrokerSpec(name="rabbit", url=broker.url))
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue("ticks", durable=True)
            answer = await publisher.publish(message(":ticks"))
            assert answer.startswith("confirmed")
            received = await queue.get(timeout=10)
            assert received.body == b'{"n": 1}' and received.message_id == "tick@1796680000000/2"
            assert received.headers["x-raftsched-run-id"] == "tick@1796680000000"
            await received.ack()
            with pytest.raises(PublishFailed, match="not routed"):
                await publisher.publish(message(":no-such-queue"))
            assert (await publisher.publish(message(":ticks"))).startswith("confirmed")
        finally:
            await publisher.close()
            await connection.close()
