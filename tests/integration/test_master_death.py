"""No worker outlives its master, however the master dies."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

SCRIPT = Path(__file__).with_name("master_script.py")
_PR_SET_CHILD_SUBREAPER = 36


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Orphaned workers are re-parented to this process, so the test can see and reap them."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    try:
        yield
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def _exited(pid: int) -> bool:
    """True once ``pid`` has exited; reaps it if it became our child."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return True
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
async def test_worker_exits_when_its_master_dies(subreaper: None, how: signal.Signals) -> None:
    with trio.fail_after(30):
        master = subprocess.Popen(
            [sys.executable, str(SCRIPT)], stdout=subprocess.PIPE, cwd=SCRIPT.parent
        )
        try:
            assert master.stdout is not None
            line = await trio.to_thread.run_sync(master.stdout.readline)
            worker = int(line)
            assert not _exited(worker)
            master.send_signal(how)
            await trio.to_thread.run_sync(master.wait)
            # PR_SET_PDEATHSIG makes this immediate; channel EOF is the second line of defence.
            with trio.fail_after(3):
                while not _exited(worker):
                    await trio.sleep(0.01)
        finally:
            if master.poll() is None:
                master.kill()
                master.wait()
            if master.stdout is not None:
                master.stdout.close()
