"""Every CLI command and action has its own `--help`; options parse wherever they are given."""

from __future__ import annotations

import pytest

from raftsched.cli import JOB_ACTIONS, NODE_ACTIONS, RUN_ACTIONS, _parser, main


@pytest.mark.parametrize(
    ("argv", "wanted"),
    [
        (["--help"], ["COMMAND --help", "jobs", "runs", "nodes", "exit status"]),
        (["jobs", "--help"], ["List, show, add", "ACTION", "trigger", "--url"]),
        (["jobs", "add", "--help"], ["raftsched jobs add", "Create a job from a JSON file", "FILE"]),
        (["jobs", "edit", "--help"], ["JOB_ID [FILE]", "If-Match", "$EDITOR"]),
        (["jobs", "runs", "--help"], ["JOB_ID", "--state", "--limit"]),
        (["runs", "list", "--help"], ["--state", "--job", "--node NODE"]),
        (["runs", "output", "--help"], ["RUN_ID", "full output"]),
        (["nodes", "rm", "--help"], ["NODE_ID", "Drain"]),
        (["node", "--help"], ["--config", "--log-level", "routine events"]),
        (["backup", "--help"], ["FILE", "--runs", "--secrets"]),
    ],
)
def test_each_command_has_its_own_help(
    argv: list[str], wanted: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    for text in wanted:
        assert text in out, (text, out)


@pytest.mark.parametrize(
    ("group", "actions"), [("jobs", JOB_ACTIONS), ("runs", RUN_ACTIONS), ("nodes", NODE_ACTIONS)]
)
def test_every_action_has_a_description(
    group: str, actions: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    for action in actions:
        assert main([group, action, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: raftsched {group} {action}"), out
        assert "\n\n" in out and out.split("\n\n")[1].strip().endswith("."), out


def test_client_options_before_or_after_the_action() -> None:
    parser = _parser()
    before = parser.parse_args(["jobs", "--json", "--url", "http://127.0.0.1:1", "list"])
    after = parser.parse_args(["jobs", "list", "--json", "--url", "http://127.0.0.1:1"])
    for args in (before, after):
        assert args.json is True and args.url == "http://127.0.0.1:1" and args.action == "list"
    bare = parser.parse_args(["runs"])
    assert bare.action == "list" and bare.json is False and bare.url is None
    edit = parser.parse_args(["jobs", "edit", "a"])
    assert edit.job_id == "a" and edit.file is None


@pytest.mark.parametrize("argv", [["jobs", "bogus"], ["jobs", "get"], ["runs", "get", "a", "b"]])
def test_bad_usage_is_status_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: raftsched" in capsys.readouterr().err
