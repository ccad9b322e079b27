"""Which jobs no live node may run (`eligibility.refusal`): one table, one row per rule."""

from __future__ import annotations

from typing import Any

import pytest

from raftsched.eligibility import Refusal, eligible_nodes, refusal
from raftsched.model import JobSpec
from raftsched.records import UNKNOWN_POLICY, NodePolicy, NodeRecord

STRICT = NodePolicy(
    allow_shell=False,
    command_allow=("/usr/bin",),
    python_allow=("myjobs.",),
    http_allow=("10.1.0.0/16",),
    secrets=("API_TOKEN",),
)
OPEN = NodePolicy(
    allow_shell=True, command_allow=(), python_allow=(), http_allow=("127.0.0.0/8",), secrets=()
)


def node(node_id: str, policy: NodePolicy = STRICT, **fields: Any) -> NodeRecord:
    return NodeRecord(id=node_id, http="", raft="", policy=policy, **fields)


def job(task: dict[str, Any], **fields: Any) -> JobSpec:
    return JobSpec.from_dict({"id": "j", "schedule": {"every": 60}, "task": task, **fields})


def shell(command: Any, **fields: Any) -> dict[str, Any]:
    return {"type": "shell", "command": command, **fields}


def http(url: str, **fields: Any) -> dict[str, Any]:
    return {"type": "http", "url": url, **fields}


def python(target: str) -> dict[str, Any]:
    return {"type": "python", "callable": target}


def refused(field: str, message: str) -> Refusal:
    return Refusal(field=field, message=message)


SHELL_REFUSED = refused("task.command", "no node allows a shell string: allow_shell")
LOOPBACK_REFUSED = refused("task.url", "no node allows 127.0.0.1: http_allow")

CASES = [
    # (why, nodes, job, expected refusal or None)
    ("argv under command_allow", [node("n1")], job(shell(["/usr/bin/python3", "x.py"])), None),
    (
        "argv outside command_allow",
        [node("n1")],
        job(shell(["/opt/tool"])),
        refused("task.command.0", "no node allows /opt/tool: command_allow"),
    ),
    (
        "argv normalised before the check: .. cannot lead out",
        [node("n1")],
        job(shell(["/usr/bin/../sbin/reboot"])),
        refused("task.command.0", "no node allows /usr/sbin/reboot: command_allow"),
    ),
    (
        "a relative argv[0] with an absolute cwd is a literal path",
        [node("n1")],
        job(shell(["./run.sh"], cwd="/srv/jobs")),
        refused("task.command.0", "no node allows /srv/jobs/run.sh: command_allow"),
    ),
    ("a bare name is resolved by PATH at run time: not judged", [node("n1")], job(shell(["tool"])), None),
    (
        "another node with an empty command_allow",
        [node("n1"), node("n2", OPEN)],
        job(shell(["/opt/t"])),
        None,
    ),
    ("a shell string, no node allows it", [node("n1"), node("n2")], job(shell("echo hi")), SHELL_REFUSED),
    ("a shell string, one node allows it", [node("n1"), node("n2", OPEN)], job(shell("echo hi")), None),
    (
        "a shell string, the node that allows it is down",
        [node("n1"), node("n2", OPEN, up=False)],
        job(shell("echo hi")),
        SHELL_REFUSED,
    ),
    (
        "a shell string, the node that allows it is leaving",
        [node("n1"), node("n2", OPEN, leaving=True)],
        job(shell("echo hi")),
        SHELL_REFUSED,
    ),
    ("draining (a restart) still counts as live", [node("n2", OPEN, draining=True)], job(shell("x y")), None),
    ("python under python_allow", [node("n1")], job(python("myjobs.report:run")), None),
    (
        "python outside python_allow",
        [node("n1")],
        job(python("os:system")),
        refused("task.callable", "no node allows os: python_allow"),
    ),
    (
        "an empty python_allow allows nothing",
        [node("n2", OPEN)],
        job(python("myjobs.report:run")),
        refused("task.callable", "no node allows myjobs.report: python_allow"),
    ),
    ("http to a public address", [node("n1")], job(http("https://93.184.215.14/x")), None),
    ("http to a host name: not resolved", [node("n1")], job(http("http://internal.example/x")), None),
    ("http to a loopback literal", [node("n1")], job(http("http://127.0.0.1:8080/")), LOOPBACK_REFUSED),
    (
        "http to loopback, one node's http_allow has it",
        [node("n1"), node("n2", OPEN)],
        job(http("http://127.0.0.1:8080/")),
        None,
    ),
    ("http to a private address inside http_allow", [node("n1")], job(http("http://10.1.2.3/")), None),
    (
        "http to a private address outside it",
        [node("n1")],
        job(http("http://10.2.0.1/")),
        refused("task.url", "no node allows 10.2.0.1: http_allow"),
    ),
    (
        "localhost is loopback",
        [node("n1")],
        job(http("http://LocalHost:80/")),
        refused("task.url", "no node allows localhost: http_allow"),
    ),
    ("localhost with 127.0.0.0/8 allowed", [node("n2", OPEN)], job(http("http://localhost/")), None),
    (
        "IPv6 loopback",
        [node("n1")],
        job(http("http://[::1]:80/")),
        refused("task.url", "no node allows ::1: http_allow"),
    ),
    (
        "a v4-mapped v6 address is its v4",
        [node("n1")],
        job(http("http://[::ffff:127.0.0.1]/")),
        refused("task.url", "no node allows ::ffff:7f00:1: http_allow"),
    ),
    (
        "a secret a node has",
        [node("n1")],
        job(shell(["/usr/bin/env"], env={"T": {"secret": "API_TOKEN"}})),
        None,
    ),
    (
        "a secret no node has",
        [node("n1")],
        job(http("https://93.184.215.14/", headers={"Authorization": {"secret": "OTHER"}})),
        refused(
            "task.headers.Authorization",
            "no node has the secret OTHER: environment, secrets_file or [secrets]",
        ),
    ),
    (
        "route tags no live node has",
        [node("n1", tags={"zone": "a"})],
        job(shell(["true"]), route={"tags": {"zone": "x"}}),
        refused("route.tags", "no live node has zone=x"),
    ),
    (
        "the node with the tag cannot run it, one without could",
        [node("n1", tags={"zone": "a"}), node("n2", OPEN)],
        job(shell("echo"), route={"tags": {"zone": "a"}}),
        refused(
            "task.command", "no node allows a shell string: allow_shell (among the live nodes with zone=a)"
        ),
    ),
    (
        "run_tasks false everywhere",
        [node("n1", NodePolicy(run_tasks=False))],
        job(shell(["true"])),
        refused("route", "no live node runs tasks: run_tasks"),
    ),
    (
        "every step on one node: no node passes them all",
        [node("n1", NodePolicy(allow_shell=True, secrets=())), node("n2", OPEN)],
        job(shell("echo", env={"T": {"secret": "API_TOKEN"}})),
        refused("task.env.T", "no node has the secret API_TOKEN: environment, secrets_file or [secrets]"),
    ),
    (
        "broadcast needs one node only",
        [node("n1"), node("n2", OPEN)],
        job(shell("echo"), route={"strategy": "broadcast"}),
        None,
    ),
    (
        "an unknown policy (an old log) accepts everything",
        [node("n1", UNKNOWN_POLICY)],
        job(shell("rm -rf /tmp/x", env={"S": {"secret": "NOPE"}})),
        None,
    ),
    ("no live node at all: nothing to judge by", [node("n1", up=False)], job(shell("echo")), None),
    ("an empty table: a cluster starting", [], job(shell("echo")), None),
]


@pytest.mark.parametrize(("why", "nodes", "spec", "expected"), CASES, ids=[c[0] for c in CASES])
def test_refusal(why: str, nodes: list[NodeRecord], spec: JobSpec, expected: Refusal | None) -> None:
    assert refusal(spec, nodes) == expected


def test_eligible_nodes_are_those_that_pass_every_step() -> None:
    nodes = [node("n1"), node("n2", OPEN), node("n3", OPEN, up=False), node("n4", UNKNOWN_POLICY)]
    assert eligible_nodes(job(shell("echo")), nodes) == ["n2", "n4"]
    assert eligible_nodes(job(shell(["/usr/bin/true"])), nodes) == ["n1", "n2", "n4"]
    assert eligible_nodes(job(shell("echo"), route={"tags": {"zone": "a"}}), nodes) == []


def test_a_policy_survives_the_wire_and_snapshots() -> None:
    record = node("n1", tags={"zone": "a"})
    assert NodePolicy.from_dict(STRICT.to_dict()) == STRICT
    assert NodeRecord.from_dict(record.to_dict()) == record
    assert "policy" not in node("n1", UNKNOWN_POLICY).to_dict()  # old snapshots keep their bytes


@pytest.mark.parametrize(
    "raw",
    [None, "x", {"allow_shell": "yes", "command_allow": "/usr/bin", "secrets": [1], "run_tasks": 0}],
)
def test_a_malformed_policy_is_unknown_never_an_error(raw: object) -> None:
    assert NodePolicy.from_dict(raw) == UNKNOWN_POLICY


def test_a_node_publishes_its_fences_and_secret_names_never_values(tmp_path: Any) -> None:
    from ipaddress import ip_network

    from raftsched.executors import ExecPolicy
    from raftsched.node import published_policy
    from raftsched.secretstore import SecretStore

    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    policy = ExecPolicy(
        allow_shell=True,
        command_allow=(str(tmp_path / "link"),),
        python_allow=("myjobs.",),
        http_allow=(ip_network("127.0.0.0/8"),),
        secrets=SecretStore.build(section_values={"TOKEN": "v4lue"}),
    )
    published = published_policy(policy)
    assert published == NodePolicy(
        allow_shell=True,
        command_allow=tuple(sorted((str(tmp_path / "link"), str(real)))),
        python_allow=("myjobs.",),
        http_allow=("127.0.0.0/8",),
        secrets=("TOKEN",),
        brokers=(),
    )
    assert "v4lue" not in repr(published.to_dict())
