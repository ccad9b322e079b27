"""Where python tasks import from: the node's sys.path, then `python_path`; never the working
directory or the console script's directory, whichever way the node was started."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftsched import config
from raftsched.executors.python import RAFTSCHED_HOME, node_pythonpath, prepare_import_path

UNIT = Path(__file__).resolve().parent
SECRET = "PVfWzP78ohEAaZ36tNu3MZfCcz3zFqFTnlY3AZD7Zwc"
WHERE = "import os\n\ndef where():\n    return os.getcwd()\n"


def _config(tmp_path: Path, node_keys: str = "") -> Path:
    ini = tmp_path / "etc" / "cluster.ini"
    ini.parent.mkdir()
    ini.write_text(
        f"[cluster]\nsecret = {SECRET}\n[node n1]\nraft = 127.0.0.1:7101\nhttp = 127.0.0.1:8101\n{node_keys}"
    )
    return ini


@pytest.mark.parametrize(
    ("line", "wanted"),
    [
        ("", ["."]),
        ("python_path = .\n", ["."]),
        ("python_path = lib, /opt/jobs\n", ["lib", "/opt/jobs"]),
        ("python_path = ../jobs\n", ["../jobs"]),
        ("python_path =\n", []),
    ],
)
def test_python_path_is_relative_to_the_config_file(tmp_path: Path, line: str, wanted: list[str]) -> None:
    ini = _config(tmp_path, line)
    _, node = config.load(ini, "n1")
    assert node.python_path == tuple(Path(os.path.abspath(ini.parent / entry)) for entry in wanted)


def test_a_node_without_config_imports_from_where_it_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _, node = config.default_single_node(Path("data"))
    assert node.python_path == (tmp_path,)


def test_node_pythonpath_puts_python_path_last(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "path", ["/usr/lib/python3", "/site"])
    assert node_pythonpath(("/jobs", "/site")).split(os.pathsep) == ["/usr/lib/python3", "/site", "/jobs"]


@pytest.mark.parametrize(
    ("path", "argv0", "kept"),
    [
        (["<cwd>", "/lib", "/site"], "/anywhere/raftsched/__main__.py", ["/lib", "/site"]),  # python -m
        (["/venv/bin", "/lib", "/site"], "/venv/bin/raftsched", ["/lib", "/site"]),  # console script
        (["/lib", "/site"], "/venv/bin/raftsched", ["/lib", "/site"]),  # -P: nothing was put first
        ([RAFTSCHED_HOME, "/lib"], "/x/raftsched/__main__.py", [RAFTSCHED_HOME, "/lib"]),  # checkout root
    ],
)
def test_prepare_import_path_drops_the_start_entry(
    path: list[str], argv0: str, kept: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = RAFTSCHED_HOME if path[0] == RAFTSCHED_HOME else str(tmp_path)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "path", [cwd if p == "<cwd>" else p for p in path])
    prepare_import_path(["/jobs", "/lib"], argv0)
    assert sys.path == [*kept, "/jobs"]


def _probe(how: list[str], cwd: Path, jobs: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([RAFTSCHED_HOME, str(UNIT)])}
    env.pop("PYTHONSAFEPATH", None)
    done = subprocess.run(
        [sys.executable, *how, str(jobs)], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def test_both_start_modes_import_the_same(tmp_path: Path) -> None:
    """`python -m` puts the working directory first, a console script its own directory: a module
    in the working directory is found by neither; one in python_path by both, child and thread."""
    cwd, jobs = tmp_path / "cwd", tmp_path / "jobs"
    cwd.mkdir()
    jobs.mkdir()
    (cwd / "cwdjobs.py").write_text(WHERE)
    (jobs / "pathjobs.py").write_text(WHERE)
    as_module = _probe(["-m", "pypath_probe"], cwd, jobs)
    as_script = _probe([str(UNIT / "pypath_probe.py")], cwd, jobs)
    assert as_module == as_script
    assert as_module == {
        "cwdjobs in_process=False": "failed",
        "cwdjobs in_process=True": "failed",
        "pathjobs in_process=False": "succeeded",
        "pathjobs in_process=True": "succeeded",
    }
