"""Shared-state benchmark: reads, change notification and compare_and_set, against anchors.

Usage::

    python benchmarks/state.py [--quick] [--json] [--parts get,latency,cas] [--rounds R]
                               [--seconds S] [--puts P] [--gap-ms G] [--increments K]

Three parts, each measured side by side with its anchors in one run (a throwaway
redis-server on a free loopback port serves the Redis figures; without redis-server they
read ``redis-server: not found``):

get       a ``ctx.state.get`` of a hot key (already in the worker's replica), in a loop
          inside a worker process, against a plain dict lookup in the same worker, a
          coredis ``GET`` of the same value from the same worker, and reads of a
          ``multiprocessing.Manager().dict()`` proxy from a child process (the same loop);
latency   put-to-every-worker: the master puts a value every G ms (P timed puts) and N
          workers (2, 8) watch the key; a put's latency is the time until the LAST of the N
          workers saw it (or a later version), as p50 / p99 over the puts of all rounds.
          For the memory store and Redis; the anchor is the seeds' approach: N workers each
          polling Redis with a coredis ``GET`` every 100 ms;
cas       4 worker processes each do K ``compare_and_set`` increments of one counter
          (re-reading and retrying when another write came first), for the memory, SQLite
          (a temporary file) and Redis stores: increments/s, retries, and the final count,
          which must be exactly 4 * K.

Timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC: the same clock in every process of
the machine). Rounds are interleaved (round 1 of every configuration, then round 2, ...);
rates are the MEDIAN over the rounds, with "±" half the min-max range relative to it.
The exit status is 1 if a configuration failed or a correctness check did not hold (a wrong
value read, a watcher seeing versions out of order or not seeing the last put, a final count
that is not 4 * K).

The Actor and Message classes live at module top level, and the entry point is guarded by
``if __name__ == "__main__"``: the runtime's workers (and multiprocessing's spawn children)
import this file under another module name.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import trio

# Wherever this runs from (or as `python -m benchmarks.state`), `_harness` is next to it.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # also puts the repository root on sys.path, for `actors`
    Outcome,
    Verdict,
    arguments,
    chosen,
    describe,
    interleave,
    machine,
    machine_line,
    median,
    percentile,
    progress,
    ratio,
    spread,
    times,
    with_spread,
)

from actors import Actor, StateChanged, StateResynced, handler, open_system
from protocol import Message
from tests.redis_server import RedisServer

try:
    import coredis
except ImportError:  # the Redis figures say so
    coredis = None  # type: ignore[assignment]

T = TypeVar("T")
PARTS = ("get", "latency", "cas")
PAYLOAD = "0123456789abcdef"
HOT_KEY = "bench/hot"
TICK_KEY = "bench/tick"
POLL_PERIOD_S = 0.100  # the seeds' polling anchor: a GET every 100 ms
CAS_WORKERS = 4
WATCHERS = (2, 8)
BATCH = 1_000  # operations between two looks at the clock in a timed loop

# Targets (printed, with met / NOT met)
TARGET_GET_VS_MANAGER = 50.0
TARGET_P99_MEMORY_MS = 5.0
TARGET_P99_REDIS_MS = 10.0
TARGET_VS_POLLING = 20.0

# --------------------------------------------------------------------------------------------
# Messages and actors (run in the worker processes)
# --------------------------------------------------------------------------------------------


class Hot(Message):
    seq: int
    payload: str


class Tick(Message):
    seq: int
    t_ns: int


class Counter(Message):
    value: int


class HotLoops(Message):
    key: str
    seconds: float
    redis_url: str | None = None
    redis_key: str = ""


class Loop(Message):
    n: int
    ns: int


class HotFigures(Message):
    get: Loop
    plain: Loop  # the dict lookup
    redis: Loop | None = None
    wrong: str | None = None  # a value read that is not the one put


class Follow(Message):
    key: str
    redis_url: str | None = None  # set: poll this Redis key instead of watching the state


class Following(Message):
    pass


class Collect(Message):
    last: int  # the seq of the last put
    timeout: float


class Collected(Message):
    seqs: list[int]
    seen_ns: list[int]
    resyncs: int
    disorder: int  # versions seen out of order
    polls: int = 0


class Prepare(Message):
    key: str


class Prepared(Message):
    pass


class Increment(Message):
    key: str
    times: int


class Incremented(Message):
    retries: int
    stale: int  # retries at the very version that had just failed: the replica was behind


async def _timed(step: Callable[[], Any], seconds: float) -> tuple[int, int, Any]:
    """Await ``step()`` in batches until ``seconds`` passed: (calls, ns, last result)."""
    n = 0
    result = None
    t0 = time.perf_counter_ns()
    deadline = t0 + int(seconds * 1e9)
    while True:
        for _ in range(BATCH):
            result = await step()
        n += BATCH
        now = time.perf_counter_ns()
        if now >= deadline:
            return n, now - t0, result


def _dict_loop(table: dict[str, Hot], key: str, seconds: float) -> tuple[int, int, Hot]:
    n = 0
    value = table[key]
    t0 = time.perf_counter_ns()
    deadline = t0 + int(seconds * 1e9)
    while True:
        for _ in range(BATCH):
            value = table[key]
        n += BATCH
        now = time.perf_counter_ns()
        if now >= deadline:
            return n, now - t0, value


class Reader(Actor):
    """The get part's worker: times the hot reads inside its own process."""

    @handler
    async def hot(self, msg: HotLoops) -> HotFigures:
        state = self.ctx.state
        expected = await state.get(msg.key, Hot)  # the first read subscribes: now it is held
        if expected is None:
            return HotFigures(get=Loop(n=0, ns=1), plain=Loop(n=0, ns=1), wrong="no value")
        wrong = None

        async def get() -> Hot | None:
            return await state.get(msg.key, Hot)

        await _timed(get, msg.seconds / 10)  # warm
        n, ns, last = await _timed(get, msg.seconds)
        if last != expected:
            wrong = f"state.get read {last!r}"
        got = Loop(n=n, ns=ns)

        table = {msg.key: expected, "other": expected}
        _dict_loop(table, msg.key, msg.seconds / 10)
        n, ns, _ = _dict_loop(table, msg.key, msg.seconds)
        plain = Loop(n=n, ns=ns)

        remote = None
        if msg.redis_url is not None and coredis is not None:
            body = expected.model_dump_json().encode()
            client = coredis.Redis.from_url(msg.redis_url)
            async with client:
                await client.set(msg.redis_key, body)

                async def redis_get() -> Any:
                    return await client.get(msg.redis_key)

                await _timed(redis_get, msg.seconds / 10)
                n, ns, raw = await _timed(redis_get, msg.seconds)
                if raw != body:
                    wrong = f"coredis GET read {raw!r}"
                remote = Loop(n=n, ns=ns)
        return HotFigures(get=got, plain=plain, redis=remote, wrong=wrong)


class Follower(Actor):
    """The latency part's worker: watches the key (or polls Redis), noting when it saw what."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self.seen_ns: list[int] = []
        self.resyncs = 0
        self.disorder = 0
        self.polls = 0
        self.changed = trio.Event()

    def _saw(self, seq: int, now: int) -> None:
        self.seqs.append(seq)
        self.seen_ns.append(now)
        self.changed.set()
        self.changed = trio.Event()

    @handler
    async def follow(self, msg: Follow) -> Following:
        ready = trio.Event()
        if msg.redis_url is None:
            self.ctx.start_soon(self._watch, msg.key, ready)
        else:
            self.ctx.start_soon(self._poll, msg.redis_url, msg.key, ready)
        await ready.wait()
        return Following()

    async def _watch(self, key: str, ready: trio.Event) -> None:
        version = 0
        async with self.ctx.state.watch(key) as changes:
            ready.set()
            async for change in changes:
                now = time.monotonic_ns()
                if isinstance(change, StateResynced):
                    self.resyncs += 1
                    continue
                assert isinstance(change, StateChanged)
                if change.version <= version:
                    self.disorder += 1
                version = change.version
                if isinstance(change.value, Tick):
                    self._saw(change.value.seq, now)

    async def _poll(self, url: str, key: str, ready: trio.Event) -> None:
        assert coredis is not None
        client = coredis.Redis.from_url(url)
        async with client:
            last: bytes | None = None
            await client.ping()
            ready.set()
            start = trio.current_time()
            while True:
                raw = await client.get(key)
                now = time.monotonic_ns()
                self.polls += 1
                if raw is not None and raw != last:
                    last = raw
                    self._saw(int(json.loads(raw)["seq"]), now)
                self.changed.set()  # Collect looks again after every poll
                self.changed = trio.Event()
                await trio.sleep_until(start + self.polls * POLL_PERIOD_S)

    @handler
    async def collect(self, msg: Collect) -> Collected:
        with trio.move_on_after(msg.timeout):
            while not self.seqs or max(self.seqs) < msg.last:
                await self.changed.wait()
        return Collected(
            seqs=self.seqs,
            seen_ns=self.seen_ns,
            resyncs=self.resyncs,
            disorder=self.disorder,
            polls=self.polls,
        )


class Incrementer(Actor):
    """The cas part's worker: increments a counter with compare_and_set, retrying."""

    @handler
    async def prepare(self, msg: Prepare) -> Prepared:
        await self.ctx.state.entry(msg.key, Counter)  # subscribes this process to the key
        return Prepared()

    @handler
    async def increment(self, msg: Increment) -> Incremented:
        state = self.ctx.state
        retries = stale = 0
        for _ in range(msg.times):
            failed = -1
            while True:
                entry = await state.entry(msg.key, Counter)
                current = 0 if entry is None else entry.value.value
                version = 0 if entry is None else entry.version
                if version == failed:
                    stale += 1
                written = await state.compare_and_set(
                    msg.key, Counter(value=current + 1), version=version
                )
                if written is not None:
                    break
                retries += 1
                failed = version
        return Incremented(retries=retries, stale=stale)


# --------------------------------------------------------------------------------------------
# Configuration, Redis
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    parts: tuple[str, ...]
    get_rounds: int
    seconds: float  # per timed read loop
    latency_rounds: int
    puts: int  # timed puts per latency round
    gap_ms: float  # between two puts
    cas_rounds: int
    increments: int  # K, per CAS worker
    timeout_s: float  # per configuration and round


WARM_PUTS = 10  # untimed puts before the timed ones, in every latency round


@contextlib.contextmanager
def redis_server() -> Iterator[str | None]:
    """A throwaway redis-server on a free loopback port (no persistence), the tests' own:
    its URL, or None when redis-server (or coredis) is missing. Stopped, and its directory
    removed, after."""
    if shutil.which("redis-server") is None or coredis is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as directory:
        server = RedisServer(Path(directory), durable=False)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def _store_url(store: str, redis_url: str | None, workdir: Path, tag: str) -> str | None:
    if store == "memory":
        return None
    if store == "sqlite":
        return f"sqlite:///{workdir / f'state-{tag}.db'}"
    assert redis_url is not None
    return f"{redis_url}?prefix=bench{os.getpid()}x{tag}"


def _trio(fn: Callable[..., Awaitable[T]], timeout: float, *args: Any) -> T:
    async def guarded() -> T:
        with trio.fail_after(timeout):
            return await fn(*args)

    return trio.run(guarded)


# --------------------------------------------------------------------------------------------
# Part 1: hot reads
# --------------------------------------------------------------------------------------------

GET_IMPLS = ("ours", "manager")
GET_ROWS = (
    ("get", "state.get, hot key (worker)"),
    ("dict", "dict lookup (same worker)"),
    ("redis", "coredis GET (same worker)"),
    ("manager", "Manager().dict() read (child)"),
)


async def _get_round(seconds: float, redis_url: str | None, tag: str) -> dict[str, float]:
    async with open_system(control=False) as system:
        value = Hot(seq=1, payload=PAYLOAD)
        await system.state.put(HOT_KEY, value)
        ref = await system.spawn(Reader, name="reader", process=True)
        figures = await ref.ask(
            HotLoops(
                key=HOT_KEY,
                seconds=seconds,
                redis_url=redis_url,
                redis_key=f"bench{os.getpid()}x{tag}:hot",
            ),
            HotFigures,
        )
    if figures.wrong is not None:
        raise Verdict(figures.wrong)
    out = {
        "get": figures.get.n / figures.get.ns * 1e9,
        "dict": figures.plain.n / figures.plain.ns * 1e9,
    }
    if figures.redis is not None:
        out["redis"] = figures.redis.n / figures.redis.ns * 1e9
    return out


def _manager_child(table: Any, key: str, seconds: float, conn: Connection) -> None:
    expected = table[key]
    for phase in (seconds / 10, seconds):  # warm, then timed
        n = 0
        value = None
        t0 = time.perf_counter_ns()
        deadline = t0 + int(phase * 1e9)
        while True:
            for _ in range(BATCH // 10):
                value = table[key]
            n += BATCH // 10
            now = time.perf_counter_ns()
            if now >= deadline:
                break
    conn.send((n, now - t0, value == expected))
    conn.close()


def _manager_round(seconds: float, timeout: float) -> dict[str, float]:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        table = manager.dict()
        table[HOT_KEY] = Hot(seq=1, payload=PAYLOAD).model_dump()
        ours, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(
            target=_manager_child,
            args=(table, HOT_KEY, seconds, theirs),
            name="state-manager-reader",
            daemon=True,
        )
        proc.start()
        theirs.close()
        try:
            if not ours.poll(timeout):
                raise TimeoutError(f"the Manager reader took longer than {timeout} s")
            n, ns, right = ours.recv()
        finally:
            ours.close()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()
    if not right:
        raise Verdict("the Manager reader read another value")
    return {"manager": n / ns * 1e9}


# --------------------------------------------------------------------------------------------
# Part 2: put-to-every-worker latency
# --------------------------------------------------------------------------------------------

LAT_IMPLS = tuple(f"{kind}/{n}" for kind in ("memory", "redis", "poll") for n in WATCHERS)
LAT_LABELS = {
    "memory": "ours, memory store",
    "redis": "ours, Redis store",
    "poll": "poll Redis / 100 ms",
}


@dataclass
class LatRound:
    latencies_ns: list[int]  # per timed put: until the last worker saw it (or a later one)
    put_ns: list[int]  # how long each timed put call took in the master
    resyncs: int
    polls: int


def _every_worker(starts: list[int], first: int, collected: Sequence[Collected]) -> list[int]:
    """Per put from ``first`` on: the time until every worker saw it, or a later version."""
    last = len(starts) - 1
    reached = [0] * len(starts)  # per put: when the slowest worker saw it
    for c in collected:
        if not c.seqs or max(c.seqs) < last:
            raise Verdict(f"a worker never saw the last put (it saw up to {max(c.seqs or [-1])})")
        # earliest[s] = the first time this worker saw seq s or a later one
        earliest = [0] * len(starts)
        by_seq = dict.fromkeys(range(len(starts)), 0)
        for seq, t in zip(c.seqs, c.seen_ns, strict=True):
            if 0 <= seq <= last and (not by_seq[seq] or t < by_seq[seq]):
                by_seq[seq] = t
        running = 0
        for s in range(last, -1, -1):
            if by_seq[s] and (not running or by_seq[s] < running):
                running = by_seq[s]
            earliest[s] = running
        for s in range(first, last + 1):
            reached[s] = max(reached[s], earliest[s])
    return [reached[s] - starts[s] for s in range(first, last + 1)]


async def _put_loop(put: Callable[[int, int], Any], cfg: Config) -> tuple[list[int], list[int]]:
    """Put WARM_PUTS + cfg.puts ticks, cfg.gap_ms apart: (start of each put, duration)."""
    total = WARM_PUTS + cfg.puts
    starts = [0] * total
    durations = [0] * total
    t0 = trio.current_time()
    for seq in range(total):
        await trio.sleep_until(t0 + seq * cfg.gap_ms / 1e3)
        start = time.monotonic_ns()
        await put(seq, start)
        starts[seq] = start
        durations[seq] = time.monotonic_ns() - start
    return starts, durations


async def _latency_round(
    kind: str, n: int, cfg: Config, url: str | None, redis_url: str | None, tag: str
) -> LatRound:
    async with open_system(store=url if kind != "poll" else None, control=False) as system:
        refs = [await system.spawn(Follower, name=f"f{i}", process=True) for i in range(n)]
        if kind == "poll":
            assert redis_url is not None
            assert coredis is not None
            raw_key = f"bench{os.getpid()}x{tag}:tick"
            client = coredis.Redis.from_url(redis_url)
            async with client:
                await client.set(raw_key, json.dumps({"seq": -1, "t_ns": 0}))

                async def put(seq: int, t: int) -> None:
                    await client.set(raw_key, json.dumps({"seq": seq, "t_ns": t}))

                for ref in refs:
                    await ref.ask(Follow(key=raw_key, redis_url=redis_url), Following)
                starts, durations = await _put_loop(put, cfg)
        else:
            state = system.state
            await state.put(TICK_KEY, Tick(seq=-1, t_ns=0))
            for ref in refs:
                await ref.ask(Follow(key=TICK_KEY), Following)

            async def put(seq: int, t: int) -> None:
                await state.put(TICK_KEY, Tick(seq=seq, t_ns=t))

            starts, durations = await _put_loop(put, cfg)
        last = len(starts) - 1
        collected = [await ref.ask(Collect(last=last, timeout=2.0), Collected) for ref in refs]
    for c in collected:
        if c.disorder:
            raise Verdict(f"a watcher saw {c.disorder} versions out of order")
    return LatRound(
        latencies_ns=_every_worker(starts, WARM_PUTS, collected),
        put_ns=durations[WARM_PUTS:],
        resyncs=sum(c.resyncs for c in collected),
        polls=sum(c.polls for c in collected),
    )


# --------------------------------------------------------------------------------------------
# Part 3: compare_and_set under contention
# --------------------------------------------------------------------------------------------

CAS_IMPLS = ("memory", "sqlite", "redis")


@dataclass
class CasRound:
    per_s: float
    retries: int
    stale: int
    final: int


async def _cas_round(url: str | None, k: int, tag: str) -> CasRound:
    key = f"bench/counter-{tag}"
    async with open_system(store=url, control=False) as system:
        refs = [
            await system.spawn(Incrementer, name=f"inc{i}", process=True)
            for i in range(CAS_WORKERS)
        ]
        for ref in refs:
            await ref.ask(Prepare(key=key), Prepared)
        done: list[Incremented] = []

        async def run(i: int) -> None:
            done.append(await refs[i].ask(Increment(key=key, times=k), Incremented))

        t0 = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(len(refs)):
                nursery.start_soon(run, i)
        seconds = time.perf_counter() - t0
        await system.state.sync()
        entry = await system.state.entry(key, Counter)
    final = 0 if entry is None else entry.value.value
    if entry is None or final != CAS_WORKERS * k or entry.version != CAS_WORKERS * k:
        raise Verdict(
            f"lost updates: the counter is {final} (version "
            f"{None if entry is None else entry.version}), expected {CAS_WORKERS * k}"
        )
    return CasRound(
        per_s=CAS_WORKERS * k / seconds,
        retries=sum(d.retries for d in done),
        stale=sum(d.stale for d in done),
        final=final,
    )


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Result(Outcome):
    rounds: list[Any] = field(default_factory=list)


def _not_found(result: Result) -> None:
    result.status, result.error = "unavailable", "redis-server (or coredis) not found"


def run_get(cfg: Config, redis_url: str | None, log: Callable[[str], None]) -> dict[str, Result]:
    results = {name: Result() for name in GET_IMPLS}

    def run(name: str, i: int) -> dict[str, float]:
        if name == "manager":
            return _manager_round(cfg.seconds, cfg.timeout_s)
        return _trio(_get_round, cfg.timeout_s, cfg.seconds, redis_url, f"g{i}")

    for i, name, figures, seconds in interleave(results, cfg.get_rounds, run, log):
        results[name].rounds.append(figures)
        shown = "  ".join(f"{k} {v:>12,.0f}/s" for k, v in figures.items())
        log(f"get round {i + 1}/{cfg.get_rounds} {name:>7}: {shown}  ({seconds:.1f} s)")
    return results


def run_latency(
    cfg: Config, redis_url: str | None, workdir: Path, log: Callable[[str], None]
) -> dict[str, Result]:
    results = {name: Result() for name in LAT_IMPLS}
    for name, result in results.items():
        if not name.startswith("memory") and redis_url is None:
            _not_found(result)

    def run(name: str, i: int) -> LatRound:
        kind, n = name.split("/")
        tag = f"l{i}{kind}{n}"
        url = _store_url(kind, redis_url, workdir, tag) if kind != "poll" else None
        timeout = cfg.timeout_s + (WARM_PUTS + cfg.puts) * cfg.gap_ms / 1e3
        return _trio(_latency_round, timeout, kind, int(n), cfg, url, redis_url, tag)

    for i, name, r, seconds in interleave(results, cfg.latency_rounds, run, log):
        results[name].rounds.append(r)
        lat = sorted(r.latencies_ns)
        log(
            f"latency round {i + 1}/{cfg.latency_rounds} {name:>8}: "
            f"p50 {percentile(lat, 50) / 1e6:7.2f} ms  p99 {percentile(lat, 99) / 1e6:7.2f} ms"
            f"  resyncs {r.resyncs}  ({seconds:.1f} s)"
        )
    return results


def run_cas(
    cfg: Config, redis_url: str | None, workdir: Path, log: Callable[[str], None]
) -> dict[str, Result]:
    results = {name: Result() for name in CAS_IMPLS}
    if redis_url is None:
        _not_found(results["redis"])

    def run(name: str, i: int) -> CasRound:
        tag = f"c{i}{name}"
        url = _store_url(name, redis_url, workdir, tag)
        return _trio(_cas_round, cfg.timeout_s, url, cfg.increments, tag)

    for i, name, r, seconds in interleave(results, cfg.cas_rounds, run, log):
        results[name].rounds.append(r)
        log(
            f"cas round {i + 1}/{cfg.cas_rounds} {name:>6}: {r.per_s:>8,.0f} increments/s  "
            f"retries {r.retries} (stale {r.stale})  final {r.final}  ({seconds:.1f} s)"
        )
    return results


# --------------------------------------------------------------------------------------------
# Summary and output
# --------------------------------------------------------------------------------------------


def get_summary(results: dict[str, Result]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for row, _ in GET_ROWS:
        impl = "manager" if row == "manager" else "ours"
        res = results.get(impl)
        values = [r[row] for r in res.rounds if row in r] if res else []
        med = median(values)
        out[row] = {
            "per_s": med,
            "ns": None if not med else 1e9 / med,
            "spread": spread(values, med),
        }
    return out


def latency_summary(results: dict[str, Result]) -> dict[str, dict[str, float | int | None]]:
    out: dict[str, dict[str, float | int | None]] = {}
    for name, res in results.items():
        lat = sorted(x for r in res.rounds for x in r.latencies_ns)
        puts = sorted(x for r in res.rounds for x in r.put_ns)
        out[name] = {
            "samples": len(lat),
            "p50_ms": percentile(lat, 50) / 1e6 if lat else None,
            "p99_ms": percentile(lat, 99) / 1e6 if lat else None,
            "max_ms": lat[-1] / 1e6 if lat else None,
            "put_p50_ms": percentile(puts, 50) / 1e6 if puts else None,
            "resyncs": sum(r.resyncs for r in res.rounds),
        }
    return out


def cas_summary(results: dict[str, Result], k: int) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name, res in results.items():
        rates = [r.per_s for r in res.rounds]
        retries = [float(r.retries) for r in res.rounds]
        stale = [float(r.stale) for r in res.rounds]
        med = median(rates)
        out[name] = {
            "per_s": med,
            "spread": spread(rates, med),
            "retries": median(retries),
            "retries_per_increment": ratio(median(retries), CAS_WORKERS * k),
            "stale_retries": median(stale),
        }
    return out


def ratios_and_targets(
    summary: dict[str, Any],
) -> tuple[dict[str, float | None], list[tuple[str, bool | None]]]:
    rs: dict[str, float | None] = {}
    targets: list[tuple[str, bool | None]] = []
    if "get" in summary:
        g = summary["get"]
        rs["get / Manager proxy read"] = ratio(g["get"]["per_s"], g["manager"]["per_s"])
        rs["get / coredis GET"] = ratio(g["get"]["per_s"], g["redis"]["per_s"])
        rs["get / dict lookup"] = ratio(g["get"]["per_s"], g["dict"]["per_s"])
        value = rs["get / Manager proxy read"]
        targets.append(
            (
                f"hot get >= {TARGET_GET_VS_MANAGER:.0f}x a Manager proxy read",
                None if value is None else value >= TARGET_GET_VS_MANAGER,
            )
        )
    if "latency" in summary:
        lat = summary["latency"]
        for n in WATCHERS:
            poll = lat.get(f"poll/{n}", {}).get("p99_ms")
            for kind in ("memory", "redis"):
                ours = lat.get(f"{kind}/{n}", {}).get("p99_ms")
                rs[f"poll p99 / {kind} p99, N={n}"] = ratio(poll, ours)
        for kind, limit in (("memory", TARGET_P99_MEMORY_MS), ("redis", TARGET_P99_REDIS_MS)):
            for n in WATCHERS:
                p99 = lat.get(f"{kind}/{n}", {}).get("p99_ms")
                targets.append(
                    (
                        f"{kind} put-to-every-worker p99 < {limit:g} ms, N={n}",
                        None if p99 is None else p99 < limit,
                    )
                )
        for n in WATCHERS:
            value = rs.get(f"poll p99 / redis p99, N={n}")
            targets.append(
                (
                    f"Redis p99 >= {TARGET_VS_POLLING:g}x better than polling, N={n}",
                    None if value is None else value >= TARGET_VS_POLLING,
                )
            )
    return rs, targets


def _times(value: float | None) -> str:
    """times(), with two significant digits for ratios far below 1."""
    return f"{value:.2g}x" if value is not None and 0 < value < 0.1 else times(value)


def _rate(status: str, figures: dict[str, Any]) -> str:
    """A rate with its spread, or why there is none."""
    if status != "ok":
        return status
    if figures["per_s"] is None:
        return "n/a"
    return with_spread(figures["per_s"], figures["spread"], ",.0f")


def _cell(value: float | None, fmt: str, status: str = "ok") -> str:
    if status != "ok":
        return status
    return "n/a" if value is None else f"{value:{fmt}}"


def render_table(
    cfg: Config, results: dict[str, dict[str, Result]], summary: dict[str, Any]
) -> str:
    lines = [f"Shared-state benchmark; {machine_line()}", ""]
    if "get" in summary:
        g = summary["get"]
        lines.append(f"hot reads: loops of {cfg.seconds:g} s, median of {cfg.get_rounds} rounds")
        lines.append(f"{'':<32}{'reads/s':>18}{'ns/read':>10}")
        for row, label in GET_ROWS:
            impl = "manager" if row == "manager" else "ours"
            status = results["get"][impl].status
            fig = g[row]
            rate = _rate(status, fig)
            lines.append(f"{label:<32}{rate:>18}{_cell(fig['ns'], ',.0f', status):>10}")
        lines.append("")
    if "latency" in summary:
        lat = summary["latency"]
        lines.append(
            f"put-to-every-worker latency: {cfg.puts} puts {cfg.gap_ms:g} ms apart per round, "
            f"{cfg.latency_rounds} round(s) pooled"
        )
        lines.append(
            f"{'':<24}{'N':>3}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}"
            f"{'put p50 ms':>12}{'resyncs':>9}"
        )
        for name in LAT_IMPLS:
            kind, n = name.split("/")
            status = results["latency"][name].status
            f = lat[name]
            lines.append(
                f"{LAT_LABELS[kind]:<24}{n:>3}{_cell(f['p50_ms'], '.2f', status):>9}"
                f"{_cell(f['p99_ms'], '.2f', status):>9}{_cell(f['max_ms'], '.2f', status):>9}"
                f"{_cell(f['put_p50_ms'], '.2f', status):>12}"
                f"{_cell(f['resyncs'], 'd', status):>9}"
            )
        lines.append("")
    if "cas" in summary:
        c = summary["cas"]
        lines.append(
            f"compare_and_set increments: {CAS_WORKERS} workers x {cfg.increments} "
            f"on one counter, median of {cfg.cas_rounds} rounds"
        )
        lines.append(
            f"{'':<24}{'increments/s':>16}{'retries':>10}{'retries/incr':>14}"
            f"{'stale':>8}{'final count':>13}"
        )
        for name in CAS_IMPLS:
            res = results["cas"][name]
            f = c[name]
            rate = _rate(res.status, f)
            final = (
                "n/a"
                if not res.rounds
                else "all " + str(CAS_WORKERS * cfg.increments)
                if all(r.final == CAS_WORKERS * cfg.increments for r in res.rounds)
                else "WRONG"
            )
            lines.append(
                f"{name + ' store':<24}{rate:>16}{_cell(f['retries'], ',.0f', res.status):>10}"
                f"{_cell(f['retries_per_increment'], '.2f', res.status):>14}"
                f"{_cell(f['stale_retries'], ',.0f', res.status):>8}{final:>13}"
            )
        lines.append("  retries: compare_and_set calls that lost (None), retried; stale: those")
        lines.append("  at the version that had just lost (the winning write not yet pushed)")
        lines.append("")
    for part, part_results in results.items():
        for name, res in part_results.items():
            if (problem := res.problem(f"{part} {name}")) is not None:
                lines.append(problem)
    rs, targets = ratios_and_targets(summary)
    if rs:
        lines.append("ratios of medians (reads: >1x is faster; poll / ours p99: >1x is faster)")
        lines.extend(f"  {name:<32} = {_times(value)}" for name, value in rs.items())
    if targets:
        lines.append("targets")
        for name, met in targets:
            lines.append(f"  {name:<52} {'n/a' if met is None else 'met' if met else 'NOT met'}")
    return "\n".join(lines)


def render_json(cfg: Config, results: dict[str, dict[str, Result]], summary: dict[str, Any]) -> str:
    rs, targets = ratios_and_targets(summary)
    doc = {
        "config": asdict(cfg),
        "machine": machine(),
        "summary": summary,
        "ratios": rs,
        "targets": {name: met for name, met in targets},
        "results": {
            part: {
                name: {
                    "status": r.status,
                    "error": r.error,
                    "rounds": [x if isinstance(x, dict) else asdict(x) for x in r.rounds],
                }
                for name, r in part_results.items()
            }
            for part, part_results in results.items()
        },
    }
    return json.dumps(doc, indent=2)


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, bool]:
    p = arguments(__doc__, "fewer rounds, shorter loops, 100 puts, K=100 (~25 s)", "--parts", PARTS)
    p.add_argument(
        "--rounds",
        type=int,
        help="rounds of every part (default 3 / 2 / 3; quick 2 / 1 / 2 for get / latency / cas)",
    )
    p.add_argument("--seconds", type=float, help="seconds per timed read loop (default 0.5)")
    p.add_argument("--puts", type=int, help="timed puts per latency round (default 200)")
    p.add_argument("--gap-ms", type=float, default=10.0, help="ms between two puts")
    p.add_argument("--increments", type=int, help="K: increments per CAS worker (default 500)")
    p.add_argument(
        "--timeout", type=float, default=120.0, help="max seconds for one configuration's round"
    )
    ns = p.parse_args(argv)
    parts = tuple(chosen(p, "--parts", ns.parts, PARTS))
    q = ns.quick
    cfg = Config(
        parts=parts,
        get_rounds=ns.rounds or (2 if q else 3),
        seconds=ns.seconds or (0.25 if q else 0.5),
        latency_rounds=ns.rounds or (1 if q else 2),
        puts=ns.puts or (100 if q else 200),
        gap_ms=ns.gap_ms,
        cas_rounds=ns.rounds or (2 if q else 3),
        increments=ns.increments or (100 if q else 500),
        timeout_s=ns.timeout,
    )
    if min(cfg.get_rounds, cfg.puts, cfg.increments) < 1 or cfg.seconds <= 0 or cfg.gap_ms < 0:
        p.error("--rounds, --puts, --increments and --seconds must be positive")
    return cfg, ns.json


def main(argv: Sequence[str] | None = None) -> int:
    cfg, as_json = parse_args(argv)
    results: dict[str, dict[str, Result]] = {}
    summary: dict[str, Any] = {}
    with redis_server() as redis_url, tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        if redis_url is None:
            progress("redis-server or coredis not found: the Redis figures are left out")
        workdir = Path(tmp)
        if "get" in cfg.parts:
            results["get"] = run_get(cfg, redis_url, progress)
            summary["get"] = get_summary(results["get"])
        if "latency" in cfg.parts:
            results["latency"] = run_latency(cfg, redis_url, workdir, progress)
            summary["latency"] = latency_summary(results["latency"])
        if "cas" in cfg.parts:
            results["cas"] = run_cas(cfg, redis_url, workdir, progress)
            summary["cas"] = cas_summary(results["cas"], cfg.increments)
    print(render_json(cfg, results, summary) if as_json else render_table(cfg, results, summary))
    failed = any(r.failed for part in results.values() for r in part.values())
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        progress(describe(KeyboardInterrupt("interrupted")))
        sys.exit(130)
