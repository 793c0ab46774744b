"""What a test may leave behind: open fds and child processes."""

from __future__ import annotations

import os


def open_fds() -> dict[int, str]:
    """The fds open in this process, each with what it refers to (a path, ``socket:[...]``,
    ``pipe:[...]``). The fd ``os.listdir`` reads ``/proc/self/fd`` with is closed by the
    time it is looked at, so it drops out."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the directory handle of the listing itself, closed by now
    return fds


def _processes() -> dict[int, tuple[int, str]]:
    """Every process on the machine: pid -> (parent pid, state letter)."""
    found: dict[int, tuple[int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone while we looked
        found[int(name)] = (int(fields[1]), fields[0])
    return found


def child_processes() -> dict[int, str]:
    """Direct children of this process (pid -> state letter), zombies included."""
    me = os.getpid()
    return {pid: state for pid, (ppid, state) in _processes().items() if ppid == me}


def descendants() -> dict[int, str]:
    """Every process below this one (workers forked by the fork server included), but
    the servers the test session keeps for all its tests (tests.redis_server)."""
    from tests.redis_server import SERVERS

    table = _processes()
    found: dict[int, str] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, state) in table.items():
            if ppid == parent and pid not in found and pid not in SERVERS:
                found[pid] = state
                frontier.append(pid)
    return found



def is_fork_server(pid: int) -> bool:
    """A fork server, or a worker it forked that has not named itself yet: a fresh server
    runs ``actors._system._zygote``, one forked from its master is named so."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            if b"actors._system._zygote" in handle.read():
                return True
        with open(f"/proc/{pid}/comm", "rb") as handle:
            return handle.read().strip() == b"actors-zygote"
    except OSError:
        return False


def workers() -> dict[int, str]:
    """The descendants that run actors: every one but fork servers.

    A fork server runs ``actors._system._zygote``; so do the workers it forks, but their parent is
    a fork server.
    """
    table = _processes()
    found = {}
    for pid, state in descendants().items():
        parent = table.get(pid, (0, ""))[0]
        if is_fork_server(pid) and not is_fork_server(parent):
            continue
        found[pid] = state
    return found
