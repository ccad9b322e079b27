"""A child this process forks (PySyncObj's snapshot writer) holds none of the node's sockets and
dies with its parent: after a kill -9 the node could not bind its port again while the child ran.
It also runs without the garbage collector (it builds the snapshot and exits)."""

from __future__ import annotations

import gc
import os
import socket
import sys
import time

import pytest

from raftsched import replication

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux")


def _gone(pid: int) -> bool:
    """Exited (a zombie not yet reaped by whoever adopted it counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def test_a_forked_child_drops_the_listening_socket_and_dies_with_its_parent() -> None:
    replication._guard_forked_children()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    read_end, write_end = os.pipe()
    middle = os.fork()
    if middle == 0:  # the "node": forks the "snapshot writer", reports its pid, then is killed
        child = os.fork()
        if child == 0:
            try:
                os.fstat(listener.fileno())
                held = b"1"
            except OSError:
                held = b"0"
            os.write(write_end, held + (b"g" if gc.isenabled() else b"n"))
            time.sleep(30)  # a long snapshot
            os._exit(0)
        os.write(write_end, str(child).encode().rjust(10))
        time.sleep(30)
        os._exit(0)
    os.close(write_end)
    listener.close()
    data = b""
    while len(data) < 12:
        chunk = os.read(read_end, 12 - len(data))
        assert chunk, data
        data += chunk
    held, child = (data[:2], int(data[2:])) if data[:1] in (b"0", b"1") else (data[10:], int(data[:10]))
    assert held[:1] == b"0"  # the child closed its copy of the listening socket
    assert held[1:] == b"n"  # and collects no garbage: it writes the snapshot and exits
    os.kill(middle, 9)
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if _gone(child):
            break
        time.sleep(0.02)
    else:
        os.kill(child, 9)
        pytest.fail("the child outlived its parent")
    again = socket.socket()
    again.bind(("127.0.0.1", port))  # free again at once
    again.close()
