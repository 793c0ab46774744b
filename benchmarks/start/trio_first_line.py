"""``start.py``'s bare trio anchor: start a subprocess, get one line back.

    python benchmarks/start/trio_first_line.py

A trio program (no runtime) starts a child Python interpreter that echoes one line of its
stdin (``trio.lowlevel.open_process``, pipes both ways), sends it a line and reads it back;
one line is printed once it is in: ``{"inner_s": ..., "seq": 1}``, the seconds from just
before the child is started. The child then sees the end of its stdin and is awaited.
It is the floor of "a trio program and a fresh Python process exchange a message".
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import trio

CHILD = "import sys; sys.stdout.write(sys.stdin.readline()); sys.stdout.flush()"


async def main() -> None:
    t0 = time.perf_counter()
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    try:
        await proc.stdin.send_all(b'{"seq": 1}\n')
        got = b""
        while not got.endswith(b"\n"):
            chunk = await proc.stdout.receive_some()
            if not chunk:
                raise RuntimeError(f"the child ended before its line ({got!r})")
            got += chunk
        inner = time.perf_counter() - t0
        print(json.dumps({"inner_s": inner, "seq": json.loads(got)["seq"]}), flush=True)
        await proc.stdin.aclose()  # the child's end of input: it exits
    except BaseException:
        proc.kill()
        raise
    finally:
        await proc.wait()  # reaped in every case


if __name__ == "__main__":
    trio.run(main)
