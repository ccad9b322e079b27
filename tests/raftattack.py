"""Unauthenticated clients of a node's Raft port, for the security tests and
scripts/bench_raft_attack.py. 127.0.0.1 only; each closes every socket it opens."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path

__all__ = ["FrameFlood", "rss_mib"]


def rss_mib(pid: int) -> float:
    """The process's resident set (VmRSS) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"no VmRSS for {pid}")


class FrameFlood(threading.Thread):
    """Announces a 2 GiB frame (length 0x7fffffff) and streams bytes at 127.0.0.1:`port` until
    `stop` is set, dialling again 20 ms after the node cuts it off (`dials` counts them)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.stop, self.sent, self.dials = port, threading.Event(), 0, 0

    def run(self) -> None:
        chunk = b"\xab" * 65536
        while not self.stop.is_set():
            self.dials += 1
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 2) as sock:
                sock.sendall(struct.pack("i", 0x7FFFFFFF))
                while not self.stop.is_set():
                    sock.sendall(chunk)
                    self.sent += len(chunk)
            self.stop.wait(0.02)

    def __enter__(self) -> FrameFlood:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(10)
