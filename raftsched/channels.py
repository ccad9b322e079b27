"""Alert channels: where alerts go (API.md "Alerts"), as the replicated state keeps them.

    {"type": "webhook", "url": "https://hooks.example/x", "signing_secret": {"secret": "HOOK_KEY"},
     "format": "raw" | "slack" | "teams"}
    {"type": "email", "smtp": "mail.example:587", "from": "raftsched@example", "to": ["ops@example"],
     "starttls": true, "username": "raftsched", "password_secret": "SMTP_PASSWORD"}
    {"type": "message", "broker": "events", "to": "alerts"}

Every channel also takes `group_window_s` (default 10): at most one message per window, the first
alert of a burst at once, the rest grouped into one alert with their `count` (`alerting`).

Invariant: a channel never holds a secret's value, only a secret's NAME (`signing_secret` is a
secret reference, `password_secret` a name); the node that delivers looks the value up.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from yarl import URL

from .brokers import BROKER_NAME_RE
from .errors import ValidationError
from .model import (
    CHANNEL_NAME_RE,
    _bool,
    _drop_none,
    _enum,
    _num,
    _obj,
    _secret_ref,
    _str,
)
from .secretstore import SECRET_NAME_RE

__all__ = ["ChannelSpec", "ChannelType", "WebhookFormat", "check_channel_name", "smtp_address"]

DEFAULT_GROUP_WINDOW_S = 10.0
MAX_RECIPIENTS = 50


class ChannelType(StrEnum):
    WEBHOOK = "webhook"
    EMAIL = "email"
    MESSAGE = "message"


class WebhookFormat(StrEnum):
    RAW = "raw"  # the payload of API.md
    SLACK = "slack"  # Slack incoming webhook: {"text": ...}
    TEAMS = "teams"  # Microsoft Teams connector: a MessageCard


_COMMON = frozenset({"type", "group_window_s"})
_FIELDS = {
    ChannelType.WEBHOOK: _COMMON | {"url", "signing_secret", "format"},
    ChannelType.EMAIL: _COMMON | {"smtp", "from", "to", "starttls", "username", "password_secret"},
    ChannelType.MESSAGE: _COMMON | {"broker", "to"},
}


def check_channel_name(name: str) -> str:
    if not CHANNEL_NAME_RE.fullmatch(name):
        raise ValidationError("must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}", field="name")
    return name


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelSpec:
    """One channel; the fields of its type are set, the others hold their defaults."""

    name: str
    type: ChannelType
    group_window_s: float = DEFAULT_GROUP_WINDOW_S
    url: str | None = None  # webhook
    signing_secret: str | None = None  # webhook: a secret NAME
    format: WebhookFormat = WebhookFormat.RAW
    smtp: str | None = None  # email: host:port
    sender: str | None = None  # email `from`
    recipients: tuple[str, ...] = ()  # email `to`
    starttls: bool = True
    username: str | None = None
    password_secret: str | None = None  # email: a secret NAME
    broker: str | None = None  # message
    to: str | None = None  # message: the broker's destination (as a message task's `to`)

    @classmethod
    def from_dict(cls, value: object, *, name: str) -> ChannelSpec:
        """Parse the wire form strictly; errors name the field."""
        if not isinstance(value, Mapping):
            raise ValidationError("must be an object", field=None)
        kind = _enum(ChannelType, value.get("type"), "type")
        d = _obj(value, "", _FIELDS[kind])
        window = _num(d.get("group_window_s", DEFAULT_GROUP_WINDOW_S), "group_window_s", maximum=3600)
        base = cls(name=check_channel_name(name), type=kind, group_window_s=window)
        if kind is ChannelType.WEBHOOK:
            return _webhook(base, d)
        if kind is ChannelType.EMAIL:
            return _email(base, d)
        return _message(base, d)

    @classmethod
    def from_wire(cls, d: Mapping[str, Any]) -> ChannelSpec:
        """What `to_dict` wrote: the state applies this (the API checked it first)."""
        return cls.from_dict({k: v for k, v in d.items() if k != "name"}, name=str(d["name"]))

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret names a node needs to deliver to this channel."""
        return tuple(n for n in (self.signing_secret, self.password_secret) if n is not None)

    def to_dict(self) -> dict[str, Any]:
        """The wire form (also the answer's: it holds names, never a secret's value)."""
        common = {"name": self.name, "type": self.type.value, "group_window_s": self.group_window_s}
        if self.type is ChannelType.WEBHOOK:
            secret = None if self.signing_secret is None else {"secret": self.signing_secret}
            return {
                **common,
                **_drop_none({"url": self.url, "signing_secret": secret}),
                "format": self.format.value,
            }
        if self.type is ChannelType.EMAIL:
            return {
                **common,
                **_drop_none({"smtp": self.smtp, "from": self.sender}),
                "to": list(self.recipients),
                "starttls": self.starttls,
                **_drop_none({"username": self.username, "password_secret": self.password_secret}),
            }
        return {**common, "broker": self.broker, "to": self.to}


def _webhook(base: ChannelSpec, d: Mapping[str, Any]) -> ChannelSpec:
    raw = _str(d.get("url"), "url", max_len=2048, allow_empty=False)
    try:
        url = URL(raw)
    except ValueError:
        raise ValidationError("is not a URL", field="url") from None
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise ValidationError("must be an http or https URL with a host", field="url")
    if url.user is not None or url.password is not None:
        raise ValidationError("must not carry credentials: use signing_secret", field="url")
    secret = d.get("signing_secret")
    if secret is not None and not isinstance(secret, Mapping):
        raise ValidationError(
            'must be a secret reference {"secret": NAME}, never a value', field="signing_secret"
        )
    return _replace(
        base,
        url=raw,
        signing_secret=None if secret is None else _secret_ref(secret, "signing_secret").name,
        format=_enum(WebhookFormat, d.get("format", "raw"), "format"),
    )


def _email(base: ChannelSpec, d: Mapping[str, Any]) -> ChannelSpec:
    smtp = _str(d.get("smtp"), "smtp", max_len=300, allow_empty=False)
    smtp_address(smtp)
    to = d.get("to")
    if not isinstance(to, list) or not to or len(to) > MAX_RECIPIENTS:
        raise ValidationError(f"must be a list of 1 to {MAX_RECIPIENTS} addresses", field="to")
    password = d.get("password_secret")
    if password is not None and not SECRET_NAME_RE.fullmatch(_str(password, "password_secret", max_len=256)):
        raise ValidationError(
            "must be a secret NAME ([A-Za-z_][A-Za-z0-9_]*), never a value", field="password_secret"
        )
    username = d.get("username")
    return _replace(
        base,
        smtp=smtp,
        sender=_address(d.get("from"), "from"),
        recipients=tuple(_address(a, f"to.{i}") for i, a in enumerate(to)),
        starttls=_bool(d.get("starttls", True), "starttls"),
        username=None if username is None else _str(username, "username", max_len=256),
        password_secret=password,
    )


def _message(base: ChannelSpec, d: Mapping[str, Any]) -> ChannelSpec:
    broker = _str(d.get("broker"), "broker", max_len=64)
    if not BROKER_NAME_RE.fullmatch(broker):
        raise ValidationError("must name a [broker NAME] section", field="broker")
    return _replace(base, broker=broker, to=_str(d.get("to"), "to", max_len=1024, allow_empty=False))


def _address(value: object, path: str) -> str:
    text = _str(value, path, max_len=320, allow_empty=False)
    if "@" not in text or any(c in text for c in "\r\n<>,; \t"):
        raise ValidationError("must be one e-mail address (local@domain)", field=path)
    return text


def smtp_address(smtp: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) -> (host, port); ValidationError names `smtp`."""
    host, sep, port = smtp.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValidationError("must be host:port", field="smtp")
    return host, int(port)


def _replace(base: ChannelSpec, **fields: Any) -> ChannelSpec:
    return dataclasses.replace(base, **fields)
