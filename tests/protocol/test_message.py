"""The Message base class and the tag registry."""

from __future__ import annotations

import pydantic
import pytest

from protocol import (
    DecodeError,
    InvalidMessage,
    Message,
    MessageRegistry,
    ProtocolError,
    UnknownMessageType,
    default_tag,
    registry,
)


class Point(Message):
    x: int
    y: int


class Named(Message, tag="tests.protocol.message.named"):
    name: str


class Inner(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")
    value: int


class Outer(Message):
    inner: Inner
    label: str = ""

    class Nested(Message):
        flag: bool


# -- the model ------------------------------------------------------------------------------


def test_message_is_frozen() -> None:
    point = Point(x=1, y=2)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        point.x = 3  # type: ignore[misc]
    assert point.x == 1


def test_message_is_hashable_and_compares_by_value() -> None:
    assert Point(x=1, y=2) == Point(x=1, y=2)
    assert Point(x=1, y=2) != Point(x=2, y=1)
    assert len({Point(x=1, y=2), Point(x=1, y=2)}) == 1


def test_message_forbids_extra_fields() -> None:
    with pytest.raises(pydantic.ValidationError, match="z"):
        Point(x=1, y=2, z=3)  # type: ignore[call-arg]


def test_message_forbids_extra_fields_in_json() -> None:
    with pytest.raises(InvalidMessage, match="z"):
        registry.decode(Point.message_tag, b'{"x": 1, "y": 2, "z": 3}')


# -- tags -----------------------------------------------------------------------------------


def test_default_tag_is_module_and_qualname() -> None:
    assert Point.message_tag == f"{__name__}:Point"
    assert default_tag(Point) == Point.message_tag
    assert Outer.Nested.message_tag == f"{__name__}:Outer.Nested"


def test_main_and_mp_main_give_the_same_tag() -> None:
    # A worker loads the master's script as ``__mp_main__``; the tag must not change.
    as_worker = type(
        "ScriptMessage", (Message,), {"__module__": "__mp_main__", "__annotations__": {}}
    )
    assert as_worker.message_tag == "__main__:ScriptMessage"
    assert default_tag(as_worker) == "__main__:ScriptMessage"


def test_explicit_tag() -> None:
    assert Named.message_tag == "tests.protocol.message.named"
    assert registry.lookup("tests.protocol.message.named") is Named
    assert f"{__name__}:Named" not in registry


def test_registered_classes_are_found() -> None:
    assert Point.message_tag in registry
    assert registry.lookup(Point.message_tag) is Point
    assert 42 not in registry


def test_duplicate_tag_from_another_class_is_a_type_error() -> None:
    class First(Message, tag="tests.protocol.message.duplicate"):
        pass

    with pytest.raises(TypeError, match=r"tests\.protocol\.message\.duplicate.*already"):

        class Second(Message, tag="tests.protocol.message.duplicate"):
            pass

    # The first class keeps its tag.
    assert registry.lookup("tests.protocol.message.duplicate") is First


def test_duplicate_default_tag_from_another_class_is_a_type_error() -> None:
    # Another class claiming exactly this module's default tag of Point.
    with pytest.raises(TypeError, match="already registered"):

        class Impostor(Message, tag=f"{__name__}:Point"):
            pass

    assert registry.lookup(Point.message_tag) is Point


def test_redefining_the_same_class_replaces_it() -> None:
    def define() -> type[Message]:
        class Redefined(Message):
            n: int

        return Redefined

    first = define()
    second = define()  # same module and qualname: no error
    assert first is not second
    assert first.message_tag == second.message_tag
    assert registry.lookup(second.message_tag) is second
    assert registry.decode(second.message_tag, b'{"n": 1}') == second(n=1)


def test_a_class_redefined_after_a_decode_is_decoded_as_the_new_one() -> None:
    def define(field: type) -> type[Message]:
        class Changing(Message, tag="tests.protocol.message.changing"):
            n: field  # type: ignore[valid-type]

        return Changing

    first = define(int)
    assert type(registry.decode(first.message_tag, b'{"n": 1}')) is first
    second = define(str)  # the validator bound on the first decode is forgotten
    assert registry.decode(second.message_tag, b'{"n": "a"}') == second(n="a")
    with pytest.raises(InvalidMessage):
        registry.decode(second.message_tag, b'{"n": 1}')


def test_a_rebuilt_class_is_decoded_with_its_new_validator() -> None:
    class Later(Message, tag="tests.protocol.message.later"):
        value: Missing  # type: ignore[name-defined]

    Missing = int  # the name the rebuild resolves, in this function's namespace
    Later.model_rebuild()
    assert registry.decode("tests.protocol.message.later", b'{"value": 2}') == Later(value=2)
    old = Later.__pydantic_validator__
    Later.model_rebuild(force=True)
    assert Later.__pydantic_validator__ is not old
    assert "tests.protocol.message.later" not in registry._validators  # bound anew
    assert registry.decode("tests.protocol.message.later", b'{"value": 3}') == Later(value=3)


def test_redefining_with_an_explicit_tag_replaces_it() -> None:
    def define() -> type[Message]:
        class Tagged(Message, tag="tests.protocol.message.redefined"):
            pass

        return Tagged

    define()
    second = define()
    assert registry.lookup("tests.protocol.message.redefined") is second


@pytest.mark.parametrize("tag", ["", "x" * 65536, "é" * 32768])
def test_tag_length_is_checked(tag: str) -> None:
    with pytest.raises(TypeError, match="1 to 65535 bytes"):

        class Bad(Message, tag=tag):
            pass


def test_longest_tag_is_accepted() -> None:
    tag = "t" * 65535

    class Longest(Message, tag=tag):
        pass

    assert Longest.message_tag == tag


def test_separate_registry() -> None:
    own = MessageRegistry()
    own.register(Point, "own.point")
    own.register(Point, "own.point")  # the same class again is fine
    assert own.lookup("own.point") is Point
    assert "own.point" in own
    assert "own.point" not in registry
    with pytest.raises(TypeError, match="already registered"):
        own.register(Named, "own.point")
    assert own.decode("own.point", b'{"x": 1, "y": 2}') == Point(x=1, y=2)


def test_the_main_script_loaded_again_as_mp_main_replaces_its_classes() -> None:
    # A fork server forked from the master loads the main script again as __mp_main__: its
    # classes are the same definitions as the master's __main__ ones, not a clash.
    own = MessageRegistry()

    def defined_in(module: str) -> type[Message]:
        return type("Script", (Point,), {"__module__": module, "__qualname__": "Script"})

    own.register(defined_in("__main__"), "__main__:Script")
    again = defined_in("__mp_main__")
    own.register(again, "__main__:Script")
    assert own.lookup("__main__:Script") is again
    with pytest.raises(TypeError, match="already registered"):
        own.register(defined_in("elsewhere"), "__main__:Script")


# -- decoding -------------------------------------------------------------------------------


def test_decode_round_trip() -> None:
    message = Outer(inner=Inner(value=3), label="é✓")
    decoded = registry.decode(Outer.message_tag, message.model_dump_json().encode())
    assert decoded == message
    assert type(decoded) is Outer


def test_unknown_tag() -> None:
    with pytest.raises(UnknownMessageType, match=r"no\.such\.tag") as info:
        registry.decode("no.such.tag", b"{}")
    assert info.value.tag == "no.such.tag"
    assert isinstance(info.value, DecodeError)
    assert isinstance(info.value, ProtocolError)


def test_unknown_tag_from_lookup() -> None:
    with pytest.raises(UnknownMessageType):
        registry.lookup("no.such.tag")


def test_invalid_field_type_names_the_field() -> None:
    with pytest.raises(InvalidMessage) as info:
        registry.decode(Point.message_tag, b'{"x": "not a number", "y": 2}')
    error = info.value
    assert isinstance(error, DecodeError)
    assert isinstance(error, ProtocolError)
    assert error.tag == Point.message_tag
    assert error.detail.startswith("x:")
    assert "x:" in str(error)
    assert "y" not in error.detail
    assert isinstance(error.__cause__, pydantic.ValidationError)


def test_invalid_nested_field_names_its_path() -> None:
    with pytest.raises(InvalidMessage, match=r"inner\.value:"):
        registry.decode(Outer.message_tag, b'{"inner": {"value": []}}')


def test_missing_field_is_invalid() -> None:
    with pytest.raises(InvalidMessage, match="y: Field required"):
        registry.decode(Point.message_tag, b'{"x": 1}')


def test_several_errors_are_all_named() -> None:
    with pytest.raises(InvalidMessage) as info:
        registry.decode(Point.message_tag, b'{"x": "a", "y": "b"}')
    assert "x:" in info.value.detail
    assert "y:" in info.value.detail


@pytest.mark.parametrize("body", [b"", b"{", b"[1, 2]", b"\xff\xfe", b"null"])
def test_malformed_body_is_invalid(body: bytes) -> None:
    with pytest.raises(InvalidMessage) as info:
        registry.decode(Point.message_tag, body)
    assert info.value.tag == Point.message_tag
