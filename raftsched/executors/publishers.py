"""One publisher per broker kind: a message out, the broker's acknowledgement back.

A `Publisher` holds one connection (opened on first use, dropped on any error so that the next
publish dials again: a broker restart costs the runs in flight, never the node) and publishes one
`Message` at a time as the broker defines "accepted":

- **redis**: `to` is a stream key (`mode: stream`, XADD, the default), a list (`list`, LPUSH) or a
  channel (`pubsub`, PUBLISH); accepted on the server's reply (`pubsub` with `require_receivers`
  also needs a receiver).
- **amqp**: `to` is `exchange:routing_key` (split at the first `:`; `:queue` for the default
  exchange); accepted on the publisher confirm; an unroutable message (mandatory) fails.
- **mqtt**: `to` is a topic (`qos`, default 1), MQTT v5; accepted on PUBACK (QoS 1) / PUBCOMP (2).
- **nats**: `to` is a subject; accepted on the JetStream ack where a stream covers it, else when
  the server has answered the flush after the publish (core NATS).

Every message carries the run's identity (`Message.fields`: run id, job, attempt, slot, node,
shard) and a message id `<run_id>/<attempt>` (AMQP `message_id`, a Redis stream field, an MQTT v5
user property); NATS' `Nats-Msg-Id` is the run id alone, so that JetStream drops a retry's
duplicate of a message it already stored. Client libraries are optional extras, imported on first
use: a node without them refuses message tasks with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

__all__ = ["REDIS_MAX_CONNECTIONS", "BrokerSpec", "Message", "PublishFailed", "Publisher", "publisher_for"]

REDIS_MAX_CONNECTIONS = 100  # per node and Redis broker; more publishes at once wait for one


class PublishFailed(Exception):
    """The broker refused the message, was unreachable, or did not acknowledge it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerSpec:
    """A `[broker NAME]` section as this node uses it (the password already resolved)."""

    name: str
    url: str
    password: str | None = field(default=None, repr=False)
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None

    @property
    def kind(self) -> str:
        return {
            "redis": "redis",
            "rediss": "redis",
            "amqp": "amqp",
            "amqps": "amqp",
            "mqtt": "mqtt",
            "mqtts": "mqtt",
            "nats": "nats",
            "tls": "nats",
        }[urlsplit(self.url).scheme]

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme in ("rediss", "amqps", "mqtts", "tls") or self.tls_ca is not None

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls_ca)
        if self.tls_cert is not None:
            context.load_cert_chain(self.tls_cert, self.tls_key)
        return context


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    to: str
    body: bytes
    content_type: str
    message_id: str  # <run_id>/<attempt>
    run_id: str
    fields: Mapping[str, str]  # run_id, job_id, attempt, scheduled_at, node, shard, shards
    headers: Mapping[str, str] = field(default_factory=dict)  # the task's, secrets resolved
    options: Mapping[str, Any] = field(default_factory=dict)

    def envelope(self) -> bytes:
        """The JSON form for transports without headers (Redis lists and channels)."""
        return orjson.dumps(
            {"body": self.body.decode("utf-8", "replace"), "message_id": self.message_id, **self.fields}
        )


class Publisher(Protocol):
    async def publish(self, message: Message) -> str:
        """Publish; return what the broker answered, for the run's output. Raises PublishFailed."""
        ...

    async def close(self) -> None: ...


def publisher_for(spec: BrokerSpec) -> Publisher:
    kind = spec.kind
    if kind == "redis":
        return RedisPublisher(spec)
    if kind == "amqp":
        return AmqpPublisher(spec)
    if kind == "mqtt":
        return MqttPublisher(spec)
    return NatsPublisher(spec)


class _Connected:
    """A connection opened on first use, under a lock, and forgotten after any failure."""

    def __init__(self, spec: BrokerSpec) -> None:
        self.spec = spec
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def connection(self) -> Any:
        async with self._lock:
            if self._conn is None:
                self._conn = await self._connect()
            return self._conn

    async def _connect(self) -> Any:
        raise NotImplementedError

    async def _disconnect(self, conn: Any) -> None:
        raise NotImplementedError

    async def forget(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await self._disconnect(conn)

    async def close(self) -> None:
        await self.forget()

    async def guarded(self, what: str, message: Message) -> str:
        try:
            return await self._send(await self.connection(), message)
        except PublishFailed:
            raise
        except ImportError as exc:
            hint = f"pip install 'raftsched[{what}]'"
            raise PublishFailed(f"this node lacks the {what} client library: {hint}") from exc
        except asyncio.CancelledError:
            await self.forget()
            raise
        except Exception as exc:  # noqa: BLE001 - every client error means "not accepted"
            await self.forget()
            raise PublishFailed(f"{what} {self.spec.name!r}: {type(exc).__name__}: {exc}") from exc

    async def _send(self, conn: Any, message: Message) -> str:
        raise NotImplementedError


class RedisPublisher(_Connected):
    """Publishes through a pool of at most REDIS_MAX_CONNECTIONS connections: a run that finds
    them all busy waits for one (bounded by the run's timeout, which the executor applies),
    never fails for it — redis-py's default pool refuses at once (`Too many connections`)."""

    async def _connect(self) -> Any:
        import redis.asyncio as redis

        kwargs: dict[str, Any] = {"password": self.spec.password} if self.spec.password else {}
        if self.spec.tls and self.spec.tls_ca:
            kwargs["ssl_ca_certs"] = self.spec.tls_ca
        pool = redis.BlockingConnectionPool.from_url(
            self.spec.url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=None,
            socket_connect_timeout=5,
            **kwargs,
        )
        client = redis.Redis.from_pool(pool)  # closing the client closes the pool
        await client.ping()
        return client

    async def _disconnect(self, conn: Any) -> None:
        await conn.aclose()

    async def publish(self, message: Message) -> str:
        return await self.guarded("redis", message)

    async def _send(self, conn: Any, message: Message) -> str:
        mode = message.options.get("mode", "stream")
        if mode == "stream":
            fields = {"body": message.body, "message_id": message.message_id, **message.fields}
            entry = await conn.xadd(message.to, fields)
            return f"XADD {message.to} -> {entry.decode()}"
        if mode == "list":
            length = await conn.lpush(message.to, message.envelope())
            return f"LPUSH {message.to} -> length {length}"
        receivers = await conn.publish(message.to, message.envelope())
        if receivers == 0 and message.options.get("require_receivers"):
            raise PublishFailed(f"PUBLISH {message.to}: no subscriber received it")
        return f"PUBLISH {message.to} -> {receivers} receivers"


class AmqpPublisher(_Connected):
    async def _connect(self) -> Any:
        import aio_pika
        from yarl import URL

        url = URL(self.spec.url)
        if self.spec.password:  # in memory only: the configured URL never holds it
            url = url.with_password(self.spec.password)
        connection = await aio_pika.connect(url, timeout=5, ssl_context=self.spec.ssl_context())
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return connection, channel

    async def _disconnect(self, conn: Any) -> None:
        await conn[0].close()

    async def publish(self, message: Message) -> str:
        return await self.guarded("amqp", message)

    async def _send(self, conn: Any, message: Message) -> str:
        import aio_pika

        _, channel = conn
        exchange_name, _, routing_key = message.to.partition(":")
        exchange = (
            channel.default_exchange
            if not exchange_name
            else await channel.get_exchange(exchange_name, ensure=False)
        )
        headers: dict[str, Any] = {
            **message.headers,
            **{f"x-raftsched-{k.replace('_', '-')}": v for k, v in message.fields.items()},
        }
        outgoing = aio_pika.Message(
            message.body,
            content_type=message.content_type,
            message_id=message.message_id,
            headers=headers,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await exchange.publish(outgoing, routing_key=routing_key, mandatory=True)
        except aio_pika.exceptions.DeliveryError as exc:
            raise PublishFailed(f"amqp {message.to}: not routed to any queue ({exc})") from exc
        return f"confirmed by {exchange_name or '(default exchange)'} for {routing_key}"


class MqttPublisher(_Connected):
    async def _connect(self) -> Any:
        import aiomqtt

        url = urlsplit(self.spec.url)
        client = aiomqtt.Client(
            url.hostname or "127.0.0.1",
            url.port or 1883,
            username=url.username,
            password=self.spec.password or url.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            tls_context=self.spec.ssl_context(),
            timeout=5,
        )
        await client.__aenter__()
        return client

    async def _disconnect(self, conn: Any) -> None:
        await conn.__aexit__(None, None, None)

    async def publish(self, message: Message) -> str:
        return await self.guarded("mqtt", message)

    async def _send(self, conn: Any, message: Message) -> str:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        qos = int(message.options.get("qos", 1))
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ContentType = message.content_type
        pairs = [("message_id", message.message_id), *message.fields.items(), *message.headers.items()]
        props.UserProperty = pairs
        await conn.publish(message.to, message.body, qos=qos, properties=props, timeout=30)
        return f"{'PUBACK' if qos == 1 else 'PUBCOMP' if qos == 2 else 'sent'} for {message.to} (QoS {qos})"


class NatsPublisher(_Connected):
    """JetStream where a stream covers the subject (asked of the server, remembered for
    `STREAM_TTL_S`), else core NATS. Never a JetStream publish to a subject no stream covers: a
    plain subscriber would take that request and never answer it."""

    STREAM_TTL_S = 10.0

    def __init__(self, spec: BrokerSpec) -> None:
        super().__init__(spec)
        self._streams: dict[str, tuple[float, str | None]] = {}

    async def _connect(self) -> Any:
        import nats

        kwargs: dict[str, Any] = {"password": self.spec.password} if self.spec.password else {}
        if self.spec.tls:
            kwargs["tls"] = self.spec.ssl_context()
        return await nats.connect(
            self.spec.url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False, **kwargs
        )

    async def _disconnect(self, conn: Any) -> None:
        await conn.close()

    async def publish(self, message: Message) -> str:
        return await self.guarded("nats", message)

    async def _stream_of(self, conn: Any, subject: str) -> str | None:
        from nats.js.errors import NotFoundError

        now = asyncio.get_running_loop().time()
        known = self._streams.get(subject)
        if known is not None and now - known[0] < self.STREAM_TTL_S:
            return known[1]
        try:
            stream: str | None = await conn.jsm().find_stream_name_by_subject(subject)
        except NotFoundError:
            stream = None
        self._streams[subject] = (now, stream)
        return stream

    async def _send(self, conn: Any, message: Message) -> str:
        headers = {
            **message.headers,
            "Nats-Msg-Id": message.run_id,
            "Content-Type": message.content_type,
            "X-Raftsched-Message-Id": message.message_id,
            **{f"X-Raftsched-{k.replace('_', '-').title()}": v for k, v in message.fields.items()},
        }
        stream = await self._stream_of(conn, message.to)
        if stream is None:
            await conn.publish(message.to, message.body, headers=headers)
            await conn.flush(timeout=10)
            return f"published to {message.to} (core NATS: no stream covers it; the server received it)"
        ack = await conn.jetstream().publish(
            message.to, message.body, stream=stream, headers=headers, timeout=10
        )
        duplicate = " (duplicate: already stored)" if ack.duplicate else ""
        return f"JetStream {ack.stream} seq {ack.seq}{duplicate}"
