"""raftsched: a peer-to-peer distributed job scheduler on a Raft log."""

__version__ = "0.1.0"
__all__ = ["__version__"]
