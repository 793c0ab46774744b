"""What crosses between masters: one stream entry per message, and the keys they live under.

An entry is a small JSON header (kind, target, incarnations, correlation id, tag), a newline,
and the message's JSON body as the runtime encodes it everywhere (no pickle). The sender's
refs leave naming its node (``NODE_CONTEXT_KEY``); the receiver validates the body as the
class registered under the tag, refs to itself made local again.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from protocol import Message, registry

from .._base._ref import NODE_CONTEXT_KEY, SENDER_CONTEXT_KEY, Sender

__all__ = [
    "Entry",
    "Keys",
    "Kind",
    "decode_body",
    "encode_body",
    "pack",
    "unpack",
    "validate_node_name",
]

Kind = Literal["tell", "ask", "reply", "error", "monitor", "demonitor", "down"]
_KINDS = frozenset(("tell", "ask", "reply", "error", "monitor", "demonitor", "down"))
_NODE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def validate_node_name(name: str) -> str:
    """``name`` if it can name a node (ValueError if not)."""
    if not isinstance(name, str) or not _NODE_NAME.fullmatch(name):
        raise ValueError(f"invalid node name {name!r}: 1 to 64 letters, digits, '_', '.', '-'")
    return name


@dataclass(frozen=True, slots=True)
class Entry:
    """One message between two nodes.

    ``to`` is the target as the receiving node knows it (``0.1/5``, ``@root/pool``; empty
    for an answer); ``to_incarnation`` the receiver's incarnation the sender addressed: an
    entry for an earlier one is not delivered. ``corr`` pairs an ask with its answer.
    """

    kind: Kind
    to: str
    to_incarnation: int
    sender: str
    sender_incarnation: int
    corr: int
    tag: str
    body: bytes


def pack(entry: Entry) -> bytes:
    header = json.dumps([entry.kind, entry.to, entry.to_incarnation, entry.sender,
                         entry.sender_incarnation, entry.corr, entry.tag],
                        separators=(",", ":"))
    return header.encode() + b"\n" + entry.body


def unpack(data: bytes) -> Entry:
    """The entry in ``data`` (ValueError if it is not one: another program wrote it)."""
    header, sep, body = data.partition(b"\n")
    if not sep:
        raise ValueError("no header")
    try:
        kind, to, to_incarnation, sender, sender_incarnation, corr, tag = json.loads(header)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad header: {exc}") from exc
    if (kind not in _KINDS or not isinstance(to, str) or not isinstance(sender, str)
            or not isinstance(tag, str)
            or not all(isinstance(n, int) for n in (to_incarnation, sender_incarnation, corr))):
        raise ValueError("bad header fields")
    return Entry(kind, to, to_incarnation, sender, sender_incarnation, corr, tag, body)


def encode_body(message: Message, node: tuple[str, int]) -> bytes:
    """The JSON of ``message`` leaving node ``node``. (File descriptors cannot leave the
    host: a handle field arrives as a number the receiver refuses, :class:`InvalidMessage`.)
    """
    return type(message).__pydantic_serializer__.to_json(
        message, context={NODE_CONTEXT_KEY: node}
    )


def decode_body(tag: str, body: bytes, sender: Sender, node: tuple[str, int]) -> Message:
    """The message of an entry, validated as the class registered under ``tag``
    (:class:`DecodeError` if it cannot be)."""
    return registry.decode(tag, body, {SENDER_CONTEXT_KEY: sender, NODE_CONTEXT_KEY: node})


class Keys:
    """The Redis keys of one cluster (``prefix``: ``?prefix=`` of the URL)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}:cluster"
        self.members = f"{self.prefix}:members"  # hash: node -> incarnation
        self.names = f"{self.prefix}:names"  # hash: name -> node, incarnation, ref

    def node(self, name: str) -> str:
        """The node's membership key (its incarnation, with a time to live)."""
        return f"{self.prefix}:node:{name}"

    def inbox(self, name: str) -> str:
        """The node's stream of requests (tells, asks, monitors): bounded."""
        return f"{self.prefix}:inbox:{name}"

    def bound(self, name: str) -> str:
        """How many entries the node's inbox may hold (it sets it when it joins)."""
        return f"{self.prefix}:bound:{name}"

    def answers(self, name: str) -> str:
        """The node's stream of answers to its asks: never behind requests."""
        return f"{self.prefix}:answers:{name}"

