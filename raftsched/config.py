"""The cluster .ini file -> a frozen `ClusterConfig` and the `NodeConfig` of the node being started.

One file describes the whole cluster (`[cluster]` and one `[node <id>]` per node), so every node
validates the same text and agrees on every address; command-line flags (`Overrides`) change only
the node being started. Every error is a one-line `ConfigError` naming section and key: a node
must refuse a bad config at start, never limp on with a guess. `cluster.example.ini` documents
every key; a test keeps it and `CLUSTER_KEYS` / `NODE_KEYS` in step.

The secret is never echoed in an error and is left out of the dataclasses' repr: it authenticates
the Raft frames that PySyncObj unpickles, so it is root-equivalent on every node. The same holds for
task secrets: the `[secrets]` section (every node that reads the file) and the chosen node's
`secrets_file` (read by that node only, refused unless mode 0600); see `secretstore`.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import math
import operator
import os
import re
import secrets
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yarl import URL

from . import credentials, datadir
from .brokers import BrokerConfig, parse_broker
from .errors import ConfigError
from .secretstore import check_secret_name, read_secrets_file

__all__ = [
    "CLUSTER_KEYS",
    "DEFAULT_MESSAGE_MAX_BYTES",
    "DEFAULT_OUTPUT_MAX_BYTES",
    "DEFAULT_MAX_RAFT_FRAME_BYTES",
    "MAX_FRAME_LENGTH",
    "MIN_SECRET_CHARS",
    "NODE_ID_RE",
    "NODE_KEYS",
    "ClusterConfig",
    "NodeConfig",
    "Overrides",
    "default_single_node",
    "is_loopback_host",
    "load",
    "new_secret",
    "normalized_origin",
    "raft_frame_bytes_needed",
    "write_local_cluster",
]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NODE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_SECRET_CHARS = credentials.MIN_CHARS
DEFAULT_OUTPUT_MAX_BYTES = 10 << 20  # per attempt's output file; past it the file ends with a marker
DEFAULT_MESSAGE_MAX_BYTES = 1 << 20  # a message task's body, per node (`message_max_bytes`)
_SECRET_HINT = f"use at least {MIN_SECRET_CHARS} random characters (run `raftsched secret` to make one)"
_TAG_KEY_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}")
_TAG_VALUE_RE = re.compile(r"[^\s,=]{1,256}")
_MODULE_PREFIX_RE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.?", re.ASCII)
_LABEL_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_BROKER_SECTION_RE = re.compile(r"broker\s+(\S.*?)\s*")
_NODE_SECTION_RE = re.compile(r"node\s+(\S.*?)\s*")

# A Raft frame is a PySyncObj message, pickled (protocol 2), zlib-compressed and Fernet-encrypted,
# behind a 4-byte signed length. The largest one a write of `max_body_bytes` leads to:
# * one body byte becomes at most 8 bytes of pickled log entry: the API re-encodes the body as a
#   command, and the smallest restore item (`{"spec": {"id": "a", "schedule": {"every": 1},
#   "task": {...}}}`, 82 bytes) becomes a spec with every default (520 bytes), x6.4; text outside
#   ASCII stays as long in the command, but protocol 2 pickles bytes as latin-1 text in UTF-8 (a
#   byte >= 0x80 takes two) and the entry is pickled twice (as the entry, then inside the
#   message a follower forwards or the leader appends): x4;
# * an AppendEntries batch carries up to 64 KiB of other entries before it (PySyncObj's
#   `appendEntriesBatchSizeBytes`; the entry that crosses it goes whole); snapshot chunks are
#   64 KiB (`logCompactionBatchSize`);
# * zlib adds under 0.1 % to incompressible data; Fernet's base64 makes 4/3 of it; 4 KiB covers
#   the message envelope, Fernet's header and MAC, and the length.
_ENTRY_BYTES_PER_BODY_BYTE = 8
_BATCH_NEIGHBOURS_BYTES = 64 * 1024
_FRAME_ENVELOPE_BYTES = 4096
_DEFAULT_MAX_BODY_BYTES = 1048576
MAX_FRAME_LENGTH = 2**31 - 1  # PySyncObj's length field is a signed 32-bit int
DEFAULT_MAX_RAFT_FRAME_BYTES = 64 * 1024 * 1024


def raft_frame_bytes_needed(max_body_bytes: int) -> int:
    """The largest Raft frame a request body of `max_body_bytes` can lead to (see above)."""
    raw = _ENTRY_BYTES_PER_BODY_BYTE * max_body_bytes + _BATCH_NEIGHBOURS_BYTES
    return raw * 4 // 3 * 1001 // 1000 + _FRAME_ENVELOPE_BYTES


# ---------------------------------------------------------------- the records


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """One `[node <id>]`: where the node listens, and the node-local fences on what it executes."""

    id: str
    raft_host: str
    raft_port: int
    http_host: str
    http_port: int
    tags: dict[str, str] = field(default_factory=dict)
    capacity: int = 8
    shutdown_grace_s: float = 30.0
    allow_shell: bool = False
    command_allow: tuple[str, ...] = ()  # absolute directories; empty: any program
    run_as: str | None = None  # a user name, looked up (and the privilege checked) at node start
    python_allow: tuple[str, ...] = ()
    # Absolute directories python tasks import from, after everything the node itself imports
    # from; `load` fills in the config file's directory when the key is absent (hence no plain
    # default: the right one depends on where the file is).
    python_path: tuple[Path, ...] = field(default_factory=tuple)
    http_allow: tuple[IPNetwork, ...] = ()
    output_max_bytes: int = DEFAULT_OUTPUT_MAX_BYTES
    message_max_bytes: int = DEFAULT_MESSAGE_MAX_BYTES
    tls_cert: Path | None = None
    tls_key: Path | None = None
    secrets_file: Path | None = None
    # The secrets_file's values: filled in by `load` for the node being started only (the other
    # nodes' files live on their own machines); empty for every other node.
    file_secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def raft_addr(self) -> str:
        """`host:port` as PySyncObj takes it (it splits on the last colon: IPv6 stays unbracketed)."""
        return f"{self.raft_host}:{self.raft_port}"

    @property
    def http_url(self) -> str:
        scheme = "https" if self.tls_cert is not None else "http"
        host = f"[{self.http_host}]" if ":" in self.http_host else self.http_host
        return f"{scheme}://{host}:{self.http_port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """`[cluster]` plus every node: the same on every node, so they agree on members and timers."""

    name: str
    secret: str = field(repr=False)
    api_token: str | None = field(default=None, repr=False)
    data_dir: Path
    members: tuple[str, ...]
    nodes: dict[str, NodeConfig]
    lookahead_s: float = 3.0
    node_timeout_s: float = 5.0
    max_clock_offset_s: float = 1.0
    clock_check_period_s: float = 5.0
    history_per_job: int = 100
    output_tail_bytes: int = 4096
    max_body_bytes: int = _DEFAULT_MAX_BODY_BYTES
    # Unset in the file: the larger of this and `raft_frame_bytes_needed(max_body_bytes)`.
    max_raft_frame_bytes: int = DEFAULT_MAX_RAFT_FRAME_BYTES
    fsync: bool = False
    raft_min_timeout_s: float = 0.4
    raft_max_timeout_s: float = 1.2
    append_entries_period_s: float = 0.02
    heartbeat_period_s: float = 0.1
    auto_tick_period_s: float = 0.01
    leader_fallback_timeout_s: float = 0.4
    connection_timeout_s: float = 3.5
    log_compaction_min_entries: int = 5000
    log_compaction_min_time_s: float = 300.0
    allowed_origins: tuple[str, ...] = ()
    api_header_timeout_s: float = 10.0
    api_idle_timeout_s: float = 30.0
    api_max_connections: int = 4096
    api_max_connections_per_client: int = 256
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)  # the [secrets] section
    brokers: Mapping[str, BrokerConfig] = field(default_factory=dict)  # the [broker NAME] sections

    def node_data_dir(self, node_id: str) -> Path:
        """Each node's journal and snapshots live apart, so nodes may share one data_dir."""
        return self.data_dir / node_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """Command-line flags; they win over the file, for the node being started only."""

    data_dir: Path | None = None
    http: str | None = None
    raft: str | None = None


# ---------------------------------------------------------------- value parsers (ValueError = bad value)


def _show(raw: str) -> str:
    """A value quoted for a one-line message (repr escapes newlines), cut short if long."""
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


def _count(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be a whole number, got {_show(raw)}") from None
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _seconds(*, positive: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number of seconds, got {_show(raw)}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(f"must be {'greater than 0' if positive else 'at least 0'}, got {_show(raw)}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"must be true or false, got {_show(raw)}")


def _text(raw: str) -> str:
    return raw


def _token(raw: str) -> str:
    """It travels in an HTTP header, where whitespace would cut it or be refused."""
    if any(ch.isspace() for ch in raw):
        raise ValueError("must not contain whitespace")
    return raw


def _name(raw: str) -> str:
    if not NODE_ID_RE.fullmatch(raw):
        raise ValueError(f"must match {NODE_ID_RE.pattern}, got {_show(raw)}")
    return raw


def _items(raw: str) -> list[str]:
    """A comma-separated list; empty means none, an empty item is a typo worth reporting."""
    if not raw.strip():
        return []
    items = [item.strip() for item in raw.split(",")]
    if "" in items:
        raise ValueError(f"has an empty item in {_show(raw)}")
    return items


def _node_ids(raw: str) -> tuple[str, ...]:
    ids = _items(raw)
    for node_id in ids:
        _node_id(node_id)
    if len(set(ids)) != len(ids):
        raise ValueError(f"lists a node twice: {_show(raw)}")
    return tuple(ids)


def _node_id(raw: str) -> str:
    if not NODE_ID_RE.fullmatch(raw):
        raise ValueError(f"node id {_show(raw)} must match {NODE_ID_RE.pattern}")
    return raw


def _tags(raw: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for item in _items(raw):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not _TAG_KEY_RE.fullmatch(key) or not _TAG_VALUE_RE.fullmatch(value):
            raise ValueError(f"expected key=value,key2=value2; {_show(item)} is not a key=value pair")
        if key in tags:
            raise ValueError(f"tag {_show(key)} is given twice")
        tags[key] = value
    return tags


def _module_prefixes(raw: str) -> tuple[str, ...]:
    prefixes = _items(raw)
    for prefix in prefixes:
        if not _MODULE_PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"{_show(prefix)} is not a module prefix such as myjobs. or myjobs.tasks")
    return tuple(prefixes)


def _directories(raw: str) -> tuple[str, ...]:
    """Absolute directories, `..` folded (symlinks are resolved where they are used)."""
    directories = _items(raw)
    for directory in directories:
        if not os.path.isabs(directory):
            raise ValueError(f"{_show(directory)} is not an absolute directory such as /opt/jobs/bin")
    return tuple(os.path.normpath(directory) for directory in directories)


def _user(raw: str) -> str | None:
    """A user name (looked up on the node that runs the tasks, at its start); empty: none."""
    if any(ch.isspace() or ch in ":/," for ch in raw):
        raise ValueError(f"{_show(raw)} is not a user name")
    return raw or None


def _networks(raw: str) -> tuple[IPNetwork, ...]:
    networks: list[IPNetwork] = []
    for item in _items(raw):
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"{_show(item)} is not a network such as 10.0.0.0/8 ({exc})") from None
    return tuple(networks)


Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 unbracketed), port


def normalized_origin(text: str) -> Origin:
    """`scheme://host[:port]` -> (scheme, host, port) with the scheme's default port filled in.

    ValueError when `text` is not an http(s) origin (a path, query, user or fragment included)."""
    url = URL(text)
    if url.scheme not in ("http", "https") or not url.host or url.port is None:
        raise ValueError(f"{_show(text)} is not an origin such as https://host:port")
    if url.raw_path not in ("", "/") or url.raw_query_string or url.raw_fragment or url.raw_user:
        raise ValueError(f"{_show(text)} is not an origin: it has more than scheme, host and port")
    return url.scheme, url.host.lower(), url.port


def _origins(raw: str) -> tuple[str, ...]:
    origins = _items(raw)
    for origin in origins:
        normalized_origin(origin)
    return tuple(origins)


def _host(raw: str) -> str:
    """An IPv4 address, a bracketed IPv6 address, or a DNS name."""
    if raw.startswith("[") and raw.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError:
            raise ValueError(f"{_show(raw)} is not an IPv6 address") from None
    if ":" in raw:
        raise ValueError(f"write an IPv6 host in brackets, as in [::1]:7101; got {_show(raw)}")
    try:
        return str(ipaddress.IPv4Address(raw))
    except ValueError:
        pass
    labels = raw.rstrip(".").split(".")
    if len(raw) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(f"{_show(raw)} is not an IP address or host name")
    return raw


def _host_port(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not host or port.endswith("]"):
        raise ValueError(f"expected host:port, got {_show(raw)}")
    if not re.fullmatch(r"\d{1,5}", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {_show(port)}")
    return _host(host), int(port)


def _raft_host_port(raw: str) -> tuple[str, int]:
    """Peers dial the Raft address, so a wildcard such as 0.0.0.0 cannot be one."""
    host, port = _host_port(raw)
    if _is_ip(host) and ipaddress.ip_address(host).is_unspecified:
        raise ValueError(f"peers dial this address, so it cannot be the wildcard {host}; use the node's own")
    return host, port


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_loopback_host(host: str) -> bool:
    return host.lower() == "localhost" or (_is_ip(host) and ipaddress.ip_address(host).is_loopback)


_CLUSTER_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "name": _name,
    "secret": _text,
    "api_token": _token,
    "data_dir": _text,
    "members": _node_ids,
    "lookahead_s": _seconds(positive=False),
    "node_timeout_s": _seconds(positive=True),
    "max_clock_offset_s": _seconds(positive=True),
    "clock_check_period_s": _seconds(positive=True),
    "history_per_job": _count(0),
    "output_tail_bytes": _count(0),
    "max_body_bytes": _count(1),
    "max_raft_frame_bytes": _count(1),
    "fsync": _bool,
    "raft_min_timeout_s": _seconds(positive=True),
    "raft_max_timeout_s": _seconds(positive=True),
    "append_entries_period_s": _seconds(positive=True),
    "heartbeat_period_s": _seconds(positive=True),
    "auto_tick_period_s": _seconds(positive=True),
    "leader_fallback_timeout_s": _seconds(positive=True),
    "connection_timeout_s": _seconds(positive=True),
    "log_compaction_min_entries": _count(2),
    "log_compaction_min_time_s": _seconds(positive=True),
    "allowed_origins": _origins,
    "api_header_timeout_s": _seconds(positive=True),
    "api_idle_timeout_s": _seconds(positive=True),
    "api_max_connections": _count(1),
    "api_max_connections_per_client": _count(1),
}

_NODE_PARSERS: Mapping[str, Callable[[str], Any]] = {
    "raft": _raft_host_port,
    "http": _host_port,
    "tags": _tags,
    "capacity": _count(1),
    "shutdown_grace_s": _seconds(positive=False),
    "allow_shell": _bool,
    "command_allow": _directories,
    "run_as": _user,
    "python_allow": _module_prefixes,
    "python_path": _items,
    "http_allow": _networks,
    "output_max_bytes": _count(0),
    "message_max_bytes": _count(1),
    "tls_cert": _text,
    "tls_key": _text,
    "secrets_file": _text,
}

CLUSTER_KEYS: tuple[str, ...] = tuple(_CLUSTER_PARSERS)
NODE_KEYS: tuple[str, ...] = tuple(_NODE_PARSERS)


def _parse_section(
    section: str, items: Mapping[str, str], parsers: Mapping[str, Callable[[str], Any]]
) -> dict[str, Any]:
    """Every key known, every value parsed; the first problem becomes a ConfigError naming both."""
    values: dict[str, Any] = {}
    for key, raw in items.items():
        parse = parsers.get(key)
        if parse is None:
            close = difflib.get_close_matches(key, list(parsers), n=1)
            hint = f"did you mean {close[0]!r}?" if close else "see cluster.example.ini for the keys"
            raise ConfigError(section, key, f"unknown key; {hint}")
        try:
            values[key] = parse(raw)
        except ValueError as exc:
            raise ConfigError(section, key, str(exc)) from None
    return values


def _flag(flag: str, parse: Callable[[str], tuple[str, int]], raw: str) -> tuple[str, int]:
    try:
        return parse(raw)
    except ValueError as exc:
        raise ConfigError("command line", flag, str(exc)) from None


# ---------------------------------------------------------------- reading the file


class _IniParser(configparser.ConfigParser):
    def optionxform(self, optionstr: str) -> str:
        """Keys are case-sensitive: `Secret` is an unknown key, not a silent alias of `secret`."""
        return optionstr


def _read(path: Path) -> _IniParser:
    parser = _IniParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        comment_prefixes=(";", "#"),
        empty_lines_in_values=False,
        default_section="\x00no default section",  # so a [DEFAULT] section is an unknown section
    )
    try:
        parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), None, f"cannot read the config file: {exc}") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(exc.section, exc.option, f"duplicate key (line {exc.lineno})") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(exc.section, None, f"duplicate section (line {exc.lineno})") from None
    except configparser.MissingSectionHeaderError as exc:
        raise ConfigError(str(path), None, f"line {exc.lineno}: text before the first section") from None
    except configparser.ParsingError as exc:
        # The line's text is not shown: in [secrets], or as the cluster secret, it may be a secret.
        lineno = exc.errors[0][0]
        raise ConfigError(str(path), None, f"line {lineno}: expected key = value") from None
    except configparser.Error as exc:
        raise ConfigError(str(path), None, " ".join(str(exc).split())) from None
    return parser


@dataclass(frozen=True, slots=True)
class _Sections:
    cluster: dict[str, str]
    nodes: dict[str, dict[str, str]]  # by node id, in file order
    secrets: dict[str, str]
    brokers: dict[str, dict[str, str]]  # by broker name


def _sections(parser: _IniParser) -> _Sections:
    cluster: dict[str, str] | None = None
    nodes: dict[str, dict[str, str]] = {}
    secrets_items: dict[str, str] = {}
    brokers: dict[str, dict[str, str]] = {}
    for name in parser.sections():
        items = dict(parser.items(name))
        if name == "cluster":
            cluster = items
            continue
        if name == "secrets":
            secrets_items = items
            continue
        broker = _BROKER_SECTION_RE.fullmatch(name)
        if broker is not None:
            if broker[1] in brokers:
                raise ConfigError(name, None, "duplicate section")
            brokers[broker[1]] = items
            continue
        node_id = _node_section_id(name)
        if node_id in nodes:
            raise ConfigError(f"node {node_id}", None, "duplicate section")
        nodes[node_id] = items
    if cluster is None:
        raise ConfigError("cluster", None, "missing section: the file needs a [cluster] section")
    if not nodes:
        raise ConfigError("node", None, "missing section: the file needs at least one [node <id>] section")
    return _Sections(cluster, nodes, secrets_items, brokers)


def _node_section_id(name: str) -> str:
    match = _NODE_SECTION_RE.fullmatch(name)
    if match is None:
        if name.strip() == "node":
            raise ConfigError(name, None, "a node section needs an id: [node <id>]")
        raise ConfigError(
            name, None, "unknown section; expected [cluster], [node <id>], [broker <name>] or [secrets]"
        )
    try:
        return _node_id(match[1])
    except ValueError as exc:
        raise ConfigError(name, None, str(exc)) from None


def _absolute(base: Path, raw: str | Path) -> Path:
    """Relative paths are relative to `base`; `..` is folded, symlinks are left alone."""
    return Path(os.path.abspath(base / Path(raw).expanduser()))


# ---------------------------------------------------------------- building and checking


def _build_node(node_id: str, items: Mapping[str, str], base: Path) -> NodeConfig:
    section = f"node {node_id}"
    values = _parse_section(section, items, _NODE_PARSERS)
    for key in ("raft", "http"):
        if key not in values:
            raise ConfigError(section, key, "required: host:port")
    values["raft_host"], values["raft_port"] = values.pop("raft")
    values["http_host"], values["http_port"] = values.pop("http")
    cert, key = values.pop("tls_cert", ""), values.pop("tls_key", "")
    if bool(cert) != bool(key):
        missing = "tls_key" if cert else "tls_cert"
        raise ConfigError(section, missing, "tls_cert and tls_key must be set together (or both left empty)")
    values["tls_cert"] = _absolute(base, cert) if cert else None
    values["tls_key"] = _absolute(base, key) if key else None
    secrets_file = values.pop("secrets_file", "")
    values["secrets_file"] = _absolute(base, secrets_file) if secrets_file else None
    values["python_path"] = tuple(_absolute(base, entry) for entry in values.get("python_path", ["."]))
    return NodeConfig(id=node_id, **values)


def _secrets_section(items: Mapping[str, str]) -> dict[str, str]:
    """`[secrets]`: every key a secret name, every value non-empty. Errors never show a value."""
    for name, value in items.items():
        try:
            check_secret_name(name)
        except ValueError as exc:
            raise ConfigError("secrets", name, str(exc)) from None
        if not value:
            raise ConfigError("secrets", name, "is empty: give it a value or remove the line")
    return dict(items)


def _with_file_secrets(node: NodeConfig) -> NodeConfig:
    """Read the node's own secrets_file (only the node being started reads its file)."""
    if node.secrets_file is None:
        return node
    try:
        values = read_secrets_file(node.secrets_file)
    except ValueError as exc:
        raise ConfigError(f"node {node.id}", "secrets_file", str(exc)) from None
    return replace(node, file_secrets=values)


def _override_node(node: NodeConfig, overrides: Overrides) -> NodeConfig:
    if overrides.http is not None:
        host, port = _flag("--http", _host_port, overrides.http)
        node = replace(node, http_host=host, http_port=port)
    if overrides.raft is not None:
        host, port = _flag("--raft", _raft_host_port, overrides.raft)
        node = replace(node, raft_host=host, raft_port=port)
    return node


def _check_secret(secret: str, key: str = "secret") -> str:
    if not secret:
        raise ConfigError("cluster", key, f"required: {_SECRET_HINT}")
    return _strong(key, secret)


def _strong(key: str, value: str, hint: str = _SECRET_HINT) -> str:
    """`value` of `[cluster] key`, unless `credentials.weakness` refuses it (never shown)."""
    weakness = credentials.weakness(value)
    if weakness is not None:
        raise ConfigError("cluster", key, f"{weakness}: {hint}")
    return value


def _members(listed: tuple[str, ...] | None, nodes: Mapping[str, NodeConfig]) -> tuple[str, ...]:
    if not listed:
        return tuple(nodes)
    for node_id in listed:
        if node_id not in nodes:
            known = ", ".join(nodes)
            raise ConfigError("cluster", "members", f"{node_id!r} has no [node {node_id}] section ({known})")
    return listed


def _build_cluster(
    values: dict[str, Any], base: Path, nodes: dict[str, NodeConfig], data_dir: Path | None
) -> ClusterConfig:
    raw_dir = values.pop("data_dir", "./data")
    if not raw_dir and data_dir is None:
        raise ConfigError("cluster", "data_dir", "must not be empty")
    values["secret"] = _check_secret(values.get("secret", ""))
    token = values.get("api_token")
    values["api_token"] = _strong("api_token", token) if token else None
    values["members"] = _members(values.get("members"), nodes)
    values.setdefault("name", "raftsched")
    if "max_raft_frame_bytes" not in values:
        needed = raft_frame_bytes_needed(values.get("max_body_bytes", _DEFAULT_MAX_BODY_BYTES))
        values["max_raft_frame_bytes"] = max(DEFAULT_MAX_RAFT_FRAME_BYTES, needed)
    root = _absolute(Path.cwd(), data_dir) if data_dir is not None else _absolute(base, raw_dir)
    return ClusterConfig(data_dir=root, nodes=nodes, **values)


# (key, comparison, in words, other key, factor): `key * factor <comparison> other` must hold.
_TIMER_RULES = (
    ("auto_tick_period_s", operator.le, "not exceed", "append_entries_period_s", 1),
    ("append_entries_period_s", operator.le, "not exceed", "heartbeat_period_s", 1),
    ("heartbeat_period_s", operator.lt, "be less than a third of", "raft_min_timeout_s", 3),
    ("leader_fallback_timeout_s", operator.le, "not exceed", "raft_min_timeout_s", 1),
    ("leader_fallback_timeout_s", operator.gt, "be greater than", "heartbeat_period_s", 1),
    ("raft_max_timeout_s", operator.gt, "be greater than", "raft_min_timeout_s", 1),
    ("connection_timeout_s", operator.ge, "be at least", "raft_max_timeout_s", 1),
)


def _check_timers(cluster: ClusterConfig) -> None:
    """The orders that held up (PYSYNCOBJ.md), and every one PySyncObj would `assert` at start."""
    for key, compare, words, other, factor in _TIMER_RULES:
        mine, theirs = getattr(cluster, key), getattr(cluster, other)
        if not compare(mine * factor, theirs):
            raise ConfigError("cluster", key, f"is {mine:g}, but must {words} {other} ({theirs:g})")


def _check_addresses(nodes: Mapping[str, NodeConfig]) -> None:
    """No two listeners on one host:port, whether Raft or HTTP: the second bind would fail."""
    seen: dict[tuple[str, int], str] = {}
    for node in nodes.values():
        listeners = (("raft", node.raft_host, node.raft_port), ("http", node.http_host, node.http_port))
        for key, host, port in listeners:
            where = f"[node {node.id}] {key}"
            first = seen.setdefault((host.lower(), port), where)
            if first != where:
                raise ConfigError(f"node {node.id}", key, f"{host}:{port} is already used by {first}")


def _check_raft_frame(cluster: ClusterConfig) -> None:
    """Peers refuse a frame over `max_raft_frame_bytes` (raftguard.py): the largest write must fit."""
    limit, needed = cluster.max_raft_frame_bytes, raft_frame_bytes_needed(cluster.max_body_bytes)
    if limit < needed:
        why = f"the Raft frames of a max_body_bytes ({cluster.max_body_bytes}) write need {needed}"
        raise ConfigError("cluster", "max_raft_frame_bytes", f"is {limit}, but {why}")
    if limit > MAX_FRAME_LENGTH:
        why = "PySyncObj's frame length is a signed 32-bit number"
        raise ConfigError("cluster", "max_raft_frame_bytes", f"is {limit}, over {MAX_FRAME_LENGTH}: {why}")


def _check_token(cluster: ClusterConfig) -> None:
    """An admin API reachable from the network without a token would hand out the cluster."""
    if cluster.api_token:
        return
    for node in cluster.nodes.values():
        if not is_loopback_host(node.http_host):
            where = f"[node {node.id}] http binds {node.http_host}"
            raise ConfigError("cluster", "api_token", f"required because {where}, which is not loopback")


def _check_tls_files(node: NodeConfig) -> None:
    """Only the node being started: the other nodes' files live on their own machines."""
    for key, path in (("tls_cert", node.tls_cert), ("tls_key", node.tls_key)):
        if path is not None and not path.is_file():
            raise ConfigError(f"node {node.id}", key, f"{path} is not a file")


def _check(cluster: ClusterConfig, node: NodeConfig) -> None:
    _check_timers(cluster)
    _check_raft_frame(cluster)
    _check_addresses(cluster.nodes)
    _check_token(cluster)
    _check_tls_files(node)


def _choose(nodes: Mapping[str, NodeConfig], node_id: str | None) -> str:
    known = ", ".join(nodes)
    if node_id is None:
        if len(nodes) == 1:
            return next(iter(nodes))
        raise ConfigError("node", None, f"the file has {len(nodes)} nodes ({known}): choose one with --node")
    if node_id not in nodes:
        raise ConfigError("node", None, f"no node {_show(node_id)} in the file (it has {known})")
    return node_id


# ---------------------------------------------------------------- public entry points


def load(
    path: Path, node_id: str | None, overrides: Overrides | None = None
) -> tuple[ClusterConfig, NodeConfig]:
    """Read, check and return the cluster and the node `node_id` (None: the file's only node).

    Raises ConfigError (one line, naming section and key) on anything unknown or invalid.
    """
    path = Path(path)
    overrides = overrides or Overrides()
    base = path.absolute().parent
    sections = _sections(_read(path))
    cluster_values = _parse_section("cluster", sections.cluster, _CLUSTER_PARSERS)
    cluster_values["secrets"] = _secrets_section(sections.secrets)
    nodes = {nid: _build_node(nid, items, base) for nid, items in sections.nodes.items()}
    cluster_values["brokers"] = {
        name: parse_broker(name, items, base, tuple(nodes)) for name, items in sections.brokers.items()
    }
    chosen = _choose(nodes, node_id)
    nodes[chosen] = _override_node(nodes[chosen], overrides)
    cluster = _build_cluster(cluster_values, base, nodes, overrides.data_dir)
    _check(cluster, nodes[chosen])
    return cluster, _with_file_secrets(nodes[chosen])


def default_single_node(
    data_dir: Path, overrides: Overrides | None = None
) -> tuple[ClusterConfig, NodeConfig]:
    """`raftsched node` without a config: node n1 on loopback, its secret kept in `data_dir/secret`
    and its API token in `data_dir/api_token` (both made on first start, mode 0600): on a shared
    machine, any local user could otherwise reach the loopback API and run code as the node."""
    overrides = overrides or Overrides()
    root = _absolute(Path.cwd(), overrides.data_dir or data_dir)
    base = NodeConfig(
        id="n1",
        raft_host="127.0.0.1",
        raft_port=7101,
        http_host="127.0.0.1",
        http_port=8101,
        python_path=(Path.cwd(),),  # no config file: the directory it was started in stands for its
    )
    node = _override_node(base, overrides)
    nodes = {node.id: node}
    placeholder = ClusterConfig(name="local", secret="", data_dir=root, members=(node.id,), nodes=nodes)
    _check(placeholder, node)  # before touching the disk: bad flags create no files
    datadir.check(root)  # nor does a data_dir the node will refuse to start in
    secret = _stored_credential(root / "secret", "secret")
    return replace(
        placeholder, secret=secret, api_token=_stored_credential(root / "api_token", "api_token")
    ), node


def new_secret() -> str:
    """A fresh cluster secret or API token: 256 random bits, URL-safe, nothing an .ini line mangles."""
    return secrets.token_urlsafe(32)


def write_local_cluster(
    example: Path,
    out: Path,
    secret: str,
    api_token: str | None = None,
    settings: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Copy `example` to `out` (mode 0600) with `secret` (and `api_token`, if given) filled in, and
    `settings` (by section name, as in `{"node n1": {"allow_shell": "true"}}`) set: a key's line is
    replaced in place, keeping its comment; a key the section lacks is added after its last key.
    Every comment is kept. The values of `settings` are not checked here: `load` checks the file."""
    credentials_ = {"secret": secret} if api_token is None else {"secret": secret, "api_token": api_token}
    for key, value in credentials_.items():
        _check_secret(value, key)
        if any(ch.isspace() for ch in value):
            raise ConfigError("cluster", key, "must not contain whitespace")
    try:
        lines = Path(example).read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(example), None, f"cannot read the example config: {exc}") from None
    _check_credential_lines(lines, credentials_, example)
    wanted = {name: dict(values) for name, values in (settings or {}).items()}
    cluster = wanted.setdefault("cluster", {})
    cluster.update(credentials_)
    _write_private(Path(out), "".join(_with_values(lines, wanted)))


# ---------------------------------------------------------------- files holding credentials


def _stored_credential(path: Path, key: str) -> str:
    """Reuse the credential of an earlier start, or make one: a restarted node must keep it."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = new_secret()
        _write_private(path, value + "\n")
        return value
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("cluster", key, f"cannot read {path}: {exc}") from None
    return _strong(key, value, f"the one in {path} is refused; delete it to make a new one")


def _write_private(path: Path, text: str) -> None:
    """Write atomically, mode 0600 from birth (mkstemp), so the secret is never readable by others."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise ConfigError("cluster", "data_dir", f"cannot write {path}: {exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_SECTION_RE = re.compile(r"\[(.+)\]")
_KEY_RE = re.compile(r"(\w+)\s*=")


def _check_credential_lines(lines: list[str], values: Mapping[str, str], example: Path) -> None:
    """The example must have a `key =` line in [cluster] for each credential: appending one would
    leave the empty line that documents it, and a reader would see two."""
    section, seen = None, set()
    for line in lines:
        header, key = _SECTION_RE.match(line), _KEY_RE.match(line)
        if header is not None:
            section = header[1].strip()
        elif section == "cluster" and key is not None:
            seen.add(key[1])
    for missing in (key for key in values if key not in seen):
        raise ConfigError("cluster", missing, f"{example} has no `{missing} =` line in [cluster] to fill in")


def _with_values(lines: list[str], values: Mapping[str, Mapping[str, str]]) -> list[str]:
    """`lines` with `values[section][key]` set: the first `key =` line of the section replaced,
    or a line added after the section's last key line (and the comment lines indented under it)."""
    out: list[str] = []
    left = {name: dict(keys) for name, keys in values.items()}
    section: str | None = None
    insert_at = 0  # in `out`: just after the current section's last key line and its comments
    for line in lines:
        header, key = _SECTION_RE.match(line), _KEY_RE.match(line)
        if header is not None:
            _insert_left(out, insert_at, left.pop(section, {}) if section else {})
            section = header[1].strip()
        elif section in left and key is not None and key[1] in left[section]:
            line = _set_value(line, f"{key[1]} = {left[section].pop(key[1])}")
        out.append(line)
        if header is not None or key is not None or (line[:1].isspace() and line.strip()):
            insert_at = len(out)
    _insert_left(out, insert_at, left.pop(section, {}) if section else {})
    if left:
        missing = next(iter(left))
        raise ConfigError(missing, None, "no such section in the example config to set keys in")
    return out


def _insert_left(out: list[str], at: int, keys: Mapping[str, str]) -> None:
    if keys and at > 0 and not out[at - 1].endswith("\n"):
        out[at - 1] += "\n"  # the file's last line: the new ones must not run on from it
    out[at:at] = [f"{key} = {value}\n" for key, value in keys.items()]


def _set_value(line: str, assignment: str) -> str:
    """Replace `key = value` by `assignment`, keeping the line's inline comment in its column."""
    body = line.rstrip("\r\n")
    newline = line[len(body) :]
    match = re.search(r"\s[;#]", body)
    if match is None:
        return assignment + newline
    column = match.start() + 1
    padded = assignment.ljust(column) if len(assignment) < column else assignment + " "
    return padded + body[column:] + newline


def raft_address(raw: str) -> str:
    """Check a Raft `host:port` given at run time (POST /v1/nodes); ValueError says what is wrong."""
    host, port = _raft_host_port(raw)
    return f"{host}:{port}"
