"""`raftsched`: run a node, make a secret, and talk to a cluster over its admin API.

Exit status: 0 success, 1 the server refused, 2 bad usage or config, 3 no node answered.
The client side uses only the standard library (urllib): a CLI call is one request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import __version__, clitables
from .errors import ConfigError

__all__ = ["main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    pass


# ---------------------------------------------------------------- argument parsing


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftsched",
        description="A distributed job scheduler on a Raft log. `raftsched COMMAND --help` shows a "
        "command's arguments.",
        epilog=_EXIT_STATUS,
    )
    p.add_argument("--version", action="version", version=f"raftsched {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _node_parser(sub)
    _command(sub, "secret", "print a new random cluster secret (also good as an API token)")
    completion = _command(sub, "completion", "print a bash completion script")
    completion.add_argument("shell", choices=["bash"])
    _client(_command(sub, "status", "this node's view of the cluster: role, leader, term, indexes"))
    _client(_command(sub, "token", "print the API token the CLI would send to --url (for curl)"))
    _group(sub, "jobs", "list, show, add, edit, remove, pause, resume, trigger jobs", JOB_ACTIONS)
    _group(sub, "runs", "list, show, read the output of, cancel runs", RUN_ACTIONS)
    _group(sub, "nodes", "list, add, remove cluster members", NODE_ACTIONS)
    backup = _client(_command(sub, "backup", "write the job table (with --runs, run history) to FILE"))
    backup.add_argument("file", metavar="FILE", help="where to write the backup (- for stdout)")
    backup.add_argument("--runs", action="store_true", help="include the run history")
    backup.add_argument(
        "--secrets",
        action="store_true",
        help='include the inline values of sensitive headers (else "***"; keep such a file private)',
    )
    restore = _client(_command(sub, "restore", "load the jobs of a backup FILE into the cluster"))
    restore.add_argument("file", metavar="FILE", help="a file written by `raftsched backup`")
    restore.add_argument("--dry-run", action="store_true", help="only list what would change")
    return p


_EXIT_STATUS = "exit status: 0 success, 1 the server refused, 2 bad usage or config, 3 no node answered"


def _command(sub: Any, name: str, summary: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A subcommand whose `--help` starts with the same sentence `raftsched --help` lists it by."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:] + ".", **kwargs
    )
    return parser


def _node_parser(sub: Any) -> None:
    node = _command(sub, "node", "run a node (without --config: a single-node cluster on 127.0.0.1)")
    node.add_argument("--config", type=Path, help="cluster .ini (default: a single node on loopback)")
    node.add_argument("--node", help="this node's id in the config")
    node.add_argument("--data-dir", type=Path, help="replaces data_dir (the node id is still appended)")
    node.add_argument("--http", help="host:port of the admin API")
    node.add_argument("--raft", help="host:port of the Raft port")
    node.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error"],
        help="warning (default) logs only what needs attention; info adds routine events",
    )
    node.add_argument("--log-format", default="text", choices=["text", "json"])


@dataclass(frozen=True, slots=True)
class Action:
    """One `raftsched GROUP ACTION`: its summary and positional arguments (name, metavar, help)."""

    summary: str
    positionals: tuple[tuple[str, str, str], ...] = ()
    options: tuple[str, ...] = ()  # of `_FILTERS`


JOB_ID = ("job_id", "JOB_ID", "the job's id")
RUN_ID = ("run_id", "RUN_ID", "the run's id (JOB_ID@...)")
_FILTERS: dict[str, tuple[str, dict[str, Any]]] = {
    "limit": ("--limit", {"type": int, "help": "list at most this many"}),
    "state": ("--state", {"help": "only runs in this state (pending, succeeded, skipped, ...)"}),
    "job": ("--job", {"help": "only runs of this job"}),
    "node_filter": ("--node", {"dest": "node_filter", "metavar": "NODE", "help": "only runs on this node"}),
}

JOB_ACTIONS = {
    "list": Action("list the jobs (the default action)", options=("limit",)),
    "get": Action("show one job, its task spelled out (--json: as the API answers it)", (JOB_ID,)),
    "add": Action("create a job from a JSON file (- for stdin)", (("file", "FILE", "the job as JSON"),)),
    "edit": Action(
        "replace a job, only if nobody changed it meanwhile (If-Match)",
        (JOB_ID, ("file", "FILE", "the new job as JSON (default: open the job in $EDITOR)")),
    ),
    "rm": Action("delete a job: pending runs are cancelled, running ones killed", (JOB_ID,)),
    "pause": Action("pause a job: its slots are skipped until it is resumed", (JOB_ID,)),
    "resume": Action("resume a paused job", (JOB_ID,)),
    "trigger": Action("run a job now, outside its schedule", (JOB_ID,)),
    "runs": Action("list one job's runs, newest first", (JOB_ID,), ("limit", "state")),
}
RUN_ACTIONS = {
    "list": Action("list runs, newest first (the default action)", options=tuple(_FILTERS)),
    "get": Action("print one run as JSON, with its output tail", (RUN_ID,)),
    "output": Action("print a run's full output, from the node that ran it", (RUN_ID,)),
    "cancel": Action("cancel a run: a pending one never starts, a running one is killed", (RUN_ID,)),
}
NODE_ACTIONS = {
    "list": Action("list the members with their load and health (the default action)"),
    "add": Action(
        "add a member from a JSON file: {id, raft, http, tags}",
        (("file", "FILE", "the node as JSON"),),
    ),
    "rm": Action("drain a member, then remove it", (("node_id", "NODE_ID", "the node's id"),)),
}


def _group(sub: Any, name: str, summary: str, actions: dict[str, Action]) -> None:
    """`raftsched NAME ACTION ...`; `raftsched NAME` alone is `raftsched NAME list`."""
    group = _client(_command(sub, name, summary))
    inner = group.add_subparsers(dest="action", metavar="ACTION", title="actions")
    group.set_defaults(action="list")  # after add_subparsers, whose own default (None) it replaces
    for action_name, action in actions.items():
        parser = _client(_command(inner, action_name, action.summary), nested=True)
        for dest, metavar, text in action.positionals:
            optional = dest == "file" and action_name == "edit"
            parser.add_argument(dest, metavar=metavar, help=text, nargs="?" if optional else None)
        for key in action.options:
            flag, kwargs = _FILTERS[key]
            parser.add_argument(flag, **kwargs)


def _client(p: argparse.ArgumentParser, nested: bool = False) -> argparse.ArgumentParser:
    """The options of every command that talks to a node. A nested action's copies leave what its
    group parsed alone (SUPPRESS), so `raftsched jobs --json list` and `jobs list --json` agree."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if nested else value

    p.add_argument(
        "--url",
        default=default(None),
        help="a node's API (default: $RAFTSCHED_URL, else the first node of --config, else 127.0.0.1:8101)",
    )
    p.add_argument("--config", type=Path, default=default(None), help="cluster .ini to find a node in")
    p.add_argument(
        "--token",
        default=default(os.environ.get("RAFTSCHED_TOKEN")),
        help="API token (default: $RAFTSCHED_TOKEN, --config's, then the local cluster's)",
    )
    p.add_argument("--json", action="store_true", default=default(False), help="print JSON for scripts")
    return p


def _private_opener(path: str, flags: int) -> int:
    """Open for writing, mode 0600 whatever the umask and the file's mode before (it holds secrets)."""
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


RESTORE_CHUNK = 200  # jobs per request: a backup may be larger than the API's body limit


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help is 0, bad usage is 2
        return int(exc.code or 0)
    if args.command == "secret":
        from .config import new_secret

        print(new_secret())
        return EXIT_OK
    if args.command == "completion":
        print(_BASH_COMPLETION)
        return EXIT_OK
    if args.command == "node":
        return _run_node(args)
    try:
        return Client(args).run()
    except UsageError as exc:
        print(f"raftsched: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Unreachable as exc:
        print(f"raftsched: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _run_node(args: argparse.Namespace) -> int:
    from . import config
    from .logs import setup_logging
    from .node import private_umask, run_node

    private_umask()  # first: loading the default config may write the secret
    overrides = config.Overrides(data_dir=args.data_dir, http=args.http, raft=args.raft)
    try:
        if args.config is None:
            cluster, node = config.default_single_node(args.data_dir or Path("data"), overrides)
        else:
            cluster, node = config.load(args.config, args.node, overrides)
    except ConfigError as exc:
        print(f"raftsched: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(args.log_level, args.log_format, node.id)
    from .executors.python import prepare_import_path

    prepare_import_path([str(entry) for entry in node.python_path])
    from .journalcheck import JournalDamaged

    try:
        return asyncio.run(run_node(cluster, node))
    except ConfigError as exc:  # found at start: the data directory, run_as
        print(f"raftsched: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, JournalDamaged) as exc:
        print(f"raftsched: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ---------------------------------------------------------------- the client


@dataclass(slots=True)
class Response:
    status: int
    body: Any
    text: str


class Client:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.url = _base_url(args).rstrip("/")
        self.token = find_token(args.token, args.config, self.url)

    def _token(self) -> int:
        if not self.token:
            print(f"raftsched: no API token found for {self.url}", file=sys.stderr)
            return EXIT_REFUSED
        print(self.token)
        return EXIT_OK

    def run(self) -> int:
        command, action = self.args.command, getattr(self.args, "action", None)
        handler: Callable[[], int] = getattr(self, f"_{command}_{action}" if action else f"_{command}")
        return handler()

    # -------------------------------------------------------- helpers

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Response:
        data = orjson.dumps(body) if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw, status, ctype = resp.read(), resp.status, resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raw, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        except (urllib.error.URLError, OSError) as exc:
            raise Unreachable(f"no node answered at {self.url}: {exc}") from exc
        text = raw.decode(errors="replace")
        parsed = orjson.loads(raw) if raw and "json" in ctype else None
        return Response(status, parsed, text)

    def show(self, resp: Response, table: Callable[[Any], list[list[str]]] | None = None) -> int:
        if resp.status >= 400:
            err = (resp.body or {}).get("error", {}) if isinstance(resp.body, dict) else {}
            where = f" ({err['field']})" if err.get("field") else ""
            print(
                f"error {resp.status} {err.get('code', '')}: {err.get('message', resp.text)}{where}",
                file=sys.stderr,
            )
            return EXIT_REFUSED
        if resp.body is None:
            if resp.text:
                print(resp.text, end="" if resp.text.endswith("\n") else "\n")
            return EXIT_OK
        if self.args.json or table is None:
            print(orjson.dumps(resp.body, option=orjson.OPT_INDENT_2).decode())
        else:
            clitables.print_table(table(resp.body))
        return EXIT_OK

    def _list_query(self) -> str:
        """`?limit=&state=&job=&node=` from the filters this action has and was given (a bare
        `raftsched runs` is `runs list` without any)."""
        names = {"limit": "limit", "state": "state", "job": "job", "node_filter": "node"}
        given = {query: getattr(self.args, dest, None) for dest, query in names.items()}
        pairs = {query: str(value) for query, value in given.items() if value is not None}
        return ("?" + urllib.parse.urlencode(pairs)) if pairs else ""

    # -------------------------------------------------------- commands

    def _status(self) -> int:
        return self.show(self.request("GET", "/v1/status"), clitables.status_table)

    def _jobs_list(self) -> int:
        return self.show(self.request("GET", "/v1/jobs" + self._list_query()), clitables.jobs_table)

    def _jobs_get(self) -> int:
        return self.show(self.request("GET", f"/v1/jobs/{_q(self.args.job_id)}"), clitables.job_view)

    def _jobs_add(self) -> int:
        return self.show(self.request("POST", "/v1/jobs", _read_job_file(self.args.file)))

    def _jobs_edit(self) -> int:
        job_id, file = self.args.job_id, self.args.file
        current = self.request("GET", f"/v1/jobs/{_q(job_id)}")
        if current.status != 200:
            return self.show(current)
        spec = _read_job_file(file) if file is not None else _edit_in_editor(current.body)
        if spec is None:
            print("no change", file=sys.stderr)
            return EXIT_OK
        headers = {"If-Match": f'"{current.body["version"]}"'}
        return self.show(self.request("PUT", f"/v1/jobs/{_q(job_id)}", spec, headers))

    def _jobs_rm(self) -> int:
        return self.show(self.request("DELETE", f"/v1/jobs/{_q(self.args.job_id)}"))

    def _jobs_pause(self) -> int:
        return self.show(self.request("POST", f"/v1/jobs/{_q(self.args.job_id)}/pause"))

    def _jobs_resume(self) -> int:
        return self.show(self.request("POST", f"/v1/jobs/{_q(self.args.job_id)}/resume"))

    def _jobs_trigger(self) -> int:
        return self.show(self.request("POST", f"/v1/jobs/{_q(self.args.job_id)}/trigger", {}))

    def _jobs_runs(self) -> int:
        path = f"/v1/jobs/{_q(self.args.job_id)}/runs" + self._list_query()
        return self.show(self.request("GET", path), clitables.runs_table)

    def _runs_list(self) -> int:
        return self.show(self.request("GET", "/v1/runs" + self._list_query()), clitables.runs_table)

    def _runs_get(self) -> int:
        return self.show(self.request("GET", f"/v1/runs/{_q(self.args.run_id)}"))

    def _runs_output(self) -> int:
        return self.show(self.request("GET", f"/v1/runs/{_q(self.args.run_id)}/output"))

    def _runs_cancel(self) -> int:
        return self.show(self.request("POST", f"/v1/runs/{_q(self.args.run_id)}/cancel"))

    def _backup(self) -> int:
        flags = (("runs=true", self.args.runs), ("secrets=true", self.args.secrets))
        query = "&".join(q for q, on in flags if on)
        resp = self.request("GET", "/v1/backup" + (f"?{query}" if query else ""))
        if resp.status != 200:
            return self.show(resp)
        data = orjson.dumps(resp.body, option=orjson.OPT_INDENT_2)
        if self.args.file == "-":
            sys.stdout.write(data.decode() + "\n")
        else:
            tmp = Path(self.args.file + ".tmp")
            with open(tmp, "wb", opener=_private_opener if self.args.secrets else None) as f:
                f.write(data)
            os.replace(tmp, self.args.file)
            print(f"{len(resp.body['jobs'])} jobs written to {self.args.file}", file=sys.stderr)
        return EXIT_OK

    def _restore(self) -> int:
        doc = _read_job_file(self.args.file)
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
            raise UsageError(f"{self.args.file} is not a raftsched backup")
        query = "?dry_run=true" if self.args.dry_run else ""
        totals: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": []}
        jobs = doc["jobs"]
        for start in range(0, max(len(jobs), 1), RESTORE_CHUNK):
            chunk = {**doc, "jobs": jobs[start : start + RESTORE_CHUNK]}
            chunk.pop("runs", None)
            resp = self.request("POST", "/v1/restore" + query, chunk)
            if resp.status != 200:
                return self.show(resp)
            for key in totals:
                totals[key] += resp.body.get(key, [])
        if self.args.json:
            print(orjson.dumps({"dry_run": self.args.dry_run, **totals}, option=orjson.OPT_INDENT_2).decode())
        else:
            verb = "would be" if self.args.dry_run else "were"
            for key, ids in totals.items():
                print(
                    f"{len(ids)} jobs {verb} {key}"
                    + (f": {', '.join(ids[:20])}" if ids and key != "unchanged" else "")
                )
        return EXIT_OK

    def _nodes_list(self) -> int:
        return self.show(self.request("GET", "/v1/nodes"), clitables.nodes_table)

    def _nodes_add(self) -> int:
        return self.show(self.request("POST", "/v1/nodes", _read_job_file(self.args.file)))

    def _nodes_rm(self) -> int:
        return self.show(self.request("DELETE", f"/v1/nodes/{_q(self.args.node_id)}"))


class Unreachable(Exception):
    pass


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def _base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    if os.environ.get("RAFTSCHED_URL"):
        return os.environ["RAFTSCHED_URL"]
    if args.config is not None:
        from . import config

        try:
            cluster, _ = config.load(
                args.config, None if len(_node_ids(args.config)) == 1 else _node_ids(args.config)[0]
            )
        except ConfigError as exc:
            raise UsageError(f"config error: {exc}") from None
        return cluster.nodes[cluster.members[0]].http_url
    return "http://127.0.0.1:8101"


# Where a local cluster keeps its token: the launcher's cluster file, `raftsched node`'s data dir.
LOCAL_TOKEN_FILES = (Path(".cluster/cluster.ini"), Path("data/api_token"))


def find_token(given: str | None, config_path: Path | None, url: str) -> str | None:
    """The token to send: `--token` or $RAFTSCHED_TOKEN, else `--config`'s api_token, else (for a
    loopback URL only: a token must not travel to another machine) the local cluster's files."""
    if given:
        return given
    if config_path is not None:
        return _ini_token(config_path)
    from .config import is_loopback_host

    if not is_loopback_host(urllib.parse.urlsplit(url).hostname or ""):
        return None
    for path in LOCAL_TOKEN_FILES:
        token = _ini_token(path) if path.suffix == ".ini" else _file_token(path)
        if token:
            return token
    return None


def _ini_token(path: Path) -> str | None:
    import configparser

    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    try:
        parser.read(path, encoding="utf-8")
        return parser.get("cluster", "api_token", fallback="").strip() or None
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None


def _file_token(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _node_ids(path: Path) -> list[str]:
    import configparser

    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    return [s.split(None, 1)[1] for s in parser.sections() if s.startswith("node ")]


def _read_job_file(path: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
        return orjson.loads(raw)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON: {exc}") from None


def _edit_in_editor(job: dict[str, Any]) -> Any:
    from .model import READ_ONLY_JOB_FIELDS  # here: the other commands need none of the model

    editable = {k: v for k, v in job.items() if k not in READ_ONLY_JOB_FIELDS}
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(orjson.dumps(editable, option=orjson.OPT_INDENT_2))
        name = f.name
    try:
        if subprocess.call([*editor.split(), name]) != 0:
            raise UsageError(f"{editor} exited with an error; nothing changed")
        edited = _read_job_file(name)
    finally:
        os.unlink(name)
    return None if edited == editable else edited


_BASH_COMPLETION = r"""# raftsched bash completion: eval "$(raftsched completion bash)"
_raftsched() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[1]}
  if [ "$COMP_CWORD" -eq 1 ]; then
    local commands="node secret token status jobs runs nodes backup restore completion --version --help"
    COMPREPLY=($(compgen -W "$commands" -- "$cur"))
  elif [ "$COMP_CWORD" -eq 2 ]; then
    case "$prev" in
      jobs) COMPREPLY=($(compgen -W "list get add edit rm pause resume trigger runs" -- "$cur")) ;;
      runs) COMPREPLY=($(compgen -W "list get output cancel" -- "$cur")) ;;
      nodes) COMPREPLY=($(compgen -W "list add rm" -- "$cur")) ;;
      *) COMPREPLY=($(compgen -f -- "$cur")) ;;
    esac
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}
complete -F _raftsched raftsched"""


if __name__ == "__main__":
    sys.exit(main())
