"""SIGTERM to a master: orderly shutdown (siblings drain at the same time), exit status 0."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import trio

from tests.leaks import descendants
from tests.waiting import TIMEOUT

SCRIPT = Path(__file__).with_name("supervised_master.py")


async def test_sigterm_drains_every_worker_at_once_and_exits_0(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    with trio.fail_after(TIMEOUT):
        receive, send = os.pipe()
        try:
            master = await trio.lowlevel.open_process(
                [sys.executable, str(SCRIPT), str(journal)], stdout=send
            )
        finally:
            os.close(send)
        async with trio.lowlevel.FdStream(receive) as stdout:
            output = b""
            while b"ready\n" not in output:
                chunk = await stdout.receive_some()
                assert chunk, f"the master exited early: {output!r}"
                output += chunk
            workers = set(descendants())
            assert len(workers) >= 3  # three workers (and the fork server)
            master.send_signal(signal.SIGTERM)
            started = trio.current_time()
            status = await master.wait()
            elapsed = trio.current_time() - started
            while chunk := await stdout.receive_some():
                output += chunk
    assert status == 0, output
    assert b"got SIGTERM" in output, output
    assert sorted(journal.read_text().splitlines()) == ["stop a", "stop b", "stop c"], output
    # Three drains of 1 s each, at the same time: about one of them, not their sum.
    assert elapsed < 2.5, elapsed
    assert not set(descendants()) & workers
