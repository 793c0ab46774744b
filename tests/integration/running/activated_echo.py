"""An unmodified echo server that takes its listening socket by systemd's socket-activation
convention, as any such program does: a command under a supervisor runs it."""

from __future__ import annotations

import os
import socket
import sys
import threading


def serve(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)


def main() -> int:
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        print("not socket-activated: LISTEN_PID is not mine", file=sys.stderr)
        return 2
    names = os.environ["LISTEN_FDNAMES"].split(":")
    if int(os.environ["LISTEN_FDS"]) != 1 or len(names) != 1:
        print("expected one socket", file=sys.stderr)
        return 2
    server = socket.socket(fileno=3)  # blocking, as systemd passes it
    print(f"serving {names[0]} on port {server.getsockname()[1]}", flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
