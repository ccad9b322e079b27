"""Whether any live node may run a job: the check behind 422 `no_eligible_node` (API.md).

The API asks it on a create, a PUT and a manual trigger (`?force=true` skips it; a restore never
asks). It judges the job against the policies the nodes publish in the node table
(`records.NodePolicy`, sent in each node's REGISTER_NODE), never against this node's own config,
and never reaches out: no clock, no file, no DNS. Pure, so its table-driven tests are the spec.

The steps, in this order. Each keeps the nodes that pass it; the first that keeps none is the
refusal, with the job's `field` and the node setting that refuses it:

1. `route.tags`: the live nodes (up and not leaving the cluster) that carry every tag.
2. `run_tasks`: nodes that run tasks at all.
3. The task, against each node's fences (the executors apply the same fences at run time):
   - a shell string needs `allow_shell = true`;
   - an argv list: argv[0] under `command_allow` when it is a literal path, i.e. absolute, or
     relative with an absolute `cwd`. It is normalised as text (`..`, `//`): the executing node's
     symlinks cannot be followed from here, so the node publishes its directories both as
     configured and through `realpath`. A bare name is found along `PATH` on the executing node
     when the run starts, so it is not judged here (the node refuses it then if it must);
   - python: the callable's module under `python_allow`;
   - http: a literal IP host, and `localhost` (as 127.0.0.1 and ::1), against the node's address
     fence and `http_allow`. Host names are not resolved: they are judged when the run starts;
   - message: nodes that have the named `[broker]`.
4. Each secret referenced in `task.env` or `task.headers`: nodes that have a secret of that name.

Alert channels (`channel_refusal`, `channel_nodes`) are judged the same way, without the route
and `run_tasks` steps (delivering an alert is not running a task): a webhook's URL against
`http_allow` and its `signing_secret`; an e-mail's SMTP host against `http_allow` (the same
address fence guards it) and its `password_secret`; a message channel's broker.

Invariants: a field a node has not published (`None`) passes every step (old logs, older nodes);
a node table without any live node refuses nothing (a cluster starting: no node registered yet).
"""

from __future__ import annotations

import functools
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from yarl import URL

from .channels import ChannelSpec, ChannelType, smtp_address
from .executors._pycall import module_allowed
from .executors.http import literal_refusal, looks_like_ip
from .model import JobSpec, SecretRef, TaskSpec, TaskType
from .records import NodePolicy, NodeRecord

__all__ = ["Refusal", "channel_nodes", "channel_refusal", "eligible_nodes", "refusal"]

LOCALHOST = ("127.0.0.1", "::1")  # what `localhost` resolves to; either one allowed is enough


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """Why no live node may run a job: the job's field (dotted, API.md) and the reason."""

    field: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Step:
    field: str
    message: str
    allows: Callable[[NodePolicy], bool]


def refusal(spec: JobSpec, nodes: Iterable[NodeRecord]) -> Refusal | None:
    """None if some live node may run `spec`, else the first step no node passes (module doc)."""
    live = _live(nodes)
    return _judge(spec, live)[1] if live else None


def eligible_nodes(spec: JobSpec, nodes: Iterable[NodeRecord]) -> list[str]:
    """The ids of the live nodes that may run `spec`, by what they publish (a manual trigger
    routes among them)."""
    return [n.id for n in _judge(spec, _live(nodes))[0]]


def _live(nodes: Iterable[NodeRecord]) -> list[NodeRecord]:
    return [n for n in nodes if n.up and not n.leaving]


def _judge(spec: JobSpec, live: list[NodeRecord]) -> tuple[list[NodeRecord], Refusal | None]:
    """The nodes of `live` that pass every step; none, and the refusal, at the first that none passes."""
    tags = spec.route.tags
    matching = [n for n in live if all(n.tags.get(k) == v for k, v in tags.items())]
    if not matching:
        return [], Refusal(field="route.tags", message=f"no live node has {_pairs(tags)}")
    among = f" (among the live nodes with {_pairs(tags)})" if tags else ""
    for step in _steps(spec):
        matching = [n for n in matching if step.allows(n.policy)]
        if not matching:
            return [], Refusal(field=step.field, message=step.message + among)
    return matching, None


def channel_refusal(channel: ChannelSpec, nodes: Iterable[NodeRecord]) -> Refusal | None:
    """None if some live node may deliver to `channel`, else the first step none passes."""
    live = _live(nodes)
    return _channel_judge(channel, live)[1] if live else None


def channel_nodes(channel: ChannelSpec, nodes: Iterable[NodeRecord]) -> list[str]:
    """The ids of the live nodes that may deliver to `channel`, by what they publish."""
    return [n.id for n in _channel_judge(channel, _live(nodes))[0]]


def _channel_judge(channel: ChannelSpec, live: list[NodeRecord]) -> tuple[list[NodeRecord], Refusal | None]:
    matching = live
    for step in _channel_steps(channel):
        matching = [n for n in matching if step.allows(n.policy)]
        if not matching:
            return [], Refusal(field=step.field, message=step.message)
    return matching, None


def _channel_steps(channel: ChannelSpec) -> Iterator[_Step]:
    if channel.type is ChannelType.WEBHOOK:
        yield from _address_steps(channel.url or "", "url")
    elif channel.type is ChannelType.EMAIL:
        yield from _host_steps(smtp_address(channel.smtp or "")[0], "smtp")
    else:
        broker = channel.broker or ""
        yield _Step(
            field="broker",
            message=f"no live node has broker {broker!r}: [broker {broker}]",
            allows=lambda p: p.brokers is None or broker in p.brokers,
        )
    for field, name in (
        ("signing_secret", channel.signing_secret),
        ("password_secret", channel.password_secret),
    ):
        if name is not None:
            yield _Step(
                field=field,
                message=f"no node has the secret {name}: environment, secrets_file or [secrets]",
                allows=functools.partial(_has_secret, name),
            )


def _pairs(tags: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in tags.items())


def _steps(spec: JobSpec) -> Iterator[_Step]:
    yield _Step(
        field="route.tags" if spec.route.tags else "route",
        message="no live node runs tasks: run_tasks",
        allows=lambda p: p.run_tasks,
    )
    task = spec.task
    if task.type is TaskType.SHELL:
        yield from _shell_steps(task)
    elif task.type is TaskType.PYTHON:
        yield from _python_steps(task)
    elif task.type is TaskType.HTTP:
        yield from _http_steps(task)
    elif task.type is TaskType.MESSAGE:
        broker = task.broker or ""
        yield _Step(
            field="task.broker",
            message=f"no live node has broker {broker!r}: [broker {broker}]",
            allows=lambda p: p.brokers is None or broker in p.brokers,
        )
    yield from _secret_steps(task)


# ---------------------------------------------------------------- shell


def _shell_steps(task: TaskSpec) -> Iterator[_Step]:
    if isinstance(task.command, str):
        yield _Step(
            field="task.command",
            message="no node allows a shell string: allow_shell",
            allows=lambda p: p.allow_shell is not False,
        )
        return
    program = _literal_program(task.command[0] if task.command else "", task.cwd)
    if program is not None:
        yield _Step(
            field="task.command.0",
            message=f"no node allows {program}: command_allow",
            allows=functools.partial(_program_allowed, program),
        )


def _literal_program(argv0: str, cwd: str | None) -> str | None:
    """argv[0] as a normalised absolute path, when it names one without `PATH`; else None."""
    if argv0.startswith("/"):
        return posixpath.normpath(argv0)
    if "/" in argv0 and cwd is not None and cwd.startswith("/"):
        return posixpath.normpath(posixpath.join(cwd, argv0))
    return None


def _program_allowed(program: str, policy: NodePolicy) -> bool:
    allow = policy.command_allow
    if not allow:  # unknown, or empty: any program
        return True
    return any(program.startswith(d.rstrip("/") + "/") for d in allow)


# ---------------------------------------------------------------- python


def _python_steps(task: TaskSpec) -> Iterator[_Step]:
    module = (task.callable or "").partition(":")[0]
    yield _Step(
        field="task.callable",
        message=f"no node allows {module}: python_allow",
        allows=lambda p: p.python_allow is None or module_allowed(module, p.python_allow),
    )


# ---------------------------------------------------------------- http


def _http_steps(task: TaskSpec) -> Iterator[_Step]:
    yield from _address_steps(task.url or "", "task.url")


def _address_steps(url: str, field: str) -> Iterator[_Step]:
    try:
        host = URL(url).raw_host or ""
    except ValueError:
        return  # the executing node refuses it, with the reason, when the run starts
    yield from _host_steps(host, field)


def _host_steps(host: str, field: str) -> Iterator[_Step]:
    literals = _literal_hosts(host)
    if literals:
        yield _Step(
            field=field,
            message=f"no node allows {host}: http_allow",
            allows=functools.partial(_address_allowed, literals),
        )


def _literal_hosts(host: str) -> tuple[str, ...]:
    """The addresses a host stands for without DNS: `localhost`'s, or the host itself when it
    looks like an IP literal; () for a name (judged when it is resolved, at run time)."""
    if host.lower().rstrip(".") == "localhost":
        return LOCALHOST
    return (host,) if looks_like_ip(host) else ()


def _address_allowed(hosts: tuple[str, ...], policy: NodePolicy) -> bool:
    if policy.http_allow is None:
        return True
    networks = _networks(policy.http_allow)
    return any(literal_refusal(host, networks) is None for host in hosts)


@functools.lru_cache(maxsize=256)
def _networks(raw: tuple[str, ...]) -> tuple[IPv4Network | IPv6Network, ...]:
    """Published networks, parsed once; one a node could not have meant is left out."""
    out = []
    for text in raw:
        try:
            out.append(ip_network(text, strict=False))
        except ValueError:
            continue
    return tuple(out)


# ---------------------------------------------------------------- secrets


def _secret_steps(task: TaskSpec) -> Iterator[_Step]:
    seen: set[str] = set()
    for where, values in (("task.env", task.env), ("task.headers", task.headers)):
        for key, value in values.items():
            if isinstance(value, SecretRef) and value.name not in seen:
                seen.add(value.name)
                yield _Step(
                    field=f"{where}.{key}",
                    message=f"no node has the secret {value.name}: environment, secrets_file or [secrets]",
                    allows=functools.partial(_has_secret, value.name),
                )


def _has_secret(name: str, policy: NodePolicy) -> bool:
    return policy.secrets is None or name in policy.secrets
