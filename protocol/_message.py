"""The ``Message`` base class and the registry that maps wire tags to classes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pydantic
from pydantic import BaseModel, ConfigDict

from ._errors import InvalidMessage, UnknownMessageType

__all__ = ["Message", "MessageRegistry", "default_tag", "registry"]

# A script run as ``python script.py`` is the module ``__main__`` in the master; a worker loads
# the same file as ``__mp_main__`` (as multiprocessing does) so that its ``if __name__ ==
# "__main__"`` block does not run again. Both must give the same tag.
_MAIN_ALIASES = frozenset({"__main__", "__mp_main__"})


def _definition(cls: type) -> tuple[str, str]:
    module = "__main__" if cls.__module__ in _MAIN_ALIASES else cls.__module__
    return module, cls.__qualname__


def default_tag(cls: type) -> str:
    """The tag a Message class gets unless it names one: ``module:QualName``."""
    module = "__main__" if cls.__module__ in _MAIN_ALIASES else cls.__module__
    return f"{module}:{cls.__qualname__}"


class MessageRegistry:
    """Maps wire tags to Message classes.

    Classes register themselves when they are created, so the registry of a process holds
    exactly the message types that process has imported: a tag received from a peer that
    names a class this process never imported is an :class:`UnknownMessageType`.
    """

    def __init__(self) -> None:
        self._by_tag: dict[str, type[Message]] = {}
        # Each class's validate_json, bound once on its first decode: looking it up through
        # the class costs half as much again as validating a small message does. Forgotten
        # when the tag is claimed again or the class is rebuilt (its validator changes).
        self._validators: dict[str, Callable[..., Any]] = {}

    def register(self, cls: type[Message], tag: str) -> None:
        """Claim ``tag`` for ``cls``; a tag already claimed by another class is a TypeError."""
        existing = self._by_tag.get(tag)
        if (
            existing is not None
            and existing is not cls
            # Re-running the same definition (importlib.reload, a class made in a function
            # called twice, the main script loaded as __mp_main__ in a fork of the process
            # that ran it as __main__) replaces it; two different classes may not share a tag.
            and _definition(existing) != _definition(cls)
        ):
            raise TypeError(
                f"message tag {tag!r} of {cls.__module__}.{cls.__qualname__} is already "
                f"registered by {existing.__module__}.{existing.__qualname__}; "
                "give one of them another tag: class X(Message, tag='...')"
            )
        self._by_tag[tag] = cls
        self._validators.pop(tag, None)

    def forget_validator(self, tag: str) -> None:
        """The class under ``tag`` was rebuilt: its next decode looks its validator up."""
        self._validators.pop(tag, None)

    def lookup(self, tag: str) -> type[Message]:
        """The class registered under ``tag``, or :class:`UnknownMessageType`."""
        try:
            return self._by_tag[tag]
        except KeyError:
            raise UnknownMessageType(tag) from None

    def __contains__(self, tag: object) -> bool:
        return tag in self._by_tag

    def decode(self, tag: str, body: bytes, context: dict[str, Any] | None = None) -> Message:
        """Validate the JSON ``body`` as the message registered under ``tag``."""
        validate = self._validators.get(tag)
        if validate is None:
            validate = self._validators[tag] = (
                self.lookup(tag).__pydantic_validator__.validate_json
            )
        try:
            message: Message = validate(body, context=context)
            return message
        except pydantic.ValidationError as exc:
            raise InvalidMessage(tag, _summarise(exc)) from exc
        except ValueError as exc:  # a handle index out of range, bad UTF-8 in the body
            raise InvalidMessage(tag, str(exc)) from exc


def _summarise(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(item) for item in error["loc"]) or "<body>"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)


registry = MessageRegistry()
"""The process-wide registry every Message subclass joins when it is defined."""


class Message(BaseModel):
    """Base class of everything sent between actors.

    A message is an immutable pydantic model (``frozen=True``, ``extra="forbid"``) sent as
    JSON (``bytes`` fields as base64, so any bytes arrive as they were sent). Each subclass
    is registered under a tag, ``module:QualName`` by default; name one explicitly with
    ``class Add(Message, tag="calc.add")`` to keep the wire name stable across renames. Two
    different classes claiming one tag fail when the second is defined.
    """

    # bytes travel as base64 in the JSON (any bytes, not only UTF-8, arrive as they left).
    model_config = ConfigDict(
        frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64"
    )

    message_tag: ClassVar[str]

    def __init_subclass__(cls, *, tag: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        chosen = default_tag(cls) if tag is None else tag
        if not chosen or len(chosen.encode()) > 0xFFFF:
            raise TypeError(f"message tag of {cls.__qualname__} must be 1 to 65535 bytes")
        registry.register(cls, chosen)
        cls.message_tag = chosen

    @classmethod
    def model_rebuild(
        cls,
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        """Rebuild the class's schema (pydantic's), and have the registry forget its old
        validator."""
        rebuilt = super().model_rebuild(
            force=force, raise_errors=raise_errors,
            # One frame more than pydantic's own: the namespace it looks in is our caller's.
            _parent_namespace_depth=_parent_namespace_depth + 1,
            _types_namespace=_types_namespace,
        )
        registry.forget_validator(cls.message_tag)
        return rebuilt
