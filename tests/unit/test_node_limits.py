"""A node lifts its open-files limit at start (node.raise_open_files_limit). Each case runs in a
child process: limits, once lowered, stay lowered for the process."""

from __future__ import annotations

import json
import subprocess
import sys

CHILD = """
import json, logging, resource, sys
from raftsched.node import raise_open_files_limit
soft, hard = {soft}, {hard}
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger("raftsched.node").addHandler(Keep())
got = raise_open_files_limit({capacity})
print(json.dumps({{"returned": got, "now": resource.getrlimit(resource.RLIMIT_NOFILE), "logged": records}}))
"""


def run(soft: int, hard: int, capacity: int) -> dict[str, object]:
    code = CHILD.format(soft=soft, hard=hard, capacity=capacity)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_soft_limit_is_lifted_to_the_hard_one() -> None:
    got = run(soft=256, hard=4096, capacity=8)
    assert got == {"returned": 4096, "now": [4096, 4096], "logged": []}


def test_a_hard_limit_too_low_for_the_capacity_is_named_in_a_warning() -> None:
    got = run(soft=128, hard=400, capacity=100)
    assert got["returned"] == 400 and got["now"] == [400, 400]
    logged = got["logged"]
    assert isinstance(logged, list) and len(logged) == 1
    assert "open files limit 400" in logged[0] and "capacity 100" in logged[0] and "(556)" in logged[0]
