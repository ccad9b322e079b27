"""The replicated state machine (see `machine` for its contract)."""

from .machine import SNAPSHOT_VERSION, State

__all__ = ["SNAPSHOT_VERSION", "State"]
