"""A worker's output cut into lines (sans-IO): long lines cut, memory bounded."""

from __future__ import annotations

from actors._running._processes import OutputLines


def test_lines_come_whole_however_the_bytes_are_split() -> None:
    lines = OutputLines()
    data = b"one\ntwo\n\nthree"
    found = [line for i in range(len(data)) for line in lines.feed(data[i:i + 1])]
    assert found == ["one", "two", ""]
    assert lines.end() == ["three"]
    assert lines.end() == []


def test_a_long_line_keeps_its_start_and_says_how_much_was_cut() -> None:
    lines = OutputLines(limit=8)
    assert lines.feed(b"x" * 20 + b"\nnext\n") == ["xxxxxxxx … [cut: 12 more bytes]", "next"]
    assert lines.feed(b"y" * 5) == []
    assert lines.feed(b"y" * 5 + b"\n") == ["yyyyyyyy … [cut: 2 more bytes]"]


def test_a_line_that_never_ends_holds_no_more_than_the_limit() -> None:
    lines = OutputLines(limit=1024)
    for _ in range(1000):
        assert lines.feed(b"\xff" * 65536) == []
        assert lines.buffered <= 1024
    (last,) = lines.end()
    assert last.endswith(f" … [cut: {1000 * 65536 - 1024} more bytes]")
    assert last.startswith("\ufffd")  # binary, shown as text
