"""The layers only import downward, and the state machine stays pure (STYLE.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "raftsched"
FORBIDDEN_IN_STATE = {"asyncio", "time", "random", "uuid", "os", "pysyncobj", "aiohttp", "croniter", "socket"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_state_and_commands_are_pure() -> None:
    for path in [*sorted((PACKAGE / "state").glob("*.py")), PACKAGE / "commands.py"]:
        bad = imports_of(path) & FORBIDDEN_IN_STATE
        assert not bad, f"{path.name} imports {bad}"


def test_only_replication_and_its_transport_import_pysyncobj() -> None:
    users = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "pysyncobj" in imports_of(p)}
    assert users == {"replication.py", "raftguard.py"}


def test_aiohttp_stays_at_the_edges() -> None:
    users = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("*.py") if "aiohttp" in imports_of(p)}
    allowed = {"node.py", "executors/http.py"}
    assert {u for u in users if not u.startswith("api/")} <= allowed, users
