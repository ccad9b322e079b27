"""`[broker NAME]` sections: the message brokers a cluster publishes to (API.md "New node keys").

    [broker events]
    url = redis://127.0.0.1:6379/0      ; redis:// rediss:// amqp:// amqps:// mqtt:// mqtts:// nats:// tls://
    password_secret = EVENTS_PASSWORD   ; a secret NAME (environment, secrets_file or [secrets])
    tls_ca = /etc/ssl/broker-ca.pem     ; tls_cert / tls_key for client certificates
    nodes = n1,n2                       ; the nodes that have this broker (default: every node)

A job names a broker; only nodes that have it publish to it (they publish the names they have in
the node table, so creation refuses a broker no live node has, and routing skips the others).
Credentials never appear in the URL (a password there is refused): they are secrets, resolved
by the node that uses them, never in the log, an answer or an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .errors import ConfigError

__all__ = ["BROKER_KEYS", "BROKER_NAME_RE", "BrokerConfig", "parse_broker"]

BROKER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
SCHEMES = ("redis", "rediss", "amqp", "amqps", "mqtt", "mqtts", "nats", "tls")
BROKER_KEYS = ("url", "password_secret", "tls_ca", "tls_cert", "tls_key", "nodes")
_SECRET_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    name: str
    url: str
    password_secret: str | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    nodes: tuple[str, ...] = ()  # empty: every node

    def serves(self, node_id: str) -> bool:
        return not self.nodes or node_id in self.nodes


def parse_broker(name: str, items: Mapping[str, str], base: Path, node_ids: tuple[str, ...]) -> BrokerConfig:
    section = f"broker {name}"
    if not BROKER_NAME_RE.fullmatch(name):
        raise ConfigError(section, None, f"a broker name must match {BROKER_NAME_RE.pattern}")
    for key in items:
        if key not in BROKER_KEYS:
            raise ConfigError(section, key, f"unknown key; a broker has {', '.join(BROKER_KEYS)}")
    url = items.get("url", "").strip()
    _check_url(section, url)
    secret = items.get("password_secret", "").strip() or None
    if secret is not None and not _SECRET_NAME_RE.fullmatch(secret):
        raise ConfigError(section, "password_secret", "must be a secret name such as BROKER_PASSWORD")
    nodes = tuple(n.strip() for n in items.get("nodes", "").split(",") if n.strip())
    for node in nodes:
        if node not in node_ids:
            raise ConfigError(section, "nodes", f"no [node {node[:64]}] section in this file")
    paths = {key: _path(base, items.get(key, "")) for key in ("tls_ca", "tls_cert", "tls_key")}
    if (paths["tls_cert"] is None) != (paths["tls_key"] is None):
        raise ConfigError(section, "tls_cert", "tls_cert and tls_key go together")
    return BrokerConfig(name=name, url=url, password_secret=secret, nodes=nodes, **paths)


def _check_url(section: str, url: str) -> None:
    if not url:
        raise ConfigError(section, "url", f"required: {' | '.join(f'{s}://host:port' for s in SCHEMES[::2])}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(section, "url", f"not a URL: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ConfigError(section, "url", f"scheme must be one of {', '.join(SCHEMES)}")
    if not parts.hostname or port is None:
        raise ConfigError(section, "url", "needs a host and a port")
    if parts.password:
        raise ConfigError(section, "url", "no password in the URL: name a secret in password_secret")


def _path(base: Path, raw: str) -> Path | None:
    raw = raw.strip()
    return (base / raw).resolve() if raw else None
