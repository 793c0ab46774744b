"""No worker outlives its master, however the master dies."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from tests.leaks import child_processes, descendants
from tests.processes import is_running, wait_exited
from tests.waiting import TIMEOUT, eventually

SCRIPT = Path(__file__).with_name("master_script.py")
_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphans (the workers, the fork server) are re-parented to this process, so the test
    can see them exit and reap them.

    A master that dies leaves its fork server and workers to exit on their own (death
    signal, channel EOF), each at its own pace: the fixture stays subreaper until every one
    of them has exited and been reaped here, so none is left as a zombie of the test run.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    before = set(descendants())
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        try:
            _reap_adopted(before, deadline=time.monotonic() + 5.0)
        finally:
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _reap_adopted(before: set[int], deadline: float) -> None:
    """Wait for every process that appeared below us to exit, reaping those adopted by us.

    One still running at the deadline outlived its master: it is SIGKILLed (its own orphans
    are then adopted and reaped too) and the test fails on it.
    """
    outlived: dict[int, str] = {}
    while True:
        left = {pid: state for pid, state in descendants().items() if pid not in before}
        if not left:
            break
        ours = child_processes()
        for pid, state in left.items():
            if state == "Z" and pid in ours:
                os.waitpid(pid, 0)
            elif time.monotonic() > deadline:
                outlived.setdefault(pid, state)
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline + 5.0:
            raise AssertionError(f"processes that cannot be reaped: {left}")
        time.sleep(0.01)
    assert not outlived, f"processes that outlived their master by 5 s: {outlived}"


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
async def test_worker_exits_when_its_master_dies(subreaper: None, how: signal.Signals) -> None:
    with trio.fail_after(TIMEOUT):
        receive, send = os.pipe()
        try:
            master = await trio.lowlevel.open_process(
                [sys.executable, str(SCRIPT)], stdout=send, cwd=SCRIPT.parent
            )
        finally:
            os.close(send)
        worker = 0
        try:
            async with trio.lowlevel.FdStream(receive) as stdout:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await stdout.receive_some()
                    assert chunk, "the master exited before printing its worker's pid"
                    line += chunk
            worker = int(line)
            assert is_running(worker)
            master.send_signal(how)
            await master.wait()
            # PR_SET_PDEATHSIG makes this immediate; channel EOF is the second line of defence.
            with trio.fail_after(3):
                await wait_exited(worker)
        finally:
            master.kill()
            await master.wait()
            if worker:
                if is_running(worker):
                    os.kill(worker, signal.SIGKILL)
                await wait_exited(worker)
                try:  # re-parented to us as subreaper: reap it (it has exited: no wait)
                    os.waitpid(worker, os.WNOHANG)  # noqa: ASYNC222
                except ChildProcessError:
                    pass


COMMAND_SCRIPT = Path(__file__).with_name("command_master.py")


async def test_command_exits_when_its_master_is_sigkilled(subreaper: None) -> None:
    """A command dies with its master even when the master gets no chance to stop it: the
    launcher set its parent-death signal before it exec'd the program."""
    with trio.fail_after(TIMEOUT):
        receive, send = os.pipe()
        try:
            master = await trio.lowlevel.open_process(
                [sys.executable, str(COMMAND_SCRIPT)], stdout=send, cwd=COMMAND_SCRIPT.parent
            )
        finally:
            os.close(send)
        program = 0
        try:
            async with trio.lowlevel.FdStream(receive) as stdout:
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await stdout.receive_some()
                    assert chunk, "the master exited before printing its command's pid"
                    line += chunk
            program = int(line)

            async def execd() -> bool:  # the launcher became the program
                cmdline = await trio.Path(f"/proc/{program}/cmdline").read_bytes()
                return cmdline.split(b"\0")[0] == b"sleep"

            await eventually(execd, what="the launcher to exec the program")
            master.send_signal(signal.SIGKILL)
            await master.wait()
            await wait_exited(program)
        finally:
            master.kill()
            await master.wait()
            if program:
                if is_running(program):
                    os.kill(program, signal.SIGKILL)
                await wait_exited(program)
                try:  # re-parented to us as subreaper: reap it (it has exited: no wait)
                    os.waitpid(program, os.WNOHANG)  # noqa: ASYNC222
                except ChildProcessError:
                    pass
