"""Which API token the CLI sends: API.md's lookup order, and never a local token to another host."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftsched.cli import find_token

LOCAL = "http://127.0.0.1:8101"


@pytest.fixture
def local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".cluster").mkdir()
    (tmp_path / ".cluster" / "cluster.ini").write_text("[cluster]\napi_token = from-cluster ; comment\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "api_token").write_text("from-data\n")
    return tmp_path


def test_the_lookup_order(local_files: Path) -> None:
    other = local_files / "other.ini"
    other.write_text("[cluster]\napi_token = from-config\n")
    assert find_token("given", other, LOCAL) == "given"
    assert find_token(None, other, LOCAL) == "from-config"
    assert find_token(None, None, LOCAL) == "from-cluster"
    assert find_token(None, None, "http://localhost:8102") == "from-cluster"
    (local_files / ".cluster" / "cluster.ini").write_text("[cluster]\napi_token =\n")
    assert find_token(None, None, "http://[::1]:8101") == "from-data"


def test_a_config_without_a_token_sends_none(local_files: Path) -> None:
    empty = local_files / "empty.ini"
    empty.write_text("[cluster]\nname = x\n")
    assert find_token(None, empty, LOCAL) is None


def test_local_files_never_go_to_another_host(local_files: Path) -> None:
    assert find_token(None, None, "http://10.1.2.3:8101") is None
    assert find_token(None, None, "https://sched.example.com") is None
