"""Validation of the keyword arguments given to an actor's ``__init__``.

Arguments are checked against the signature (names and annotated types) in the spawning
process, before any worker starts, and travel to a worker as JSON.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticSerializationError

from ._actor import Actor
from ._errors import InvalidArguments

__all__ = ["arguments_from_json", "arguments_to_json", "validate_arguments"]

_MODEL_ATTR = "__actors_arguments_model__"


def _arguments_model(cls: type[Actor]) -> type[BaseModel]:
    cached = cls.__dict__.get(_MODEL_ATTR)
    if cached is not None:
        return typing.cast(type[BaseModel], cached)
    init = cls.__init__
    fields: dict[str, Any] = {}
    extra: typing.Literal["forbid", "allow"] = "forbid"
    if init is not object.__init__:
        try:
            hints = typing.get_type_hints(init)
        except NameError as exc:
            raise InvalidArguments(
                f"cannot resolve the annotations of {cls.__qualname__}.__init__: {exc}"
            ) from exc
        params = list(inspect.signature(init).parameters.values())[1:]
        for param in params:
            if param.kind is param.VAR_KEYWORD:
                extra = "allow"
            elif param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY):
                annotation = hints.get(param.name, Any)
                default = ... if param.default is param.empty else param.default
                fields[param.name] = (annotation, default)
    config = ConfigDict(extra=extra, arbitrary_types_allowed=True)
    model = pydantic.create_model(f"{cls.__name__}Arguments", __config__=config, **fields)
    setattr(cls, _MODEL_ATTR, model)
    return typing.cast(type[BaseModel], model)


def validate_arguments(cls: type[Actor], kwargs: dict[str, Any]) -> None:
    """Check arguments for an in-process actor, or raise :class:`InvalidArguments`.

    The actor then gets the very objects given (as a direct call would), not copies.
    """
    model = _arguments_model(cls)
    try:
        model.model_validate(kwargs)
    except pydantic.ValidationError as exc:
        raise InvalidArguments(
            f"invalid arguments for {cls.__qualname__}: " + _describe(exc)
        ) from exc


def arguments_to_json(cls: type[Actor], kwargs: dict[str, Any]) -> str:
    """Validate and encode the arguments for a worker process."""
    model = _arguments_model(cls)
    try:
        validated = model.model_validate(kwargs)
        return validated.model_dump_json()
    except pydantic.ValidationError as exc:
        raise InvalidArguments(
            f"invalid arguments for {cls.__qualname__}: " + _describe(exc)
        ) from exc
    except PydanticSerializationError as exc:
        raise InvalidArguments(
            f"arguments for process actor {cls.__qualname__} must be JSON-serialisable: {exc}"
        ) from exc


def arguments_from_json(cls: type[Actor], data: str) -> dict[str, Any]:
    """Decode arguments encoded by :func:`arguments_to_json` (in the worker)."""
    model = _arguments_model(cls)
    try:
        return _as_kwargs(model.model_validate_json(data))
    except pydantic.ValidationError as exc:
        raise InvalidArguments(
            f"invalid arguments for {cls.__qualname__}: " + _describe(exc)
        ) from exc


def _as_kwargs(validated: BaseModel) -> dict[str, Any]:
    kwargs = {name: getattr(validated, name) for name in type(validated).model_fields}
    kwargs.update(validated.model_extra or {})
    return kwargs


def _describe(exc: pydantic.ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(item) for item in error["loc"])
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
