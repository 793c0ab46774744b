"""The ``Actor`` base class, the ``@handler`` decorator, and ``ActorContext``, the interface
of ``self.ctx`` (the runtime's cells implement it)."""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, Union

from protocol import Message

from ._ref import ActorRef

if TYPE_CHECKING:  # (an annotation only: the shared state is imported when first used)
    from ._shared import State

if typing.TYPE_CHECKING:
    from ._children import ChildCount, ChildInfo

__all__ = ["Actor", "ActorContext", "SpecLike", "handler", "no_handler"]

_HANDLER_MARK = "__actors_handler__"

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def handler(method: F) -> F:
    """Mark an ``async def`` method as the handler of the Message type(s) it is annotated with.

    ``async def add(self, msg: Add) -> Total`` handles ``Add`` (and subclasses without a
    handler of their own); ``msg: Add | Sub`` handles both. What it returns (a Message, or
    None) is the reply to an ``ask``; for a ``tell`` it is dropped. Both annotations are
    checked when the class is defined: the message a Message subclass (or a union of them),
    the return a Message, None, or a union of them.

    A message type has one handler per actor class: two handler methods of a class (its
    own or inherited, under different names) for one type are a ``TypeError`` when the
    class is defined. A subclass replaces an inherited handler by defining a method of the
    same name (its annotation then says what that name handles).
    """
    marked = method
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"@handler {method.__qualname__} must be an 'async def' method")
    setattr(marked, _HANDLER_MARK, True)
    return marked


def _message_types(cls: type, method: Callable[..., Any]) -> list[type[Message]]:
    params = list(inspect.signature(method).parameters.values())
    if len(params) != 2:
        raise TypeError(
            f"@handler {cls.__qualname__}.{method.__name__} must take (self, message)"
        )
    try:
        hints = typing.get_type_hints(method)
    except NameError as exc:
        raise TypeError(
            f"cannot resolve the annotation of @handler {cls.__qualname__}.{method.__name__}: "
            f"{exc}"
        ) from exc
    annotation = hints.get(params[1].name)
    if annotation is None:
        raise TypeError(
            f"@handler {cls.__qualname__}.{method.__name__}: annotate the message parameter "
            "with the Message type it handles"
        )
    found: list[type[Message]] = []
    for member in _union_members(annotation):
        if not (isinstance(member, type) and issubclass(member, Message)):
            raise TypeError(
                f"@handler {cls.__qualname__}.{method.__name__} is annotated with {member!r}, "
                "which is not a Message subclass"
            )
        found.append(member)
    if "return" in hints:
        for member in _union_members(hints["return"]):
            if member is not type(None) and not (
                isinstance(member, type) and issubclass(member, Message)
            ):
                raise TypeError(
                    f"@handler {cls.__qualname__}.{method.__name__} returns {member!r}: a "
                    "handler's reply is a Message, None, or a union of them (wrap a plain "
                    "value in a Message)"
                )
    return found


def _union_members(annotation: object) -> tuple[object, ...]:
    if annotation is None:
        return (type(None),)
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _name(cls: type) -> str:
    """A class's qualified name without the ``<locals>`` of a function defining it."""
    return cls.__qualname__.rpartition("<locals>.")[2]


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def no_handler(cls: type[Actor], message_type: type[Message]) -> TypeError:
    """The error for a message that ``cls`` has no handler for. A method that takes it but
    is not marked ``@handler`` (the likely mistake) is named."""
    takers = [
        f"{_name(klass)}.{name}"
        for klass in cls.__mro__ if issubclass(klass, Actor) and klass is not Actor
        for name, member in vars(klass).items()
        if inspect.isfunction(member) and not getattr(member, _HANDLER_MARK, False)
        and _takes(member, message_type)
    ]
    where = f" on {_and(takers)}" if takers else ""
    return TypeError(
        f"{_name(cls)} has no @handler for {_name(message_type)} "
        f"(did you forget @handler{where}?)"
    )


def _takes(function: Callable[..., Any], message_type: type[Message]) -> bool:
    """True if ``function(self, msg)`` is annotated to take ``message_type``."""
    try:
        params = list(inspect.signature(function).parameters)
        annotation = typing.get_type_hints(function).get(params[1]) if len(params) == 2 else None
    except Exception:  # an annotation that does not resolve: it names nothing we know
        return False
    return annotation is not None and any(
        isinstance(member, type) and issubclass(message_type, member)
        for member in _union_members(annotation)
    )


class Actor:
    """Base class of actors.

    Subclass it, give it ``@handler`` methods, and start it with ``system.spawn`` or a
    supervision tree. The runtime delivers one message at a time, in the order each sender
    sent them. ``__init__`` keyword arguments come from ``spawn(..., **kwargs)``; for process
    actors they must be JSON-serialisable.

    Lifecycle: ``setup()`` runs before the actor is ready (a failure there is a failed
    start); ``drain()`` once it stops taking messages, to let work in flight finish;
    ``cleanup()`` last, whatever the reason it stopped.
    An exception escaping a handler crashes the actor: an ``ask`` being handled gets a
    :class:`RemoteError`, queued asks get :class:`ActorGone`.
    """

    mailbox_size: ClassVar[int] = 1024
    """Messages that may wait in the mailbox before ``tell`` waits for room."""

    _handlers: ClassVar[dict[type[Message], str]] = {}
    # Runtime-internal: synchronous handlers run by the task reading the channel (no mailbox).
    _inline_handlers: ClassVar[dict[type[Message], str]] = {}
    # The @handler methods a class body defines (name -> message types), not inherited ones.
    _own_handlers: ClassVar[dict[str, tuple[type[Message], ...]]] = {}
    _actor_context: ActorContext | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._own_handlers = {
            name: tuple(_message_types(cls, member)) for name, member in vars(cls).items()
            if getattr(member, _HANDLER_MARK, False)
        }
        # The class's handlers by name, the nearest definition of each name winning (as
        # attribute lookup does): an override under the same name replaces a base's
        # handler; a method under another name adds one.
        by_name: dict[str, tuple[type[Actor], tuple[type[Message], ...]]] = {}
        for klass in reversed(cls.__mro__):
            for name, handled in klass.__dict__.get("_own_handlers", {}).items():
                by_name[name] = (klass, handled)
        claims: dict[type[Message], list[str]] = {}
        for klass in cls.__mro__:  # nearest first, each class's in definition order
            for name in klass.__dict__.get("_own_handlers", {}):
                owner, handled = by_name[name]
                if owner is klass:
                    where = f"{_name(klass)}.{name}"
                    if klass is not cls:
                        where += " (inherited)"
                    for message_type in handled:
                        claims.setdefault(message_type, []).append(where)
        for message_type, methods in claims.items():
            if len(methods) > 1:
                raise TypeError(
                    f"{_name(cls)} has more than one @handler for "
                    f"{_name(message_type)}: {_and(methods)}; a message type has one "
                    "handler per actor class (to replace an inherited handler, define a "
                    "method of the same name)"
                )
        cls._handlers = {
            message_type: name for name, (_, handled) in by_name.items()
            for message_type in handled
        }

    @classmethod
    def handler_for(cls, message_type: type[Message]) -> str | None:
        """Name of the method handling ``message_type`` (nearest base class wins), or None."""
        table = cls._handlers
        name = table.get(message_type)
        if name is None:
            for base in message_type.__mro__[1:]:
                if base in table:
                    name = table[base]
                    table[message_type] = name  # remember the resolution
                    break
        return name

    @property
    def ctx(self) -> ActorContext:
        """This actor's context: its ref, its path, spawning children, stopping itself."""
        if self._actor_context is None:
            raise RuntimeError("the actor context exists once the runtime has started the actor")
        return self._actor_context

    async def setup(self) -> None:
        """Runs before the actor takes messages; raising here fails the start."""

    async def drain(self) -> None:
        """Runs when the actor stops taking messages, before its children stop and cleanup.

        Wait here for work in flight (open connections, background tasks) to finish. It is
        bounded by the actor's shutdown time, and skipped after an in-process crash.
        """

    async def cleanup(self) -> None:
        """Runs after the actor stopped taking messages, on every kind of stop."""

    def _in_flight(self) -> int | None:
        # Runtime-internal: the work in hand, for the drained event (None: not counted).
        return None


class SpecLike(Protocol):
    """What ``ctx.start_child`` takes: a ``worker(...)`` or ``supervisor(...)`` spec (the
    specs are defined over :class:`Actor`, so this interface names them by what they
    have)."""

    @property
    def name(self) -> str: ...


class ActorContext(Protocol):
    """The running actor's own ref and path, its children and its background tasks."""

    @property
    def ref(self) -> ActorRef:
        """This actor's ref (an address: it names this incarnation)."""
        ...

    @property
    def path(self) -> str:
        """The actor's path in the system, e.g. ``"adder"`` or ``"adder/helper"``."""
        ...

    @property
    def node(self) -> str:
        """The id of the process running the actor (``"0"`` is the master)."""
        ...

    @property
    def state(self) -> State:
        """The system's shared state, as seen from this actor's process."""
        ...

    async def spawn(
        self,
        actor_class: type[Actor],
        *,
        name: str | None = None,
        process: bool = False,
        shutdown: float = 5.0,
        **kwargs: Any,
    ) -> ActorRef:
        """Start a child of this actor; it is stopped before this actor's ``cleanup``.

        Same arguments as ``system.spawn``; the child's path is ``<this path>/<name>``.
        """
        ...

    def ref_to(self, path: str) -> ActorRef:
        """A ref to whatever actor holds ``path`` when a message is sent (``"path@node"``:
        on that node of the cluster)."""
        ...

    def start_soon(
        self, function: Callable[..., Awaitable[object]], *args: object, name: str | None = None
    ) -> None:
        """Run a background task for as long as this actor lives (cancelled when it stops,
        after ``drain``). An exception escaping it crashes the actor; before the actor is
        ready, it fails the start."""
        ...

    def crash(self, exc: BaseException) -> None:
        """Crash this actor as if a handler had raised ``exc`` (for a process actor: the
        suicide signal; its replacement starts while it drains)."""
        ...

    def stop(self) -> None:
        """Stop this actor once the messages already in its mailbox are handled.

        Its exit is ``normal``: a ``transient`` child that stops itself is not restarted.
        """
        ...

    def request_replacement(self, reason: str) -> None:
        """Ask to be replaced without failing (to recycle a worker, say): a supervised
        process actor gets its successor started first, then stops (draining) with exit
        reason ``recycled``; any other actor just stops."""
        ...

    async def start_child(self, supervisor_path: str, spec: SpecLike) -> ActorRef:
        """Start ``spec`` under the supervisor at ``supervisor_path``, wherever it runs
        (as ``system.start_child``); its ref once it is ready."""
        ...

    async def terminate_child(self, path: str) -> None:
        """Stop the supervised child at ``path`` in order; it is not restarted."""
        ...

    async def restart_child(self, path: str) -> ActorRef:
        """Start the terminated child at ``path`` again from its kept spec."""
        ...

    async def delete_child(self, path: str) -> None:
        """Forget the terminated child at ``path`` (its spec)."""
        ...

    async def which_children(self, supervisor_path: str) -> list[ChildInfo]:
        """A row per child of the supervisor at ``supervisor_path``."""
        ...

    async def count_children(self, supervisor_path: str) -> ChildCount:
        """How many children the supervisor at ``supervisor_path`` has, and of what kind."""
        ...

    async def monitor(self, ref: ActorRef) -> str:
        """Be told (an :class:`ActorDown` message, to this actor's handler for it) when
        ``ref``'s instance ends; at once (``noproc``) if it is gone; for an actor of
        another node (a ref with a node), also when that node goes (``nodedown``). The
        monitor's id."""
        ...

    async def demonitor(self, monitor_id: str) -> None:
        """Remove a monitor (an ActorDown it already sent may still arrive)."""
        ...
