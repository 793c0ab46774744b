"""What a test may leave behind: open fds and child processes."""

from __future__ import annotations

import os


def open_fds() -> set[int]:
    """The fds open in this process (the one os.listdir opens to list them is not kept)."""
    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            os.fstat(fd)
        except OSError:
            continue  # the directory handle of the listing itself, closed by now
        fds.add(fd)
    return fds


def child_processes() -> dict[int, str]:
    """Direct children of this process (pid -> state letter), zombies included."""
    me = os.getpid()
    found: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == me:
            found[int(name)] = fields[0]
    return found


def descendants() -> dict[int, str]:
    """Every process below this one (workers forked by the fork server included)."""
    parents: dict[int, int] = {}
    states: dict[int, str] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(name)] = int(fields[1])
        states[int(name)] = fields[0]
    found: dict[int, str] = {}
    frontier = [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in found:
                found[pid] = states[pid]
                frontier.append(pid)
    return found
