"""`raftsched`: run a node, make a secret, and talk to a cluster over its admin API.

Exit status: 0 success, 1 the server refused, 2 bad usage or config, 3 no node answered.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from . import __version__
from .errors import ConfigError

__all__ = ["main"]

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="raftsched", description=__doc__)
    p.add_argument("--version", action="version", version=f"raftsched {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    node = sub.add_parser("node", help="run a node")
    node.add_argument("--config", type=Path, help="cluster .ini (default: a single node on loopback)")
    node.add_argument("--node", help="this node's id in the config")
    node.add_argument("--data-dir", type=Path, help="replaces data_dir (the node id is still appended)")
    node.add_argument("--http", help="host:port of the admin API")
    node.add_argument("--raft", help="host:port of the Raft port")
    node.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    node.add_argument("--log-format", default="text", choices=["text", "json"])
    sub.add_parser("secret", help="print a new random cluster secret")
    for name in ("status", "jobs", "runs", "nodes"):
        c = sub.add_parser(name, help=f"{name} of the cluster")
        c.add_argument("action", nargs="?", default="list" if name != "status" else None)
        c.add_argument("args", nargs="*")
        c.add_argument("--url", default=os.environ.get("RAFTSCHED_URL", "http://127.0.0.1:8101"))
        c.add_argument("--token", default=os.environ.get("RAFTSCHED_TOKEN"))
        c.add_argument("--json", action="store_true", help="print JSON for scripts")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "secret":
        from .config import new_secret

        print(new_secret())
        return EXIT_OK
    if args.command == "node":
        return _run_node(args)
    return _client(args)


def _run_node(args: argparse.Namespace) -> int:
    from . import config
    from .logs import setup_logging
    from .node import run_node

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
    try:
        return asyncio.run(run_node(cluster, node))
    except OSError as exc:
        print(f"raftsched: {exc}", file=sys.stderr)
        return EXIT_USAGE


# ---------------------------------------------------------------- client

_ROUTES: dict[tuple[str, str | None], tuple[str, str, int]] = {
    # (command, action): (method, path template, number of positional args)
    ("status", None): ("GET", "/v1/status", 0),
    ("jobs", "list"): ("GET", "/v1/jobs", 0),
    ("jobs", "get"): ("GET", "/v1/jobs/{0}", 1),
    ("jobs", "add"): ("POST", "/v1/jobs", 1),
    ("jobs", "edit"): ("PUT", "/v1/jobs/{id}", 1),
    ("jobs", "rm"): ("DELETE", "/v1/jobs/{0}", 1),
    ("jobs", "pause"): ("POST", "/v1/jobs/{0}/pause", 1),
    ("jobs", "resume"): ("POST", "/v1/jobs/{0}/resume", 1),
    ("jobs", "trigger"): ("POST", "/v1/jobs/{0}/trigger", 1),
    ("jobs", "runs"): ("GET", "/v1/jobs/{0}/runs", 1),
    ("runs", "list"): ("GET", "/v1/runs", 0),
    ("runs", "get"): ("GET", "/v1/runs/{0}", 1),
    ("runs", "cancel"): ("POST", "/v1/runs/{0}/cancel", 1),
    ("nodes", "list"): ("GET", "/v1/nodes", 0),
}


def _client(args: argparse.Namespace) -> int:
    route = _ROUTES.get((args.command, args.action))
    if route is None:
        actions = sorted(a or "" for c, a in _ROUTES if c == args.command)
        print(
            f"raftsched {args.command}: unknown action {args.action!r} (one of: {', '.join(actions)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    method, template, nargs = route
    if len(args.args) != nargs:
        print(f"raftsched {args.command} {args.action}: expects {nargs} argument(s)", file=sys.stderr)
        return EXIT_USAGE
    body: bytes | None = None
    if args.action in ("add", "edit"):
        try:
            spec = orjson.loads(Path(args.args[0]).read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            print(f"raftsched: cannot read job file: {exc}", file=sys.stderr)
            return EXIT_USAGE
        body = orjson.dumps(spec)
        template = template.replace("{id}", str(spec.get("id", "")) if isinstance(spec, dict) else "")
    path = template.format(*[urllib.parse.quote(a, safe="") for a in args.args])
    return _call(args, method, path, body)


def _call(args: argparse.Namespace, method: str, path: str, body: bytes | None) -> int:
    request = urllib.request.Request(args.url.rstrip("/") + path, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    if args.token:
        request.add_header("Authorization", f"Bearer {args.token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            raw = response.read()
            code = EXIT_OK
    except urllib.error.HTTPError as exc:
        raw, code = exc.read(), EXIT_REFUSED
    except (urllib.error.URLError, OSError) as exc:
        print(f"raftsched: no node answered at {args.url}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    data = orjson.loads(raw) if raw else None
    _print(data, as_json=args.json or code != EXIT_OK)
    return code


def _print(data: Any, *, as_json: bool) -> None:
    if data is None:
        return
    if as_json or not isinstance(data, dict) or "items" not in data:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    items = data["items"]
    if not items:
        print("(none)")
        return
    columns = [k for k, v in items[0].items() if not isinstance(v, dict | list)][:8]
    rows = [[str(item.get(c, "")) for c in columns] for item in items]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    sys.exit(main())
