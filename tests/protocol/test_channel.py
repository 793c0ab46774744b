"""Channels over real Unix socketpairs: framing, batching, fd passing and every failure."""

from __future__ import annotations

import os
import random
import socket
import struct
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from protocol import (
    HEADER_SIZE,
    MAX_FDS_PER_FRAME,
    Channel,
    DecodeError,
    FdHandle,
    Frame,
    FrameKind,
    FrameTooLarge,
    Message,
    ProtocolError,
    TruncatedHandles,
    UnexpectedHandles,
    decode_message,
    encode_frame,
    encode_message,
    open_channel,
)
from tests.leaks import open_fds
from tests.sockets import socketpair

pytestmark = pytest.mark.usefixtures("no_fd_leak")

HEADER = struct.Struct("<IBBHHHQ")
FILLER_CORR = (1 << 64) - 1


class Greeting(Message):
    text: str
    n: int


class Carrier(Message):
    fds: list[FdHandle]


@asynccontextmanager
async def channels(**options: int) -> AsyncIterator[tuple[Channel, Channel]]:
    """Two channels, one on each end of a socketpair."""
    a, b = socketpair()
    async with open_channel(a, **options) as left, open_channel(b, **options) as right:
        yield left, right


@asynccontextmanager
async def channel_and_raw(**options: int) -> AsyncIterator[tuple[Channel, socket.socket]]:
    """A channel and the plain (blocking) socket at the other end, to misbehave with."""
    a, b = socketpair()
    with b:
        async with open_channel(a, **options) as channel:
            yield channel, b


@pytest.fixture
def pipes() -> Iterator[Callable[[], tuple[int, int]]]:
    """Make pipes that are closed at the end of the test."""
    made: list[int] = []

    def make() -> tuple[int, int]:
        r, w = os.pipe()
        made.extend((r, w))
        return r, w

    yield make
    for fd in made:
        os.close(fd)


def frame(corr: int = 0, body: bytes = b"{}", nfds: int = 0) -> bytes:
    return encode_frame(FrameKind.TELL, b"t", body, corr=corr, nfds=nfds)


def inode(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def close_fds(frames: list[Frame]) -> None:
    for received in frames:
        for fd in received.fds:
            os.close(fd)
        received.fds = []


async def receive(channel: Channel, count: int) -> list[Frame]:
    """Exactly ``count`` frames (fails if more arrive in the last batch)."""
    frames: list[Frame] = []
    while len(frames) < count:
        frames.extend(await channel.receive_some())
    assert len(frames) == count
    return frames


def fill(channel: Channel) -> int:
    """Send filler frames until the socket is full and frames queue; returns how many."""
    count = 0
    while True:
        count += 1
        if channel.send_nowait(frame(FILLER_CORR, b"f" * 1000)) > 0:
            return count


def queued_fds(channel: Channel) -> int:
    return sum(len(group) for _, group in channel._out_fds)


def send_fds_raw(sock: socket.socket, data: bytes, fds: list[int]) -> None:
    sent = socket.send_fds(sock, [data], fds)
    assert sent == len(data)


def first_skb_size() -> int:
    """How many bytes a Unix stream socket delivers with the fds of one large sendmsg.

    The kernel splits a write into buffers and attaches the fds to the first; a read stops
    at the end of a buffer that carried fds.
    """
    a, b = socketpair()
    r, w = os.pipe()
    try:
        a.setblocking(False)
        socket.send_fds(a, [b"x" * (1 << 20)], [r])
        data, fds, _, _ = socket.recv_fds(b, 1 << 20, 1)
        for fd in fds:
            os.close(fd)
        return len(data)
    finally:
        for fd in (r, w):
            os.close(fd)
        a.close()
        b.close()


# -- frames ---------------------------------------------------------------------------------


async def test_round_trip_both_ways() -> None:
    async with channels() as (left, right):
        data, fds = encode_message(FrameKind.ASK, Greeting(text="héllo ✓", n=1), corr=7, route="x")
        await left.send(data, fds)
        [got] = await right.receive_some()
        assert (got.kind, got.corr, got.route, got.fds) == (FrameKind.ASK, 7, "x", [])
        assert decode_message(got) == Greeting(text="héllo ✓", n=1)

        data, _ = encode_message(FrameKind.REPLY, Greeting(text="back", n=2), corr=7)
        await right.send(data)
        [got] = await left.receive_some()
        assert got.kind == FrameKind.REPLY
        assert decode_message(got) == Greeting(text="back", n=2)


@pytest.mark.parametrize("concurrent", [False, True], ids=["send-then-read", "concurrent"])
async def test_ten_thousand_small_frames_arrive_in_order(concurrent: bool) -> None:
    count = 10_000
    async with channels() as (left, right):
        outgoing = [frame(i, b'{"i":%d}' % i) for i in range(count)]

        async def sender() -> None:
            for data in outgoing:
                await left.send(data)

        batches: list[list[Frame]] = []
        async with trio.open_nursery() as nursery:
            if concurrent:
                nursery.start_soon(sender)
            else:
                await sender()  # fills the socket, the rest queues (well below 1 MiB)
                assert left.queued > 0
            received = 0
            while received < count:
                batch = await right.receive_some()
                assert batch
                batches.append(batch)
                received += len(batch)
        frames = [got for batch in batches for got in batch]
        assert [got.corr for got in frames] == list(range(count))
        assert [got.body for got in frames] == [b'{"i":%d}' % i for i in range(count)]
        # Reads decode many frames at once.
        assert len(batches) < count
        assert max(len(batch) for batch in batches) > 1
        if not concurrent:
            assert len(batches) < 20


async def test_send_without_a_reader_queues() -> None:
    async with channels() as (left, right):
        count = fill(left) + 10
        for i in range(10):
            assert left.send_nowait(frame(i)) > 0
        frames = await receive(right, count)
        assert [got.corr for got in frames[-10:]] == list(range(10))
        await left.flush()
        assert left.queued == 0


async def test_one_mib_frame() -> None:
    body = bytes(random.Random(1).randbytes(1 << 20))
    async with channels() as (left, right):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(left.send, frame(3, body))
            [got] = await receive(right, 1)
        assert got.corr == 3
        assert got.body == body
        # And the channel is still in step after it.
        await left.send(frame(4))
        [got] = await right.receive_some()
        assert got.corr == 4


async def test_frame_above_the_receivers_limit() -> None:
    a, b = socketpair()
    async with open_channel(a) as left, open_channel(b, max_frame_size=100) as right:
        assert right.max_frame_size == 100
        await left.send(frame(1, b"x" * 99))  # length 100
        await left.send(frame(2, b"x" * 100))  # length 101
        [got] = await right.receive_some()
        assert got.corr == 1
        with pytest.raises(FrameTooLarge) as info:
            await right.receive_some()
        assert (info.value.length, info.value.limit) == (101, 100)


# -- fd passing -----------------------------------------------------------------------------


async def test_three_fds_with_a_frame(pipes) -> None:
    made = [pipes() for _ in range(3)]
    async with channels() as (left, right):
        await left.send(frame(1, nfds=3), [w for _, w in made])
        [got] = await right.receive_some()
        assert got.nfds == 3
        assert len(got.fds) == 3
        try:
            for (r, w), fd in zip(made, got.fds, strict=True):
                assert fd not in (r, w)
                assert inode(fd) == inode(w)
                os.write(fd, b"through %d" % fd)
                assert os.read(r, 100) == b"through %d" % fd
        finally:
            close_fds([got])


async def test_fds_of_a_queued_frame_are_duplicated(pipes, fd_count) -> None:
    r, w = pipes()
    async with channels() as (left, right):
        fillers = fill(left)
        before = fd_count()
        mine = os.dup(w)
        await left.send(frame(1, nfds=1), [mine])
        os.close(mine)  # the caller may close its own at once
        assert fd_count() == before + 1  # the channel's copy
        frames = await receive(right, fillers + 1)
        [got] = frames[fillers:]
        try:
            os.write(got.fds[0], b"x")
            assert os.read(r, 1) == b"x"
        finally:
            close_fds(frames)
        await left.flush()
        assert fd_count() == before  # the channel's copy is closed once sent


@pytest.mark.parametrize("seed", range(4))
async def test_many_fd_frames_queued_behind_a_full_socket(pipes, seed: int) -> None:
    rng = random.Random(seed)
    pool = [pipes() for _ in range(40)]
    fds = [fd for pair in pool for fd in pair]
    async with channels() as (left, right):
        fillers = fill(left)
        expected: list[tuple[int, list[tuple[int, int]]]] = []
        for corr in range(300):
            if rng.random() < 0.3:
                # Frames without fds of all sizes between the ones with fds.
                body = b"b" * rng.choice([0, 1, 100, 4000, 40_000, rng.randrange(70_000)])
                # send_nowait: never waits for the reader, however much is queued.
                left.send_nowait(frame(corr, body))
                expected.append((corr, []))
            else:
                group = rng.sample(fds, rng.randint(1, 4))
                left.send_nowait(frame(corr, b"{}", nfds=len(group)), group)
                expected.append((corr, [inode(fd) for fd in group]))
        # The writer has far more fds queued than one sendmsg may carry.
        assert queued_fds(left) > 2 * MAX_FDS_PER_FRAME
        assert left.queued > 0

        frames = await receive(right, fillers + len(expected))
        try:
            assert all(got.corr == FILLER_CORR for got in frames[:fillers])
            for got, (corr, inodes) in zip(frames[fillers:], expected, strict=True):
                assert got.corr == corr
                assert got.nfds == len(inodes) == len(got.fds)
                assert [inode(fd) for fd in got.fds] == inodes
                assert not set(got.fds) & set(fds)
        finally:
            close_fds(frames)
        await left.flush()
        assert queued_fds(left) == 0


async def test_fds_are_not_sent_ahead_of_their_frame(pipes) -> None:
    """A frame with fds queued right behind one that fills the kernel's first buffer.

    The kernel hands the fds of a write to the read that takes its first buffer and ends
    that read there. Were the fds of a later frame written along with the frame before it,
    the reader would see fds and no frame to claim them (UnexpectedHandles).
    """
    skb = first_skb_size()
    _, w = pipes()
    a, b = socketpair()
    async with open_channel(a) as left, open_channel(b) as right:
        # Fill the socket with whole frames, so that what queues starts on a frame boundary.
        fillers = 0
        remainder = b""
        filler = frame(FILLER_CORR, b"f" * 100)
        while not remainder:
            try:
                sent = a.send(filler)
            except BlockingIOError:
                break
            fillers += 1
            remainder = filler[sent:]
        if remainder:
            assert left.send_nowait(remainder) > 0
        big = frame(1, b"b" * (skb - len(remainder) - HEADER_SIZE - 1))
        assert len(remainder) + len(big) == skb
        assert left.send_nowait(big) > 0
        assert left.send_nowait(frame(2, nfds=1), [w]) > 0

        frames = await receive(right, fillers + 2)
        try:
            assert [got.corr for got in frames[-2:]] == [1, 2]
            assert inode(frames[-1].fds[0]) == inode(w)
        finally:
            close_fds(frames)


async def test_send_with_more_fds_than_announced_frames_fails_on_the_reader(pipes) -> None:
    r, _ = pipes()
    async with channels() as (left, right):
        await left.send(frame(1), [r])  # the header announces none
        [got] = await right.receive_some()
        assert got.fds == []
        with pytest.raises(UnexpectedHandles):
            await right.receive_some()


# -- misbehaving peers ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("garbage", "error"),
    [
        (b"garbage!" * 8, FrameTooLarge),
        (HEADER.pack(2, 0x99, 0, 1, 0, 0, 0) + b"t!", DecodeError),
        (HEADER.pack(2, 1, 0, 1, 0, 7, 0) + b"t!", DecodeError),
        (encode_frame(FrameKind.TELL, b"\xff", b"{}"), DecodeError),
    ],
)
async def test_garbage_fails_the_channel_for_good(garbage: bytes, error: type) -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(garbage)
        with pytest.raises(error) as info:
            await channel.receive_some()
        assert isinstance(info.value, ProtocolError)
        # The stream has lost its framing: every later call fails the same way, even when
        # valid frames follow.
        raw.sendall(frame(1))
        for _ in range(3):
            with pytest.raises(error):
                await channel.receive_some()


async def test_4gib_length_is_refused() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(HEADER.pack(0xFFFFFFFF, FrameKind.TELL, 0, 0, 0, 0, 0))
        with pytest.raises(FrameTooLarge) as info:
            await channel.receive_some()
        assert info.value.length == 0xFFFFFFFF
        assert channel._decoder.buffered == HEADER_SIZE


async def test_frames_before_garbage_are_returned_first() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(frame(1) + frame(2) + HEADER.pack(0xFFFFFFFF, 1, 0, 0, 0, 0, 0))
        frames = await channel.receive_some()
        assert [got.corr for got in frames] == [1, 2]
        with pytest.raises(FrameTooLarge):
            await channel.receive_some()


async def test_truncated_frame_then_eof() -> None:
    async with channel_and_raw() as (channel, raw):
        data = frame(1, b"x" * 100)
        raw.sendall(data[:-5])
        raw.shutdown(socket.SHUT_WR)
        with pytest.raises(DecodeError, match="truncated") as info:
            await channel.receive_some()
        assert str(len(data) - 5) in str(info.value)
        with pytest.raises(DecodeError, match="truncated"):
            await channel.receive_some()


async def test_truncated_header_then_eof() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(frame(1) + frame(2)[:7])
        raw.close()
        [got] = await channel.receive_some()
        assert got.corr == 1
        with pytest.raises(DecodeError, match="truncated"):
            await channel.receive_some()


async def test_fds_no_frame_claims(pipes, fd_count) -> None:
    r, w = pipes()
    async with channel_and_raw() as (channel, raw):
        before = fd_count()
        send_fds_raw(raw, frame(1), [r, w])  # a complete frame that announces no fds
        [got] = await channel.receive_some()
        assert got.corr == 1
        assert got.fds == []
        # The fds that came with it were closed at once.
        assert fd_count() == before
        with pytest.raises(UnexpectedHandles):
            await channel.receive_some()
        with pytest.raises(UnexpectedHandles):
            await channel.receive_some()
        assert fd_count() == before


async def test_fds_then_eof_without_their_frame(pipes, fd_count) -> None:
    r, _ = pipes()
    async with channel_and_raw() as (channel, raw):
        before = fd_count()
        data = frame(1, nfds=1)
        send_fds_raw(raw, data[:10], [r])  # the frame starts, its fds come with it...
        raw.shutdown(socket.SHUT_WR)  # ...and it never ends
        with pytest.raises(DecodeError, match="truncated"):
            await channel.receive_some()
        assert fd_count() == before


async def test_frame_announcing_more_fds_than_came(pipes, fd_count) -> None:
    r, _ = pipes()
    async with channel_and_raw() as (channel, raw):
        before = fd_count()
        send_fds_raw(raw, frame(1, nfds=2), [r])
        with pytest.raises(TruncatedHandles, match="announced 2 fds, 1 arrived"):
            await channel.receive_some()
        assert fd_count() == before
        with pytest.raises(TruncatedHandles):
            await channel.receive_some()


async def test_frame_announcing_fds_that_never_came() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(frame(1) + frame(2, nfds=1))
        [got] = await channel.receive_some()
        assert got.corr == 1
        with pytest.raises(TruncatedHandles):
            await channel.receive_some()


async def test_fds_the_kernel_drops_fail_only_their_frame(pipes, fd_count) -> None:
    # A receiver at its fd limit gets MSG_CTRUNC: the frame whose fds were dropped fails to
    # decode (TruncatedHandles); the channel and the frames after it are fine.
    import resource

    r, w = pipes()
    async with channels() as (left, right):
        before = fd_count()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        data, fds = encode_message(FrameKind.TELL, Carrier(fds=[FdHandle(r), FdHandle(w)]))
        await left.send(data, fds)
        await left.send(frame(2))
        await trio.testing.wait_all_tasks_blocked()
        taken = open_fds()
        lowest_free = next(fd for fd in range(len(taken) + 1) if fd not in taken)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))  # no new fd fits
        try:
            got = await receive(right, 2)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert got[0].nfds == 2
        assert len(got[0].fds) < 2
        with pytest.raises(TruncatedHandles, match="dropped by the kernel"):
            decode_message(got[0])
        assert got[1].corr == 2
        await left.send(frame(3))  # the channel carries on
        [after] = await right.receive_some()
        assert after.corr == 3
        assert fd_count() == before


# -- end of the stream ----------------------------------------------------------------------


async def test_clean_eof() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.sendall(frame(1))
        raw.shutdown(socket.SHUT_WR)
        [got] = await channel.receive_some()
        assert got.corr == 1
        for _ in range(2):
            with pytest.raises(trio.EndOfChannel):
                await channel.receive_some()


async def test_send_eof_after_flush() -> None:
    async with channels() as (left, right):
        fillers = fill(left)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive, right, fillers)
            await left.flush()
            assert left.queued == 0
        left.send_eof()
        with pytest.raises(trio.EndOfChannel):
            await right.receive_some()
        # Only the writing side of left is shut: right can still answer.
        await right.send(frame(9))
        [got] = await left.receive_some()
        assert got.corr == 9


async def test_send_to_a_closed_peer_breaks() -> None:
    async with channel_and_raw() as (channel, raw):
        raw.close()
        with pytest.raises(trio.BrokenResourceError):  # noqa: PT012
            for _ in range(1000):
                await channel.send(frame(1, b"x" * 1000))
        # And it stays broken.
        with pytest.raises(trio.BrokenResourceError):
            await channel.send(frame(2))
        with pytest.raises(trio.BrokenResourceError):
            await channel.flush()


async def test_peer_closing_with_frames_queued_breaks_the_writer(pipes, fd_count) -> None:
    r, w = pipes()
    async with channel_and_raw() as (channel, raw):
        fill(channel)
        before = fd_count()
        for i in range(20):
            await channel.send(frame(i, nfds=2), [r, w])
        assert fd_count() == before + 40  # the channel's copies of the queued fds
        raw.close()
        with pytest.raises(trio.BrokenResourceError):
            await channel.flush()
        assert fd_count() == before - 1  # the copies dropped with the queue, and raw closed
        with pytest.raises(trio.BrokenResourceError):
            await channel.send(frame(1))


async def test_peer_channel_closing_is_end_of_channel() -> None:
    a, b = socketpair()
    async with open_channel(a) as left:
        async with open_channel(b) as right:
            await right.send(frame(1))
            await right.flush()
        [got] = await left.receive_some()
        assert got.corr == 1
        with pytest.raises(trio.EndOfChannel):
            await left.receive_some()
        with pytest.raises(trio.BrokenResourceError):  # noqa: PT012
            for _ in range(1000):
                await left.send(frame(2))


# -- the channel object ---------------------------------------------------------------------


async def test_closed_channel_refuses_everything() -> None:
    async with channels() as (left, _right):
        left.close()
        left.close()  # idempotent
        assert left.closed
        with pytest.raises(trio.ClosedResourceError):
            await left.send(frame(1))
        with pytest.raises(trio.ClosedResourceError):
            await left.receive_some()


async def test_closing_drops_queued_fds(pipes, fd_count) -> None:
    r, w = pipes()
    async with channels() as (left, _right):
        fill(left)
        before = fd_count()
        await left.send(frame(1, nfds=2), [r, w])
        assert fd_count() == before + 2
        left.close()
        assert fd_count() == before - 1  # and the socket itself


async def test_one_receiver_at_a_time() -> None:
    async with channels() as (left, right), trio.open_nursery() as nursery:
        nursery.start_soon(right.receive_some)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await right.receive_some()
        await left.send(frame(1))


async def test_cancelled_receive_leaves_the_channel_usable() -> None:
    async with channels() as (left, right):
        with trio.CancelScope() as scope:
            scope.cancel()
            await right.receive_some()
        assert scope.cancelled_caught
        async with trio.open_nursery() as nursery:
            nursery.start_soon(right.receive_some)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
        await left.send(frame(1))
        [got] = await right.receive_some()
        assert got.corr == 1


def test_channel_needs_a_unix_stream_socket() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, pytest.raises(ValueError, match="AF_UNIX SOCK_STREAM"):
        Channel(a)


async def test_fileno_is_the_sockets() -> None:
    a, b = socketpair()
    fileno = a.fileno()
    async with open_channel(a) as left, open_channel(b):
        assert left.fileno() == fileno
    assert a.fileno() == -1  # the channel closed it
