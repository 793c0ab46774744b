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
            status = await master.wait()
            while chunk := await stdout.receive_some():
                output += chunk
    assert status == 0, output
    assert b"got SIGTERM" in output, output  # (its "ready" comes once until_signalled listens)
    notes = [line.split() for line in journal.read_text().splitlines()]
    assert sorted((what, label) for what, label, _ in notes) == [
        ("drain", "a"), ("drain", "b"), ("drain", "c"), ("stop", "a"), ("stop", "b"),
        ("stop", "c"),
    ], output
    # The three drains ran at the same time: each began before any of them ended.
    began = max(float(at) for what, _, at in notes if what == "drain")
    ended = min(float(at) for what, _, at in notes if what == "stop")
    assert began < ended, notes
    assert not set(descendants()) & workers
