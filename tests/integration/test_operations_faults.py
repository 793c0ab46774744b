"""Operations under faults: a master out of file descriptors, clients that send what they
should not, masters that do not answer, outputs too large to carry, pipes that close.

Real masters (tests/integration/ops_master.py) and real CLI subprocesses, as in
test_operations.py; the fd limits are lowered on the running master (``prlimit``)."""

from __future__ import annotations

import json
import os
import resource
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from actors._operations import socket_path
from tests.integration.test_operations import Master, cli, master
from tests.waiting import wait_until

__all__ = ["master"]  # the fixture, shared with test_operations


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def limit_fds(pid: int, limit: int) -> None:
    """Lower the running process ``pid``'s fd limit (soft and hard) to ``limit``."""
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))


class Stderr:
    """What a master wrote to its stderr so far, read without waiting for it to exit."""

    def __init__(self, running: Master) -> None:
        assert running.process.stderr is not None
        self._fd = running.process.stderr.fileno()
        os.set_blocking(self._fd, False)
        self.text = ""

    def read(self) -> str:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return self.text


@contextmanager
def idle_clients(path: Path, most: int) -> Iterator[list[socket.socket]]:
    """Up to ``most`` connections to the control socket at ``path`` that say nothing,
    fewer if its backlog fills first; all closed on the way out."""
    clients: list[socket.socket] = []
    try:
        for _ in range(most):
            client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            client.setblocking(False)
            try:
                client.connect(str(path))
            except BlockingIOError:  # its backlog is full: nobody accepts
                client.close()
                break
            clients.append(client)
        yield clients
    finally:
        for client in clients:
            client.close()


def statuses(running: Master) -> dict[str, dict[str, object]]:
    found = json.loads(cli("status", running.name, "--json", check=True).stdout)
    return {row["path"]: row for row in found["actors"]}


# -- row 8: accept() out of fds -------------------------------------------------------


def test_the_control_server_backs_off_when_the_master_is_out_of_fds(master: Master) -> None:
    pid = master.process.pid
    before = statuses(master)
    stderr = Stderr(master)
    limit = fd_count(pid) + 48
    limit_fds(pid, limit)
    free = limit - fd_count(pid)
    with idle_clients(socket_path(master.name), 4 * limit) as clients:
        assert len(clients) > free  # more than it can take: the rest wait in its backlog
        wait_until(lambda: "control socket" in stderr.read() or master.process.poll() is not None,
                   what="the master to back off")
        assert master.process.poll() is None, stderr.read()  # alive
        # A TCP client meanwhile waits in the listener's queue (the master accepts those
        # too, and cannot either).
        waiting = socket.create_connection(("127.0.0.1", master.port), timeout=30)
    with waiting:
        assert waiting.recv(100).decode().startswith("one")  # served once fds came back
    after = statuses(master)  # it answers, and nothing was restarted meanwhile
    assert {p: r["pid"] for p, r in after.items()} == {p: r["pid"] for p, r in before.items()}
    assert master.greeting() == "one"
    assert json.loads(cli("stop", master.name, "--json", check=True).stdout)["ok"]
    code, _, err = master.finish(wait=30)
    assert code == 0
    err = stderr.text + err
    backing_off = [line for line in err.splitlines()
                   if "control socket" in line and "cannot accept" in line]
    assert len(backing_off) == 1, err  # logged once, not once per try
    assert "Traceback" not in err
