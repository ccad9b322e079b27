"""The cluster .ini contract: happy paths, overrides, the single-node default, and one test per
class of error, each checking that the error names its section and key on one line."""

from __future__ import annotations

import configparser
import dataclasses
import ipaddress
import os
import re
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

import pytest

from raftsched import config, credentials
from raftsched.config import ClusterConfig, NodeConfig, Overrides
from raftsched.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "cluster.example.ini"
SECRET = "g6GvifczsNP8dapA0UHofIaXqHWLT-LJoRLkHm4XsNA"  # as `raftsched secret` prints one
TOKEN = "1jp_j5rv1RfASgL6McfX7R3rXIJDpkUX6O3VWkWclVc"
assert len(SECRET) >= config.MIN_SECRET_CHARS

Keys = Mapping[str, str | None]  # None drops the key


def ini(cluster: Keys | None = None, nodes: Mapping[str, Keys] | None = None, extra: str = "") -> str:
    """A valid 3-node loopback file, with `cluster` keys merged in (a None value drops the key)."""
    keys = {"name": "t", "secret": SECRET, **(cluster or {})}
    if nodes is None:
        nodes = {f"n{i}": {} for i in (1, 2, 3)}
    lines = ["[cluster]", *(f"{k} = {v}" for k, v in keys.items() if v is not None)]
    for index, (node_id, changes) in enumerate(nodes.items(), start=1):
        node = {"raft": f"127.0.0.1:{7100 + index}", "http": f"127.0.0.1:{8100 + index}", **changes}
        lines += ["", f"[node {node_id}]", *(f"{k} = {v}" for k, v in node.items() if v is not None)]
    return "\n".join(lines) + "\n" + extra


def write(tmp_path: Path, text: str, name: str = "cluster.ini") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def load_text(
    tmp_path: Path, text: str, node_id: str | None = "n1", overrides: Overrides | None = None
) -> tuple[ClusterConfig, NodeConfig]:
    return config.load(write(tmp_path, text), node_id, overrides)


def config_error(
    tmp_path: Path, text: str, node_id: str | None = "n1", overrides: Overrides | None = None
) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, node_id, overrides)
    assert_one_line(info.value)
    return info.value


def assert_one_line(err: ConfigError) -> None:
    text = str(err)
    assert "\n" not in text and "\r" not in text, text
    assert text.startswith(f"[{err.section}]")


@pytest.fixture
def example(tmp_path: Path) -> Path:
    out = tmp_path / "local" / "cluster.ini"
    config.write_local_cluster(EXAMPLE, out, SECRET)
    return out


# ---------------------------------------------------------------- the example file


def test_example_loads_for_every_node(example: Path) -> None:
    for node_id, zone, port in (("n1", "a", 1), ("n2", "b", 2), ("n3", "c", 3)):
        cluster, node = config.load(example, node_id)
        assert node.id == node_id and cluster.nodes[node_id] == node
        assert node.raft_addr == f"127.0.0.1:710{port}"
        assert node.http_url == f"http://127.0.0.1:810{port}"
        assert node.tags == {"zone": zone}
    assert cluster.name == "demo"
    assert cluster.secret == SECRET
    assert cluster.api_token is None
    assert cluster.members == ("n1", "n2", "n3")
    assert cluster.data_dir == example.parent / "data"
    assert cluster.node_data_dir("n2") == example.parent / "data" / "n2"


def test_example_values_are_the_defaults(example: Path) -> None:
    cluster, node = config.load(example, "n1")
    for f in dataclasses.fields(ClusterConfig):
        if f.default is not dataclasses.MISSING:
            assert getattr(cluster, f.name) == f.default, f.name
    for f in dataclasses.fields(NodeConfig):
        if f.default is not dataclasses.MISSING:
            assert getattr(node, f.name) == f.default, f.name


def _example_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    parser.read(EXAMPLE, encoding="utf-8")
    return parser


def test_example_has_every_key_and_no_other() -> None:
    parser = _example_sections()
    assert set(parser["cluster"]) == set(config.CLUSTER_KEYS)
    assert set(parser["node n1"]) == set(config.NODE_KEYS)
    for name in ("node n2", "node n3"):
        assert set(parser[name]) <= set(config.NODE_KEYS)


def test_example_comments_every_key() -> None:
    """A key's first line carries a comment, or follows a comment line (a documented pair: tls)."""
    previous, seen = "", set()
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.match(r"(\w+)\s*=", line)
        if match and match[1] not in seen:
            documented = re.search(r"\s[;#]", line) or previous.lstrip().startswith((";", "#"))
            assert documented, f"{match[1]} has no comment"
            seen.add(match[1])
        previous = line
    assert seen == {*config.CLUSTER_KEYS, *config.NODE_KEYS}


def test_example_explains_fsync_cost_and_secret() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    fsync = text[text.index("fsync =") :].split("\n\n")[0]
    assert "power loss" in fsync and "measured" in fsync
    assert "raftsched secret" in text and "Root-equivalent" in text
    assert re.search(r"^secret =\s+;", text, re.MULTILINE), "the example leaves the secret empty"


def test_example_without_secret_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, EXAMPLE.read_text(encoding="utf-8"))
    assert (err.section, err.key) == ("cluster", "secret")


# ---------------------------------------------------------------- write_local_cluster


def test_write_local_cluster_fills_only_the_secret(tmp_path: Path) -> None:
    out = tmp_path / "c.ini"
    config.write_local_cluster(EXAMPLE, out, SECRET)
    before = EXAMPLE.read_text(encoding="utf-8").splitlines()
    after = out.read_text(encoding="utf-8").splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 1
    old, new = changed[0]
    assert new.startswith(f"secret = {SECRET} ;")
    assert old.split(";", 1)[1] == new.split(";", 1)[1], "the inline comment is kept"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_write_local_cluster_overwrites_and_refuses_a_weak_secret(tmp_path: Path) -> None:
    out = tmp_path / "c.ini"
    config.write_local_cluster(EXAMPLE, out, SECRET)
    config.write_local_cluster(EXAMPLE, out, SECRET[::-1])
    assert config.load(out, "n1")[0].secret == SECRET[::-1]
    with pytest.raises(ConfigError) as info:
        config.write_local_cluster(EXAMPLE, tmp_path / "d.ini", "short")
    assert (info.value.section, info.value.key) == ("cluster", "secret")
    assert not (tmp_path / "d.ini").exists()


def test_write_local_cluster_fills_a_token_when_given(tmp_path: Path) -> None:
    out = tmp_path / "c.ini"
    token = config.new_secret()
    config.write_local_cluster(EXAMPLE, out, SECRET, api_token=token)
    cluster, _ = config.load(out, "n1")
    assert (cluster.secret, cluster.api_token) == (SECRET, token)
    with pytest.raises(ConfigError) as info:
        config.write_local_cluster(EXAMPLE, tmp_path / "d.ini", SECRET, api_token="x")
    assert (info.value.section, info.value.key) == ("cluster", "api_token")


def test_write_local_cluster_needs_a_secret_line(tmp_path: Path) -> None:
    src = write(tmp_path, "[cluster]\nname = x\n[node n1]\nsecret = 1\n", "src.ini")
    with pytest.raises(ConfigError) as info:
        config.write_local_cluster(src, tmp_path / "out.ini", SECRET)
    assert info.value.key == "secret"


def test_write_local_cluster_sets_node_keys_in_place_or_after_the_last_key(tmp_path: Path) -> None:
    out = tmp_path / "c.ini"
    opened = {"allow_shell": "true", "python_allow": "examples", "http_allow": "127.0.0.0/8"}
    settings = {f"node {n}": opened for n in ("n1", "n2", "n3")}
    settings["node n3"] = {**opened, "http": "127.0.0.1:18103"}
    config.write_local_cluster(EXAMPLE, out, SECRET, settings=settings)
    for node_id in ("n1", "n2", "n3"):
        _, node = config.load(out, node_id)
        assert node.allow_shell and node.python_allow == ("examples",), node_id
        assert [str(net) for net in node.http_allow] == ["127.0.0.0/8"]
    assert config.load(out, "n3")[1].http_port == 18103
    text = out.read_text(encoding="utf-8")
    assert re.search(r"^allow_shell = true +; node-local: may this node", text, re.MULTILINE)
    n2 = text[text.index("[node n2]") : text.index("[node n3]")].splitlines()
    assert n2[n2.index("tags = zone=b") + 1 :][:3] == [f"{k} = {v}" for k, v in opened.items()]
    assert len(re.findall(r"^allow_shell = ", text, re.MULTILINE)) == 3
    with pytest.raises(ConfigError) as info:
        config.write_local_cluster(EXAMPLE, out, SECRET, settings={"node n9": {"capacity": "2"}})
    assert info.value.section == "node n9"


def test_write_local_cluster_adds_after_a_last_line_without_newline(tmp_path: Path) -> None:
    src = write(tmp_path, "[cluster]\nsecret =\n[node n1]\nraft = 127.0.0.1:7101", "src.ini")
    out = tmp_path / "out.ini"
    config.write_local_cluster(src, out, SECRET, settings={"node n1": {"http": "127.0.0.1:8101"}})
    assert out.read_text(encoding="utf-8").endswith("raft = 127.0.0.1:7101\nhttp = 127.0.0.1:8101\n")


def test_new_secret_is_long_and_fresh() -> None:
    one, two = config.new_secret(), config.new_secret()
    assert len(one) >= 43 and one != two
    assert re.fullmatch(r"[A-Za-z0-9_-]+", one)


# ---------------------------------------------------------------- parsing details


def test_inline_and_full_line_comments(tmp_path: Path) -> None:
    text = ini(
        {"lookahead_s": "7   ; seven seconds", "fsync": "yes # durable"},
        {"n1": {"tags": "zone=a,disk=ssd ; where it runs"}},
        extra="; a trailing comment\n# another\n",
    )
    text = text.replace("[cluster]\n", "[cluster]\n; a comment\n  ; an indented comment line\n")
    cluster, node = load_text(tmp_path, text)
    assert cluster.lookahead_s == 7.0
    assert cluster.fsync is True
    assert node.tags == {"zone": "a", "disk": "ssd"}


def test_comment_continuation_lines_are_not_values(tmp_path: Path) -> None:
    text = ini({"api_token": f"{TOKEN} ; the token\n                ; more about the token"})
    assert load_text(tmp_path, text)[0].api_token == TOKEN


def test_node_values_parse(tmp_path: Path) -> None:
    node_keys = {
        "capacity": "3",
        "shutdown_grace_s": "2.5",
        "allow_shell": "true",
        "command_allow": "/opt/jobs/bin, /usr/local/jobs/../bin",
        "run_as": "nobody",
        "python_allow": "myjobs., reports.tasks",
        "http_allow": "127.0.0.0/8, ::1/128",
        "output_max_bytes": "0",
    }
    _, node = load_text(tmp_path, ini(nodes={"n1": node_keys}))
    assert node.capacity == 3 and node.shutdown_grace_s == 2.5 and node.allow_shell is True
    assert node.output_max_bytes == 0
    assert node.command_allow == ("/opt/jobs/bin", "/usr/local/bin") and node.run_as == "nobody"
    assert node.python_allow == ("myjobs.", "reports.tasks")
    assert node.http_allow == (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_ipv6_and_localhost_addresses(tmp_path: Path) -> None:
    nodes = {"a": {"raft": "[::1]:7101", "http": "[::1]:8101"}, "b": {"http": "localhost:8102"}}
    cluster, node = load_text(tmp_path, ini(nodes=nodes), "a")
    assert node.raft_addr == "::1:7101", "PySyncObj splits on the last colon"
    assert node.http_url == "http://[::1]:8101"
    assert cluster.nodes["b"].http_url == "http://localhost:8102"


def test_single_node_file_needs_no_node_id(tmp_path: Path) -> None:
    cluster, node = load_text(tmp_path, ini(nodes={"solo": {}}), None)
    assert node.id == "solo" and cluster.members == ("solo",)


def test_records_are_frozen_and_hide_the_secret(example: Path) -> None:
    cluster, node = config.load(example, "n1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        node.capacity = 1  # type: ignore[misc]
    assert SECRET not in repr(cluster)


# ---------------------------------------------------------------- members


def test_members_default_to_every_node_in_file_order(tmp_path: Path) -> None:
    cluster, _ = load_text(tmp_path, ini(nodes={"n3": {}, "n1": {}, "n2": {}}))
    assert cluster.members == ("n3", "n1", "n2")


def test_members_empty_value_means_default(tmp_path: Path) -> None:
    assert load_text(tmp_path, ini({"members": ""}))[0].members == ("n1", "n2", "n3")


def test_members_explicit_subset(tmp_path: Path) -> None:
    cluster, node = load_text(tmp_path, ini({"members": "n2, n1"}), "n3")
    assert cluster.members == ("n2", "n1")
    assert node.id == "n3" and set(cluster.nodes) == {"n1", "n2", "n3"}


# ---------------------------------------------------------------- data_dir


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, ini({"data_dir": "../state"}), "etc/cluster.ini")
    cluster, _ = config.load(Path("etc/cluster.ini"), "n1")
    assert cluster.data_dir == tmp_path / "state"
    assert cluster.node_data_dir("n1") == tmp_path / "state" / "n1"
    assert path.exists()


def test_default_and_absolute_data_dir(tmp_path: Path) -> None:
    assert load_text(tmp_path, ini())[0].data_dir == tmp_path / "data"
    absolute = tmp_path / "elsewhere"
    assert load_text(tmp_path, ini({"data_dir": str(absolute)}))[0].data_dir == absolute


# ---------------------------------------------------------------- overrides


def test_overrides_replace_the_chosen_node_and_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = Overrides(data_dir=Path("flagdir"), http="127.0.0.1:9002", raft="127.0.0.1:9102")
    cluster, node = load_text(tmp_path, ini(), "n2", overrides)
    assert (node.http_port, node.raft_addr) == (9002, "127.0.0.1:9102")
    assert cluster.nodes["n2"] == node
    assert cluster.nodes["n1"].http_port == 8101
    assert cluster.data_dir == tmp_path / "flagdir"
    assert cluster.node_data_dir("n2") == tmp_path / "flagdir" / "n2"


def test_bad_override_names_the_flag(tmp_path: Path) -> None:
    err = config_error(tmp_path, ini(), overrides=Overrides(http="127.0.0.1:http"))
    assert (err.section, err.key) == ("command line", "--http")
    err = config_error(tmp_path, ini(), overrides=Overrides(raft="0.0.0.0:7101"))
    assert (err.section, err.key) == ("command line", "--raft")


def test_override_is_checked_like_the_file(tmp_path: Path) -> None:
    err = config_error(tmp_path, ini(), overrides=Overrides(http="127.0.0.1:8102"))
    assert (err.section, err.key) == ("node n2", "http")
    err = config_error(tmp_path, ini(), overrides=Overrides(http="0.0.0.0:8101"))
    assert (err.section, err.key) == ("cluster", "api_token")


# ---------------------------------------------------------------- api_token and TLS


def test_non_loopback_http_without_token_is_refused(tmp_path: Path) -> None:
    err = config_error(tmp_path, ini(nodes={"n1": {}, "n2": {"http": "0.0.0.0:8102"}}))
    assert (err.section, err.key) == ("cluster", "api_token")
    assert "n2" in str(err)


def test_non_loopback_http_with_token_is_accepted(tmp_path: Path) -> None:
    text = ini({"api_token": TOKEN}, {"n1": {"http": "10.1.2.3:8101"}})
    cluster, node = load_text(tmp_path, text)
    assert cluster.api_token == TOKEN
    assert node.http_url == "http://10.1.2.3:8101"


def test_loopback_forms_need_no_token(tmp_path: Path) -> None:
    nodes = {"a": {"http": "127.8.9.10:8101"}, "b": {"http": "[::1]:8102"}, "c": {"http": "localhost:8103"}}
    load_text(tmp_path, ini(nodes=nodes), "a")


def test_tls_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("c")
    (tmp_path / "key.pem").write_text("k")
    text = ini(nodes={"n1": {"tls_cert": "cert.pem", "tls_key": "key.pem"}, "n2": {}})
    _, node = load_text(tmp_path, text)
    assert (node.tls_cert, node.tls_key) == (tmp_path / "cert.pem", tmp_path / "key.pem")
    assert node.http_url == "https://127.0.0.1:8101"


def test_tls_files_of_other_nodes_are_not_checked(tmp_path: Path) -> None:
    text = ini(nodes={"n1": {}, "n2": {"tls_cert": "/nowhere/c.pem", "tls_key": "/nowhere/k.pem"}})
    assert load_text(tmp_path, text)[0].nodes["n2"].http_url.startswith("https://")


@pytest.mark.parametrize(
    ("keys", "bad_key"),
    [
        ({"tls_cert": "cert.pem"}, "tls_key"),
        ({"tls_key": "key.pem", "tls_cert": ""}, "tls_cert"),
        ({"tls_cert": "missing.pem", "tls_key": "key.pem"}, "tls_cert"),
        ({"tls_cert": "cert.pem", "tls_key": "missing.pem"}, "tls_key"),
    ],
)
def test_tls_errors(tmp_path: Path, keys: Keys, bad_key: str) -> None:
    (tmp_path / "cert.pem").write_text("c")
    (tmp_path / "key.pem").write_text("k")
    err = config_error(tmp_path, ini(nodes={"n1": keys}))
    assert (err.section, err.key) == ("node n1", bad_key)


# ---------------------------------------------------------------- errors, one class at a time


@pytest.mark.parametrize(
    ("cluster", "nodes", "section", "key", "says"),
    [
        # unknown keys
        ({"lookahed_s": "3"}, None, "cluster", "lookahed_s", "did you mean 'lookahead_s'"),
        ({"Secret": SECRET}, None, "cluster", "Secret", "unknown key"),
        (None, {"n1": {"colour": "red"}}, "node n1", "colour", "unknown key"),
        # numbers
        ({"lookahead_s": "soon"}, None, "cluster", "lookahead_s", "number"),
        ({"lookahead_s": "-1"}, None, "cluster", "lookahead_s", "at least 0"),
        ({"node_timeout_s": "0"}, None, "cluster", "node_timeout_s", "greater than 0"),
        ({"node_timeout_s": "nan"}, None, "cluster", "node_timeout_s", "greater than 0"),
        ({"history_per_job": "1.5"}, None, "cluster", "history_per_job", "whole number"),
        ({"output_tail_bytes": "-4"}, None, "cluster", "output_tail_bytes", "at least 0"),
        ({"max_body_bytes": "0"}, None, "cluster", "max_body_bytes", "at least 1"),
        ({"log_compaction_min_entries": "1"}, None, "cluster", "log_compaction_min_entries", "at least 2"),
        (None, {"n1": {"capacity": "0"}}, "node n1", "capacity", "at least 1"),
        (None, {"n1": {"shutdown_grace_s": "-5"}}, "node n1", "shutdown_grace_s", "at least 0"),
        # booleans
        ({"fsync": "maybe"}, None, "cluster", "fsync", "true or false"),
        (None, {"n1": {"allow_shell": "2"}}, "node n1", "allow_shell", "true or false"),
        # addresses
        (None, {"n1": {"http": "127.0.0.1:70000"}}, "node n1", "http", "1-65535"),
        (None, {"n1": {"http": "127.0.0.1:0"}}, "node n1", "http", "1-65535"),
        (None, {"n1": {"raft": "127.0.0.1"}}, "node n1", "raft", "host:port"),
        (None, {"n1": {"raft": "127.0.0.1:port"}}, "node n1", "raft", "1-65535"),
        (None, {"n1": {"raft": "localhost"}}, "node n1", "raft", "host:port"),
        (None, {"n1": {"raft": ":7101"}}, "node n1", "raft", "host:port"),
        (None, {"n1": {"raft": "[::1]"}}, "node n1", "raft", "host:port"),
        (None, {"n1": {"raft": "::1:7101"}}, "node n1", "raft", "brackets"),
        (None, {"n1": {"raft": "999.1.1.1:7101"}}, "node n1", "raft", "not an IP address or host name"),
        (None, {"n1": {"http": "bad_host!:8101"}}, "node n1", "http", "not an IP address or host name"),
        (None, {"n1": {"raft": "0.0.0.0:7101"}}, "node n1", "raft", "wildcard"),
        (None, {"n1": {"raft": None}}, "node n1", "raft", "required"),
        (None, {"n1": {"http": None}}, "node n1", "http", "required"),
        # tags, module prefixes, networks
        (None, {"n1": {"tags": "zone"}}, "node n1", "tags", "key=value"),
        (None, {"n1": {"tags": "zone=a,,disk=ssd"}}, "node n1", "tags", "empty item"),
        (None, {"n1": {"tags": "=a"}}, "node n1", "tags", "key=value"),
        (None, {"n1": {"tags": "zone=a b"}}, "node n1", "tags", "key=value"),
        (None, {"n1": {"tags": "zone=a,zone=b"}}, "node n1", "tags", "twice"),
        (None, {"n1": {"python_allow": "my-jobs."}}, "node n1", "python_allow", "module prefix"),
        (None, {"n1": {"http_allow": "10.0.0.0/33"}}, "node n1", "http_allow", "network"),
        (None, {"n1": {"http_allow": "10.0.0.1/8"}}, "node n1", "http_allow", "host bits"),
        (None, {"n1": {"http_allow": "banana"}}, "node n1", "http_allow", "network"),
        (None, {"n1": {"output_max_bytes": "-1"}}, "node n1", "output_max_bytes", "at least 0"),
        (None, {"n1": {"output_max_bytes": "10M"}}, "node n1", "output_max_bytes", "whole number"),
        (None, {"n1": {"command_allow": "bin,/usr/bin"}}, "node n1", "command_allow", "absolute"),
        (None, {"n1": {"command_allow": "/bin,,/usr/bin"}}, "node n1", "command_allow", "empty item"),
        (None, {"n1": {"run_as": "no body"}}, "node n1", "run_as", "user name"),
        # cluster strings
        ({"name": "my cluster"}, None, "cluster", "name", "must match"),
        ({"data_dir": ""}, None, "cluster", "data_dir", "empty"),
        ({"api_token": "two words"}, None, "cluster", "api_token", "whitespace"),
        ({"members": "n1,n9"}, None, "cluster", "members", "n9"),
        ({"members": "n1,n1"}, None, "cluster", "members", "twice"),
        ({"members": "n1,bad id"}, None, "cluster", "members", "must match"),
        # duplicate listeners
        (None, {"n1": {}, "n2": {"raft": "127.0.0.1:7101"}}, "node n2", "raft", "[node n1] raft"),
        (None, {"n1": {}, "n2": {"http": "127.0.0.1:8101"}}, "node n2", "http", "[node n1] http"),
        (None, {"n1": {}, "n2": {"raft": "127.0.0.1:8101"}}, "node n2", "raft", "[node n1] http"),
    ],
)
def test_bad_values_name_section_and_key(
    tmp_path: Path,
    cluster: Keys | None,
    nodes: Mapping[str, Keys] | None,
    section: str,
    key: str,
    says: str,
) -> None:
    err = config_error(tmp_path, ini(cluster, nodes))
    assert (err.section, err.key) == (section, key)
    assert says in str(err)


@pytest.mark.parametrize(
    ("secret", "says"),
    [(None, "required"), ("", "required"), ("tooshort-31-characters-long-xxxx"[:31], "too short")],
)
def test_secret_is_mandatory_and_long(tmp_path: Path, secret: str | None, says: str) -> None:
    err = config_error(tmp_path, ini({"secret": secret}))
    assert (err.section, err.key) == ("cluster", "secret")
    assert says in str(err) and "raftsched secret" in str(err)
    assert not secret or secret not in str(err), "the secret is never echoed"


WEAK = [
    pytest.param("a" * 32, "repeats a shorter string", id="one-character"),
    pytest.param("abc" * 11, "repeats a shorter string", id="abcabc"),
    pytest.param("0123456789" * 4, "repeats a shorter string", id="digits-repeated"),
    pytest.param("abcdefghijklmnopqrstuvwxyz012345", "estimated", id="a-run"),
    pytest.param("x" * 20 + "Q9_-k2LmN4pR7sT0vW3z", "estimated", id="mostly-one-character"),
    pytest.param("test-secret-" + "x" * 40, "estimated", id="padded"),
    pytest.param("correct-horse-battery-staple-2026", "estimated", id="words"),
    pytest.param("0123456789abcdef0123456789abcdef"[::-1][:31], "too short", id="short"),
    pytest.param("x", "too short", id="one"),
]


@pytest.mark.parametrize("key", ["secret", "api_token"])
@pytest.mark.parametrize(("value", "says"), WEAK)
def test_weak_credentials_are_refused_and_never_echoed(
    tmp_path: Path, key: str, value: str, says: str
) -> None:
    err = config_error(tmp_path, ini({key: value}))
    assert (err.section, err.key) == ("cluster", key)
    assert says in str(err) and "raftsched secret" in str(err)
    assert value not in str(err) and value[:8] not in str(err), "the value is never echoed"


def test_what_raftsched_secret_makes_always_passes() -> None:
    for _ in range(2000):
        assert credentials.weakness(config.new_secret()) is None
    assert credentials.weakness(secrets.token_hex(32)) is None  # 64 hexadecimal digits
    assert credentials.estimated_bits(config.new_secret()) > 150


def test_the_credential_rule_is_the_documented_one() -> None:
    assert credentials.weakness("Zq" + "a" * 30) is not None  # 32 characters, one of them 31 times
    assert credentials.estimated_bits("ab" * 16) == pytest.approx(32, abs=0.1)  # 1 bit a character
    assert credentials.estimated_bits("0123456789" * 4) < 20  # 10 characters, but 2 steps
    assert credentials.weakness(SECRET) is None and credentials.weakness(TOKEN) is None


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"auto_tick_period_s": "0.05", "append_entries_period_s": "0.02"}, "auto_tick_period_s"),
        ({"append_entries_period_s": "0.3", "auto_tick_period_s": "0.01"}, "append_entries_period_s"),
        ({"append_entries_period_s": "0.05", "heartbeat_period_s": "0.04"}, "append_entries_period_s"),
        ({"heartbeat_period_s": "0.2"}, "heartbeat_period_s"),
        (
            {"heartbeat_period_s": "0.4", "raft_min_timeout_s": "2", "raft_max_timeout_s": "3"},
            "leader_fallback_timeout_s",
        ),
        ({"leader_fallback_timeout_s": "1.0"}, "leader_fallback_timeout_s"),
        ({"leader_fallback_timeout_s": "0.01"}, "leader_fallback_timeout_s"),
        ({"raft_max_timeout_s": "0.4"}, "raft_max_timeout_s"),
        ({"connection_timeout_s": "1.1"}, "connection_timeout_s"),
    ],
)
def test_raft_timers_are_checked(tmp_path: Path, changes: Keys, key: str) -> None:
    err = config_error(tmp_path, ini(changes))
    assert (err.section, err.key) == ("cluster", key)


def test_raft_timers_at_their_limits_pass(tmp_path: Path) -> None:
    limits = {
        "auto_tick_period_s": "0.05",
        "append_entries_period_s": "0.05",
        "heartbeat_period_s": "0.05",
        "leader_fallback_timeout_s": "0.4",
        "connection_timeout_s": "1.2",
    }
    assert load_text(tmp_path, ini(limits))[0].connection_timeout_s == 1.2


def test_max_raft_frame_bytes_defaults_to_64_mib_or_what_max_body_bytes_needs(tmp_path: Path) -> None:
    assert load_text(tmp_path, ini())[0].max_raft_frame_bytes == 64 << 20
    big = load_text(tmp_path, ini({"max_body_bytes": str(16 << 20)}))[0]
    assert big.max_raft_frame_bytes == config.raft_frame_bytes_needed(16 << 20) > 64 << 20


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"max_raft_frame_bytes": str(10 << 20)}, "need 11287560"),  # under 10.7 x the 1 MiB default
        ({"max_body_bytes": str(100 << 20), "max_raft_frame_bytes": str(2 << 30)}, "over 2147483647"),
    ],
)
def test_max_raft_frame_bytes_must_carry_the_largest_write(tmp_path: Path, changes: Keys, words: str) -> None:
    err = config_error(tmp_path, ini(changes))
    assert (err.section, err.key) == ("cluster", "max_raft_frame_bytes") and words in str(err)


def test_max_raft_frame_bytes_at_its_bound_passes(tmp_path: Path) -> None:
    needed = str(config.raft_frame_bytes_needed(1 << 20))
    assert load_text(tmp_path, ini({"max_raft_frame_bytes": needed}))[0].max_raft_frame_bytes == int(needed)


@pytest.mark.parametrize(
    ("text", "section", "key"),
    [
        (ini(extra="[clusterz]\nx = 1\n"), "clusterz", None),
        (ini(extra="[DEFAULT]\ncapacity = 1\n"), "DEFAULT", None),
        (ini(extra="[node]\nraft = 127.0.0.1:7109\n"), "node", None),
        (ini(extra="[node -bad]\nraft = 127.0.0.1:7109\n"), "node -bad", None),
        (ini(extra="[node n1]\nraft = 127.0.0.1:7109\n"), "node n1", None),
        (ini(extra="[node  n1]\nraft = 127.0.0.1:7109\n"), "node n1", None),
        (ini().replace("[node n1]\n", "[node n1]\nraft = 127.0.0.1:7109\n"), "node n1", "raft"),
        ("[node n1]\nraft = 127.0.0.1:7101\nhttp = 127.0.0.1:8101\n", "cluster", None),
        (f"[cluster]\nsecret = {SECRET}\n", "node", None),
        (ini(nodes={"n1": {"tags": "zone=a\n  disk=ssd"}}), "node n1", "tags"),
    ],
)
def test_bad_sections_name_the_section(tmp_path: Path, text: str, section: str, key: str | None) -> None:
    err = config_error(tmp_path, text)
    assert (err.section, err.key) == (section, key)


def test_unreadable_or_malformed_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.ini"
    with pytest.raises(ConfigError) as info:
        config.load(missing, "n1")
    assert info.value.section == str(missing) and info.value.key is None
    assert_one_line(info.value)
    for text in ("name = x\n[cluster]\n", "[cluster]\njust words\n"):
        err = config_error(tmp_path, text)
        assert err.section == str(tmp_path / "cluster.ini") and "line" in str(err)


def test_choosing_the_node(tmp_path: Path) -> None:
    err = config_error(tmp_path, ini(), None)
    assert (err.section, err.key) == ("node", None)
    assert "n1, n2, n3" in str(err) and "--node" in str(err)
    err = config_error(tmp_path, ini(), "n9")
    assert (err.section, err.key) == ("node", None)
    assert "n9" in str(err) and "n1, n2, n3" in str(err)


# ---------------------------------------------------------------- the single-node default


def test_default_single_node_creates_a_private_secret_and_reuses_it(tmp_path: Path) -> None:
    cluster, node = config.default_single_node(tmp_path / "data")
    secret_file = tmp_path / "data" / "secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert secret_file.read_text().strip() == cluster.secret
    assert len(cluster.secret) >= config.MIN_SECRET_CHARS
    assert (node.id, node.raft_addr, node.http_url) == ("n1", "127.0.0.1:7101", "http://127.0.0.1:8101")
    assert cluster.members == ("n1",) and cluster.nodes == {"n1": node}
    assert cluster.node_data_dir("n1") == tmp_path / "data" / "n1"
    token_file = tmp_path / "data" / "api_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert cluster.api_token is not None and token_file.read_text().strip() == cluster.api_token
    assert len(cluster.api_token) >= 32 and cluster.api_token != cluster.secret
    again, _ = config.default_single_node(tmp_path / "data")
    assert (again.secret, again.api_token) == (cluster.secret, cluster.api_token)
    names = sorted(p.name for p in secret_file.parent.iterdir())
    assert names == ["api_token", "secret"], "no temporary file is left"


def test_default_single_node_relative_dir_and_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = Overrides(data_dir=Path("other"), http="127.0.0.1:9001", raft="127.0.0.1:9101")
    cluster, node = config.default_single_node(Path("data"), overrides)
    assert cluster.data_dir == tmp_path / "other"
    assert (tmp_path / "other" / "secret").is_file() and not (tmp_path / "data").exists()
    assert (node.http_port, node.raft_port) == (9001, 9101)


def test_default_single_node_refuses_bad_flags_before_touching_disk(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        config.default_single_node(tmp_path / "data", Overrides(http="0.0.0.0:8101"))
    assert (info.value.section, info.value.key) == ("cluster", "api_token")
    assert not (tmp_path / "data").exists()


def test_default_single_node_refuses_a_damaged_secret(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("abc123\n")
    with pytest.raises(ConfigError) as info:
        config.default_single_node(tmp_path)
    assert (info.value.section, info.value.key) == ("cluster", "secret")
    assert "abc123" not in str(info.value), "the secret is never echoed"


def test_default_single_node_keeps_an_existing_secret_as_is(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    os.chmod(tmp_path / "secret", 0o644)
    assert config.default_single_node(tmp_path)[0].secret == SECRET
