"""Delivering one alert to its channel, under this node's fences and with its secrets.

- webhook: an HTTP POST through the HTTP executor's session (`HttpExecutor.post`: http(s) only,
  no redirects, the address fence in the resolver), with `X-Raftsched-Alert-Id`,
  `X-Raftsched-Timestamp` (ISO ms, this node's clock) and, with a signing secret,
  `X-Raftsched-Signature: sha256=<hex HMAC-SHA256 of timestamp + "." + body>`. A 2xx delivers.
- email: SMTP with `aiosmtplib` (the `[email]` extra), STARTTLS unless the channel says
  `starttls: false`. The SMTP host is resolved through the same address fence (`FencedResolver`)
  and the connection made to an address that passed it; TLS checks the certificate against the
  host name.
- message: the message executor's pooled publisher of the channel's broker; the broker's
  acknowledgement delivers. The message id is the alert id.

`send` answers None when delivered, else the error (never a secret's value).
"""

from __future__ import annotations

import asyncio
import socket
from email.message import EmailMessage
from typing import Any, Protocol

import orjson

from ..alerting import AlertRecord, headline, payload, signature, webhook_body
from ..channels import ChannelSpec, ChannelType, smtp_address
from ..model import iso_ms
from .base import ExecPolicy, Refused
from .http import FencedResolver, HttpExecutor
from .message import MessageExecutor
from .publishers import Message, PublishFailed

__all__ = ["AlertSender", "Sender", "email_message", "webhook_request"]

SEND_TIMEOUT_S = 15.0


class Sender(Protocol):
    async def send(self, alert: AlertRecord, channel: ChannelSpec, cluster: str, now_ms: int) -> str | None:
        """Deliver once; None if delivered, else why not. Never raises for a failed delivery."""
        ...


def webhook_request(
    alert: AlertRecord, channel: ChannelSpec, cluster: str, now_ms: int, secret: str | None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a webhook delivery."""
    body = webhook_body(alert, cluster, channel.format)
    stamp = iso_ms(now_ms) or ""
    headers = {
        "Content-Type": "application/json",
        "X-Raftsched-Alert-Id": alert.alert_id,
        "X-Raftsched-Timestamp": stamp,
    }
    if secret is not None:
        headers["X-Raftsched-Signature"] = signature(secret, stamp, body)
    return body, headers


def email_message(alert: AlertRecord, channel: ChannelSpec, cluster: str) -> EmailMessage:
    """The e-mail of an alert: the headline as subject, the payload as text."""
    message = EmailMessage()
    message["Subject"] = headline(alert, cluster)
    message["From"] = channel.sender or ""
    message["To"] = ", ".join(channel.recipients)
    message["Message-ID"] = f"<{alert.alert_id}@raftsched>"
    message["X-Raftsched-Alert-Id"] = alert.alert_id
    fields = payload(alert, cluster)
    lines = [f"{key}: {value}" for key, value in fields.items() if value is not None]
    message.set_content("\n".join(lines) + "\n\n" + orjson.dumps(fields, option=orjson.OPT_INDENT_2).decode())
    return message


class AlertSender:
    """Delivers alerts for this node; borrows the node's HTTP and message executors."""

    def __init__(self, policy: ExecPolicy, http: HttpExecutor, messages: MessageExecutor) -> None:
        self._policy = policy
        self._http = http
        self._messages = messages

    async def send(self, alert: AlertRecord, channel: ChannelSpec, cluster: str, now_ms: int) -> str | None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                if channel.type is ChannelType.WEBHOOK:
                    return await self._webhook(alert, channel, cluster, now_ms)
                if channel.type is ChannelType.EMAIL:
                    return await self._email(alert, channel, cluster)
                return await self._message(alert, channel, cluster)
        except Refused as exc:
            return f"refused: {exc}"
        except TimeoutError:
            return f"no answer within {SEND_TIMEOUT_S:g} s"
        except PublishFailed as exc:
            return str(exc)
        except (OSError, ValueError, RuntimeError) as exc:  # aiohttp, aiosmtplib errors are these
            return f"{type(exc).__name__}: {exc}"[:500]

    def _secret(self, name: str | None) -> str | None:
        if name is None:
            return None
        value = self._policy.secrets.get(name)
        if value is None:
            raise Refused(f"this node has no secret {name}")
        return value

    async def _webhook(
        self, alert: AlertRecord, channel: ChannelSpec, cluster: str, now_ms: int
    ) -> str | None:
        body, headers = webhook_request(alert, channel, cluster, now_ms, self._secret(channel.signing_secret))
        status, answer = await self._http.post(channel.url or "", body, headers, SEND_TIMEOUT_S)
        return None if 200 <= status < 300 else f"status {status}: {answer}"

    async def _email(self, alert: AlertRecord, channel: ChannelSpec, cluster: str) -> str | None:
        try:
            import aiosmtplib
        except ImportError:
            return "e-mail needs the [email] extra (aiosmtplib)"
        password = self._secret(channel.password_secret)
        host, port = smtp_address(channel.smtp or "")
        sock = await _fenced_socket(host, port, FencedResolver(self._policy.http_allow))
        try:
            await aiosmtplib.send(
                email_message(alert, channel, cluster),
                hostname=host,
                sock=sock,
                start_tls=channel.starttls,
                username=channel.username,
                password=password,
                timeout=SEND_TIMEOUT_S,
            )
        except aiosmtplib.SMTPException as exc:
            return f"smtp: {exc}"[:500]
        finally:
            sock.close()
        return None

    async def _message(self, alert: AlertRecord, channel: ChannelSpec, cluster: str) -> str | None:
        fields = {k: str(v) for k, v in payload(alert, cluster).items() if v is not None and k != "summary"}
        message = Message(
            to=channel.to or "",
            body=orjson.dumps(payload(alert, cluster)),
            content_type="application/json",
            message_id=alert.alert_id,
            run_id=alert.run_id or alert.alert_id,
            fields=fields,
        )
        await self._messages.publish(channel.broker or "", message)
        return None


async def _fenced_socket(host: str, port: int, resolver: FencedResolver) -> socket.socket:
    """A socket connected to an address of `host` that the fence allows (FencedResolver raises
    AddressRefused, an OSError, when none is)."""
    results: list[Any] = await resolver.resolve(host, port, socket.AF_UNSPEC)
    loop = asyncio.get_running_loop()
    error: OSError | None = None
    for result in results:
        sock = socket.socket(result["family"], socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (result["host"], result["port"]))
        except OSError as exc:
            sock.close()
            error = exc
            continue
        return sock
    raise error or OSError(f"cannot connect to {host}:{port}")
