"""``Membership``: which masters are in the cluster, kept in Redis by heartbeats.

Each node holds one key, its incarnation, with a time to live (``ttl``) that its heartbeat
renews every ``ttl / 8``; the members hash names every node that joined. A node is *live*
while its key holds the incarnation and has at least a quarter of its time to live left:
a node that missed six heartbeats in a row (killed, partitioned, stalled) is down for
everyone within ``ttl`` of its last one, before its key even expires. An incarnation is
the time of the node's start in microseconds: a restarted node has a larger one, and takes
its name over from a previous incarnation that is still listed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .._base._events import Event
from ._broker import Broker
from ._wire import Keys

__all__ = ["Membership", "NodeJoined", "NodeLeft", "new_incarnation"]

log = logging.getLogger("actors.cluster")

# KEYS: the node's key, the members hash; ARGV: name, incarnation, ttl (ms).
# 0: a later incarnation of this name holds it (this one was replaced); 2: this one left
# (a heartbeat that was on its way when the node left does not bring it back).
_BEAT = """
local held = redis.call('GET', KEYS[1])
if held == 'left:' .. ARGV[2] then return 2 end
if held and string.sub(held, 1, 5) ~= 'left:' and tonumber(held) > tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the members hash; ARGV: the prefix of node keys, the least time to live (ms) of a
# live node. Returns name, incarnation, name, incarnation, ... of the live nodes; forgets
# the nodes whose key expired.
_LOOK = """
local members = redis.call('HGETALL', KEYS[1])
local live = {}
for i = 1, #members, 2 do
  local key = ARGV[1] .. members[i]
  local held = redis.call('GET', key)
  if not held or string.sub(held, 1, 5) == 'left:' then
    redis.call('HDEL', KEYS[1], members[i])
  elseif redis.call('PTTL', key) >= tonumber(ARGV[2]) then
    table.insert(live, members[i])
    table.insert(live, held)
  end
end
return live
"""


def new_incarnation() -> int:
    return time.time_ns() // 1000


class NodeJoined(Event, tag="actors.NodeJoined"):
    """A master joined the cluster, or is back in it (``path`` is ``"cluster"``)."""

    node: str
    incarnation: int


class NodeLeft(Event, tag="actors.NodeLeft"):
    """A master left the cluster: stopped, killed, cut off, or replaced by a new
    incarnation (``path`` is ``"cluster"``). Its refs fail with ``NodeDown``, monitors of its
    actors get ``ActorDown(reason="nodedown")``, its names are released."""

    node: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class Change:
    joined: list[tuple[str, int]]
    left: list[tuple[str, int]]


class Membership:
    """This node's heartbeat and its view of the others (``live``: name -> incarnation)."""

    def __init__(self, broker: Broker, keys: Keys, name: str, incarnation: int,
                 ttl: float) -> None:
        self.broker = broker
        self.keys = keys
        self.name = name
        self.incarnation = incarnation
        self.ttl = ttl
        self.live: dict[str, int] = {}
        self.replaced = False  # a later incarnation of this node's name took it over
        self.leaving = False  # the node is closing: no more heartbeats
        self._beat: Any = broker.client.register_script(_BEAT)
        self._look: Any = broker.client.register_script(_LOOK)

    @property
    def every(self) -> float:
        """Seconds between heartbeats."""
        return self.ttl / 8

    async def beat(self) -> None:
        """Renew this node's key (BrokerUnavailable if Redis does not answer)."""
        if self.leaving:
            return
        held = await self.broker.call("a heartbeat", self._beat(
            keys=[self.keys.node(self.name), self.keys.members],
            args=[self.name, self.incarnation, int(self.ttl * 1000)]), probe=True)
        if held == 0 and not self.replaced:
            self.replaced = True
            log.error("node %s (incarnation %d) was replaced by a later incarnation of the "
                      "same name: it leaves the cluster", self.name, self.incarnation)

    async def look(self) -> Change:
        """Read who is live; what changed since the last look."""
        found = await self.broker.call("a membership read", self._look(
            keys=[self.keys.members],
            args=[self.keys.node(""), int(self.ttl * 250)]), probe=True)
        now: dict[str, int] = {}
        for i in range(0, len(found) - 1, 2):
            name = found[i].decode() if isinstance(found[i], bytes) else str(found[i])
            now[name] = int(found[i + 1])
        if self.replaced:
            now.pop(self.name, None)
        return self.adopt(now)

    def adopt(self, now: dict[str, int]) -> Change:
        """Take ``now`` as the live nodes; what changed (a new incarnation is one node
        leaving and another joining)."""
        left = [(n, i) for n, i in self.live.items() if now.get(n) != i and n != self.name]
        joined = [(n, i) for n, i in now.items() if self.live.get(n) != i and n != self.name]
        self.live = now
        return Change(joined, left)
