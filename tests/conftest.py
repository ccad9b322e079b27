import sys
from pathlib import Path

# Test helpers (statekit, the cluster harness) live beside the tests.
sys.path.insert(0, str(Path(__file__).parent / "unit"))
sys.path.insert(0, str(Path(__file__).parent))
