"""Actors in one process: dispatch, lifecycle, mailbox, errors."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorDrained,
    ActorError,
    ActorExited,
    ActorGone,
    BindError,
    InvalidArguments,
    RemoteError,
    SpawnError,
    UnexpectedReply,
    handler,
    open_system,
)
from protocol import Message
from tests.events import received


class Add(Message):
    a: int
    b: int


class Sub(Message):
    a: int
    b: int


class Total(Message):
    value: int


class Event(Message):
    name: str


class SpecialEvent(Event):
    pass


class Unhandled(Message):
    pass


class Calc(Actor):
    @handler
    async def arith(self, msg: Add | Sub) -> Total:
        return Total(value=msg.a + msg.b if isinstance(msg, Add) else msg.a - msg.b)

    @handler
    async def event(self, msg: Event) -> Event:
        return Event(name=f"{type(msg).__name__}:{msg.name}")


def test_handlers_are_found_by_annotation_union_and_base_class() -> None:
    assert Calc.handler_for(Add) == "arith"
    assert Calc.handler_for(Sub) == "arith"
    assert Calc.handler_for(SpecialEvent) == "event"
    assert Calc.handler_for(Unhandled) is None


def test_bad_handlers_fail_at_class_creation() -> None:
    with pytest.raises(TypeError, match="async def"):

        class NotAsync(Actor):
            @handler  # type: ignore[type-var]
            def h(self, msg: Add) -> None: ...

    with pytest.raises(TypeError, match="not a Message"):

        class NotAMessage(Actor):
            @handler
            async def h(self, msg: int) -> None: ...

    with pytest.raises(TypeError, match="annotate"):

        class NoAnnotation(Actor):
            @handler
            async def h(self, msg) -> None: ...  # type: ignore[no-untyped-def]


def test_two_handlers_for_one_message_type_fail_at_class_creation() -> None:
    # In one class: two methods, or a union that overlaps another handler.
    with pytest.raises(TypeError, match=r"Twice has more than one @handler for Add: "
                                        r"Twice\.first and Twice\.second"):

        class Twice(Actor):
            @handler
            async def first(self, msg: Add) -> None: ...

            @handler
            async def second(self, msg: Add) -> None: ...

    with pytest.raises(TypeError, match=r"for Sub: Overlap\.arith and Overlap\.sub"):

        class Overlap(Actor):
            @handler
            async def arith(self, msg: Add | Sub) -> None: ...

            @handler
            async def sub(self, msg: Sub) -> None: ...

    # One inherited under another name: both would be handlers of the class, and only one
    # could run (the base's is not replaced, since it is not overridden by its name).
    with pytest.raises(TypeError, match=r"Renamed has more than one @handler for Add: "
                                        r"Renamed\.add and Calc\.arith \(inherited\)"):

        class Renamed(Calc):
            @handler
            async def add(self, msg: Add) -> Total: ...

    # From two bases.
    class Left(Actor):
        @handler
        async def left(self, msg: Add) -> None: ...

    class Right(Actor):
        @handler
        async def right(self, msg: Add) -> None: ...

    with pytest.raises(TypeError, match=r"Both has more than one @handler for Add: Left\.left "
                                        r"\(inherited\) and Right\.right \(inherited\)"):

        class Both(Left, Right):
            pass


class Overrides(Calc):
    @handler
    async def arith(self, msg: Add | Sub) -> Total:  # the same name: it replaces the base's
        return Total(value=0)


class Reassigns(Calc):
    @handler
    async def arith(self, msg: Sub) -> Total:  # now Sub only; Add is free for another
        return Total(value=1)

    @handler
    async def add(self, msg: Add) -> Total:
        return Total(value=2)

    @handler
    async def special(self, msg: SpecialEvent) -> Event:  # a subtype: the nearest wins
        return Event(name="special")


async def test_overriding_a_handler_by_its_name_is_not_a_duplicate() -> None:
    assert Overrides.handler_for(Add) == "arith"
    assert Reassigns.handler_for(Add) == "add"
    assert Reassigns.handler_for(Sub) == "arith"
    assert Reassigns.handler_for(SpecialEvent) == "special"
    assert Reassigns.handler_for(Event) == "event"
    async with open_system() as system:
        overrides = await system.spawn(Overrides, name="overrides")
        assert await overrides.ask(Add(a=1, b=1)) == Total(value=0)
        reassigns = await system.spawn(Reassigns, name="reassigns")
        assert await reassigns.ask(Add(a=1, b=1)) == Total(value=2)
        assert await reassigns.ask(Sub(a=1, b=1)) == Total(value=1)
        assert await reassigns.ask(SpecialEvent(name="x")) == Event(name="special")


class Ping(Message):
    pass


class Forgetful(Actor):
    async def ping(self, msg: Ping) -> None:  # no @handler: not a handler
        pass


async def test_a_message_without_a_handler_says_so_and_names_the_actor_class(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with open_system() as system:
        forgetful = await system.spawn(Forgetful, name="forgetful")
        with pytest.raises(RemoteError, match=r"Forgetful has no @handler for Ping \(did "
                                              r"you forget @handler on Forgetful\.ping\?\)"):
            await forgetful.ask(Ping())
        calc = await system.spawn(Calc, name="calc")
        with pytest.raises(RemoteError, match=r"Calc has no @handler for Ping \(did you "
                                              r"forget @handler\?\)"):
            await calc.ask(Ping())
        await calc.tell(Ping())
        await calc.ask(Add(a=1, b=1))  # handled after the tell: its warning is out
    assert "actor calc dropped a message: Calc has no @handler for Ping" in caplog.text


async def test_ask_dispatches_and_replies() -> None:
    async with open_system() as system:
        calc = await system.spawn(Calc, name="calc")
        assert await calc.ask(Add(a=2, b=3)) == Total(value=5)
        assert await calc.ask(Sub(a=2, b=3), Total) == Total(value=-1)
        assert await calc.ask(SpecialEvent(name="x")) == Event(name="SpecialEvent:x")
        with pytest.raises(TypeError, match="expected a Total") as info:
            await calc.ask(Event(name="y"), Total)
        assert isinstance(info.value, UnexpectedReply)  # an ActorError as well
        assert info.value.expected is Total


def test_errors_form_one_tree_and_print_under_the_package() -> None:
    import actors

    assert issubclass(BindError, SpawnError)
    assert issubclass(UnexpectedReply, ActorError)
    assert "BindError" in (actors._base._errors.__doc__ or "")
    for name in actors.__all__:
        exported = getattr(actors, name)
        if isinstance(exported, type) and issubclass(exported, Exception):
            assert exported.__module__ == "actors", name
            assert repr(exported) == f"<class 'actors.{name}'>"
    assert actors.open_system.__module__ == "actors"


async def test_unhandled_message_fails_the_ask_but_not_the_actor() -> None:
    async with open_system() as system:
        calc = await system.spawn(Calc, name="calc")
        with pytest.raises(RemoteError, match="no @handler for Unhandled"):
            await calc.ask(Unhandled())
        assert await calc.ask(Add(a=1, b=1)) == Total(value=2)


class Gate(Message):
    pass


class Slow(Actor):
    mailbox_size = 1

    def __init__(self) -> None:
        self.open = trio.Event()
        self.handled = 0

    @handler
    async def add(self, msg: Add) -> Total:
        await self.open.wait()
        self.handled += 1
        return Total(value=self.handled)

    @handler
    async def gate(self, msg: Gate) -> None:
        self.open.set()


async def test_full_mailbox_makes_tell_wait() -> None:
    async with open_system() as system:
        slow = await system.spawn(Slow, name="slow", shutdown=0.1)
        sent = 0

        async def producer() -> None:
            nonlocal sent
            for i in range(5):
                await slow.tell(Add(a=i, b=i))
                sent += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(producer)
            await trio.testing.wait_all_tasks_blocked()
            # One message in the handler, one in the mailbox of size 1, the third tell waits.
            assert sent == 2
            nursery.cancel_scope.cancel()


class Crashy(Actor):
    def __init__(self, release: trio.Event) -> None:
        self.release = release

    @handler
    async def add(self, msg: Add) -> Total:
        await self.release.wait()
        if msg.a < 0:
            raise ValueError("negative")
        return Total(value=msg.a)

    @handler
    async def gate(self, msg: Gate) -> None:
        self.release.set()


async def test_crash_fails_the_current_ask_with_remote_error_and_queued_asks_with_gone() -> None:
    async with open_system() as system:
        release = trio.Event()
        crashy = await system.spawn(Crashy, name="crashy", release=release)
        results: dict[str, BaseException | Message | None] = {}

        async def ask(key: str, message: Message) -> None:
            try:
                results[key] = await crashy.ask(message)
            except Exception as exc:
                results[key] = exc

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first", Add(a=-1, b=0))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ask, "second", Add(a=1, b=0))
            await trio.testing.wait_all_tasks_blocked()
            # The first handler raises once released; the second ask never gets handled.
            release.set()
        assert isinstance(results["first"], RemoteError)
        assert results["first"].type_name == "ValueError"
        assert isinstance(results["second"], ActorGone)
        with pytest.raises(ActorGone):
            await crashy.tell(Add(a=1, b=1))
        assert "crashy" not in system.names()


class Recorder(Actor):
    def __init__(self, log: list[str], label: str) -> None:
        self.log = log
        self.label = label

    async def setup(self) -> None:
        self.log.append(f"setup {self.label}")
        if self.label == "parent":
            await self.ctx.spawn(Recorder, name="first", log=self.log, label="first")
            await self.ctx.spawn(Recorder, name="second", log=self.log, label="second")

    async def cleanup(self) -> None:
        self.log.append(f"cleanup {self.label}")


async def test_children_start_in_order_and_stop_in_reverse_before_parent_cleanup() -> None:
    log: list[str] = []
    async with open_system() as system:
        await system.spawn(Recorder, name="parent", log=log, label="parent")
        assert set(system.names()) == {"parent", "parent/first", "parent/second"}
    assert log == [
        "setup parent", "setup first", "setup second",
        "cleanup second", "cleanup first", "cleanup parent",
    ]


class Broken(Actor):
    async def setup(self) -> None:
        raise RuntimeError("cannot start")


async def test_spawn_errors() -> None:
    async with open_system() as system:
        with pytest.raises(SpawnError, match="cannot start"):
            await system.spawn(Broken, name="broken")
        assert system.names() == {}
        with pytest.raises(InvalidArguments, match="label"):
            await system.spawn(Recorder, name="r", log=[])
        await system.spawn(Calc, name="calc")
        with pytest.raises(SpawnError, match="already taken"):
            await system.spawn(Calc, name="calc")
        with pytest.raises(SpawnError, match="invalid actor name"):
            await system.spawn(Calc, name="a/b")
        with pytest.raises(TypeError):
            await system.spawn(int, name="x")  # type: ignore[arg-type]


class Quitter(Actor):
    @handler
    async def add(self, msg: Add) -> Total:
        self.ctx.stop()
        return Total(value=msg.a)


async def test_stop_finishes_queued_messages_then_refuses() -> None:
    async with open_system() as system:
        quitter = await system.spawn(Quitter, name="quitter")
        assert await quitter.ask(Add(a=7, b=0)) == Total(value=7)
        with pytest.raises(ActorGone):
            await quitter.ask(Add(a=1, b=0))


class Patient(Actor):
    """Its drain waits for ``hold`` seconds of work in flight."""

    def __init__(self, hold: float) -> None:
        self.hold = hold

    async def drain(self) -> None:
        await trio.sleep(self.hold)

    def _in_flight(self) -> int | None:
        return 3


async def test_an_actor_with_a_drain_reports_how_it_went() -> None:
    with trio.fail_after(10):
        async with open_system() as system:
            events = system.events()
            await system.spawn(Patient, name="quick", hold=0.01, shutdown=5.0)
            await system.spawn(Patient, name="slow", hold=60.0, shutdown=0.2)
            await system.spawn(Calc, name="plain")  # no drain of its own: no event
        seen = received(events)
    drained = {e.path: e for e in seen if isinstance(e, ActorDrained)}
    exits = {e.path: e.reason.kind for e in seen if isinstance(e, ActorExited)}
    assert set(drained) == {"quick", "slow"}
    assert drained["quick"].complete
    assert drained["quick"].in_flight is None
    assert 0.01 <= drained["quick"].seconds < 5.0
    assert not drained["slow"].complete
    assert drained["slow"].in_flight == 3
    assert 0.1 <= drained["slow"].seconds < 0.2  # its budget: shutdown less a quarter
    assert exits["slow"] == "shutdown"  # cut short, but not killed
