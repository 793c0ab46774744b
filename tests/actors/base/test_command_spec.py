"""``command(...)``: an external program's child spec, checked when it is built."""

from __future__ import annotations

from typing import Any

import pytest

from actors import CommandSpec, command, supervisor


def test_a_command_spec_is_frozen_data() -> None:
    spec = command("web", ["node", "server.js"], env={"PORT": "0"}, sockets=["root/web"],
                   restart="transient", shutdown=2)
    assert isinstance(spec, CommandSpec)
    assert spec.argv == ("node", "server.js")
    assert spec.sockets == ("root/web",)
    assert dict(spec.env or {}) == {"PORT": "0"}
    assert spec.shutdown == 2.0
    assert supervisor("root", children=[spec]).child("web") is spec


@pytest.mark.parametrize(("argv", "options", "error"), [
    ("node server.js", {}, TypeError),
    ([], {}, TypeError),
    (["node", 3], {}, TypeError),
    (["a\0b"], {}, TypeError),
    (["node"], {"restart": "sometimes"}, ValueError),
    (["node"], {"shutdown": -1}, ValueError),
    (["node"], {"env": {"A=B": "c"}}, TypeError),
    (["node"], {"env": {"A": 1}}, TypeError),
    (["node"], {"sockets": "root/web"}, TypeError),
    (["node"], {"stdin": "text"}, TypeError),
])
def test_bad_arguments_are_refused(argv: Any, options: dict[str, Any],
                                   error: type[Exception]) -> None:
    with pytest.raises(error):
        command("web", argv, **options)


def test_a_bad_name_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid name"):
        command("a/b", ["node"])
