"""A framed duplex channel over a connected Unix stream socket, with fd passing.

This is the only module of ``protocol`` that does I/O (with trio). Writes go straight to the
socket while it has room; once the kernel buffer is full, frames queue up and a writer task
sends everything queued in one ``sendmsg`` (coalescing), so a burst of small frames costs few
system calls. The writer tries the write first and waits for the socket only when the kernel
says it is full (a trip through trio's I/O loop costs more than a write that fails). Reads
take everything available in one ``recvmsg`` and decode every frame in it.
"""

from __future__ import annotations

import array
import os
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Final

import trio

from ._errors import DecodeError, ProtocolError, TruncatedHandles, UnexpectedHandles
from ._frame import DEFAULT_MAX_FRAME_SIZE, MAX_FDS_PER_FRAME, Frame, FrameDecoder

__all__ = ["Channel", "open_channel"]

_RECV_SIZE: Final = 256 * 1024
_MSG_CTRUNC: Final = int(socket.MSG_CTRUNC)  # a plain int: IntFlag arithmetic is slow
_FD_SIZE: Final = array.array("i").itemsize
_ANC_SPACE: Final = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * _FD_SIZE)
# fds received but not yet claimed by a complete frame; more than this is a flood.
_MAX_PENDING_FDS: Final = 4 * MAX_FDS_PER_FRAME
_HIGH_WATER: Final = 1024 * 1024
_LOW_WATER: Final = 256 * 1024


class Channel:
    """Frames with fds over a connected ``AF_UNIX``/``SOCK_STREAM`` socket.

    Create it with :func:`open_channel`, which runs its writer task and closes it.

    - :meth:`send` queues a frame; it returns once the frame is written to the socket or
      queued behind others (waiting only while more than 1 MiB is queued). The fds given are
      duplicated if the frame has to queue, so the caller may close its own at once.
    - :meth:`receive_some` returns the frames decoded from one read, each with its fds.
    - A peer that disconnects makes :meth:`send` raise :class:`trio.BrokenResourceError` and
      :meth:`receive_some` raise :class:`trio.EndOfChannel` (clean) or a
      :class:`ProtocolError` (mid-frame, or with stray fds). Any :class:`ProtocolError`
      closes the receiving side for good, and every fd received and not handed out is closed.
    - Fds the kernel drops on the way in (``MSG_CTRUNC``: this process is at its fd limit)
      fail only the frame they came with: it arrives with fewer ``fds`` than its ``nfds``,
      and decoding it raises :class:`TruncatedHandles`; the channel carries on.
    """

    def __init__(
        self, sock: socket.socket, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
    ) -> None:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise ValueError("a Channel needs a connected AF_UNIX SOCK_STREAM socket")
        sock.setblocking(False)
        self._sock = sock
        self._decoder = FrameDecoder(max_frame_size)
        self._fifo: deque[int] = deque()
        self._ready: list[Frame] = []
        self._recv_error: BaseException | None = None
        self._receiving = False
        self._short = False  # the kernel dropped fds of the next frame that has some
        self._out = bytearray()
        self._out_base = 0  # stream offset of self._out[0]
        # (stream offset of the frame, duplicates of its fds) for queued frames with fds; the
        # channel owns the duplicates until they are sent.
        self._out_fds: deque[tuple[int, list[int]]] = deque()
        self._send_error: BaseException | None = None
        self._wake_writer = trio.lowlevel.ParkingLot()
        self._drained = trio.lowlevel.ParkingLot()
        self._closed = False

    high_water: Final = _HIGH_WATER
    """Queued bytes past which producers should wait (see :meth:`wait_writable`)."""

    @property
    def max_frame_size(self) -> int:
        """Frames announcing more bytes than this are refused before they are buffered."""
        return self._decoder.max_frame_size

    @max_frame_size.setter
    def max_frame_size(self, value: int) -> None:
        if value < 0:
            raise ValueError("max_frame_size must be >= 0")
        self._decoder.max_frame_size = value

    @property
    def closed(self) -> bool:
        return self._closed

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- sending ----------------------------------------------------------------------------

    async def send(self, data: bytes, fds: Sequence[int] = ()) -> None:
        """Send one encoded frame (and the fds its header announces).

        Waits only while more than 1 MiB is queued behind a full socket (backpressure).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.send_nowait(data, fds) > _HIGH_WATER:
            await self.wait_writable()
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def send_nowait(self, data: bytes, fds: Sequence[int] = (), *, defer: bool = False) -> int:
        """Send or queue one frame without waiting; returns the bytes left queued.

        With ``defer``, a frame without fds is only queued: the writer task sends everything
        queued in one write once the sending task lets it run. Bursts of one-way messages
        then cost one system call per burst; a request that waits for an answer should not
        defer. Nothing here bounds the queue: callers that can produce without bound
        (``send``, ``tell``) wait when it passes the high-water mark.
        """
        self._check_sendable()
        if not self._out and not (defer and not fds):
            try:
                sent = self._sock.sendmsg([data], [_rights(fds)]) if fds else self._sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._broken(exc)
                raise trio.BrokenResourceError(f"channel peer is gone: {exc}") from exc
            if sent == len(data):
                return 0
            # The kernel took part of the frame (and all of its fds, if it took any byte).
            self._out_base += sent
            if sent == 0 and fds:
                self._out_fds.append((self._out_base, [os.dup(fd) for fd in fds]))
            self._out += memoryview(data)[sent:]
        else:
            if fds:
                offset = self._out_base + len(self._out)
                self._out_fds.append((offset, [os.dup(fd) for fd in fds]))
            self._out += data
        if self._wake_writer:
            self._wake_writer.unpark_all()
        return len(self._out)

    @property
    def queued(self) -> int:
        """Bytes waiting for the writer task."""
        return len(self._out)

    async def wait_writable(self) -> None:
        """Wait until the queue is below the low-water mark (backpressure for producers)."""
        while len(self._out) > _LOW_WATER and self._send_error is None:
            await self._drained.park()
        self._check_sendable()

    async def flush(self) -> None:
        """Wait until every frame sent so far is written to the socket."""
        while self._out and self._send_error is None:
            await self._drained.park()
        self._check_sendable()
        await trio.lowlevel.checkpoint()

    def _check_sendable(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("channel is closed")
        if self._send_error is not None:
            raise trio.BrokenResourceError(
                f"channel peer is gone: {self._send_error}"
            ) from self._send_error

    def _broken(self, exc: BaseException) -> None:
        if self._send_error is None:
            self._send_error = exc
        self._drop_queued()
        self._drained.unpark_all()

    def _drop_queued(self) -> None:
        self._out.clear()
        for _, fds in self._out_fds:
            _close_all(fds)
        self._out_fds.clear()

    async def _writer(self) -> None:
        sock = self._sock
        full = False  # the last write found the socket full: wait for room first
        while True:
            while not self._out:
                await self._wake_writer.park()
            if full:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except trio.ClosedResourceError:
                    return
            if self._closed:
                return
            # The kernel attaches the fds of a sendmsg to its first buffer (36 KiB or so, not
            # the whole write), and the peer's read that takes them stops at that buffer's
            # end. The reader needs each frame's fds in the read that brings the frame's first
            # byte, no earlier (a complete read with fds left over is UnexpectedHandles), no
            # later (TruncatedHandles). So a write carries the fds of one frame only, and
            # starts with that frame; bytes before it go in a write of their own.
            limit = min(len(self._out), 4 * _HIGH_WATER)
            groups = 0
            fds: list[int] = []
            if self._out_fds:
                offset, group = self._out_fds[0]
                if offset > self._out_base:
                    limit = min(limit, offset - self._out_base)
                else:
                    fds = group
                    groups = 1
                    if len(self._out_fds) > 1:
                        limit = min(limit, self._out_fds[1][0] - self._out_base)
            chunk = memoryview(self._out)[:limit]
            try:
                try:
                    sent = sock.sendmsg([chunk], [_rights(fds)]) if fds else sock.send(chunk)
                finally:
                    chunk.release()
            except BlockingIOError:
                full = True
                continue
            except OSError as exc:
                self._broken(exc)
                return
            full = sent < limit
            del self._out[:sent]
            self._out_base += sent
            for _ in range(groups):
                _close_all(self._out_fds.popleft()[1])
            if len(self._out) <= _LOW_WATER:
                self._drained.unpark_all()

    # -- receiving --------------------------------------------------------------------------

    async def receive_some(self) -> list[Frame]:
        """The next frames, at least one; see the class docstring for the errors."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            waited = False
            while not self._ready:
                if self._recv_error is not None:
                    raise self._recv_error
                if self._closed:
                    raise trio.ClosedResourceError("channel is closed")
                try:
                    data, ancdata, flags, _ = self._sock.recvmsg(
                        _RECV_SIZE, _ANC_SPACE, socket.MSG_CMSG_CLOEXEC
                    )
                except BlockingIOError:
                    await trio.lowlevel.wait_readable(self._sock)
                    waited = True
                    continue
                except OSError as exc:
                    self._fail(trio.BrokenResourceError(f"channel read failed: {exc}"))
                    continue
                self._absorb(data, ancdata, flags)
            frames, self._ready = self._ready, []
            if not waited:  # waiting was the checkpoint; otherwise make one
                await trio.lowlevel.cancel_shielded_checkpoint()
            return frames
        finally:
            self._receiving = False

    def _absorb(self, data: bytes, ancdata: list[tuple[int, int, bytes]], flags: int) -> None:
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                received = array.array("i")
                received.frombytes(payload[: len(payload) - len(payload) % _FD_SIZE])
                self._fifo.extend(received)
        if flags & _MSG_CTRUNC:
            # The kernel dropped fds (this process is at its fd limit): the stream itself is
            # intact, so only the frame those fds belonged to fails (see decode_message).
            self._short = True
        if not data:
            if self._decoder.buffered:
                self._fail(DecodeError(
                    f"truncated frame: the peer closed the channel with {self._decoder.buffered}"
                    " bytes of an incomplete frame"
                ))
            elif self._fifo:
                self._fail(UnexpectedHandles(f"{len(self._fifo)} fds arrived with no frame"))
            else:
                self._fail(trio.EndOfChannel())
            return
        self._decoder.feed(data)
        try:
            for frame in self._decoder.frames():
                if frame.nfds:
                    if len(self._fifo) < frame.nfds and not self._short:
                        raise TruncatedHandles(
                            f"frame announced {frame.nfds} fds, {len(self._fifo)} arrived"
                        )
                    count = min(frame.nfds, len(self._fifo))
                    frame.fds = [self._fifo.popleft() for _ in range(count)]
                    self._short = False
                self._ready.append(frame)
            self._decoder.frames()  # raises the error a frame returned above was ahead of
            if self._fifo and not self._decoder.buffered:
                raise UnexpectedHandles(f"{len(self._fifo)} fds arrived that no frame claims")
            if len(self._fifo) > _MAX_PENDING_FDS:
                raise UnexpectedHandles(f"{len(self._fifo)} fds arrived ahead of their frames")
        except ProtocolError as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        """Stop receiving for good: frames decoded so far are still returned first."""
        if self._recv_error is None:
            self._recv_error = exc
        _close_all(self._fifo)
        self._fifo.clear()

    # -- closing ----------------------------------------------------------------------------

    def send_eof(self) -> None:
        """Shut down the writing side once queued frames are out (call after :meth:`flush`)."""
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket now; queued frames are dropped, held fds closed."""
        if self._closed:
            return
        self._closed = True
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()
        self._drop_queued()
        _close_all(self._fifo)
        self._fifo.clear()
        for frame in self._ready:
            frame.close_fds()
        self._ready.clear()
        self._wake_writer.unpark_all()
        self._drained.unpark_all()


def _rights(fds: Sequence[int]) -> tuple[int, int, bytes]:
    return (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())


def _close_all(fds: list[int] | deque[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
    if isinstance(fds, list):
        fds.clear()


@asynccontextmanager
async def open_channel(
    sock: socket.socket, *, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE
) -> AsyncIterator[Channel]:
    """Run a :class:`Channel` over ``sock`` (which it owns and closes on exit)."""
    channel = Channel(sock, max_frame_size=max_frame_size)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(channel._writer)
            try:
                yield channel
            finally:
                nursery.cancel_scope.cancel()
    finally:
        channel.close()
