"""``Directory``: names that hold across the cluster (OTP's ``global``, kept small).

One Redis hash maps each name to its holder: the node, its incarnation and the ref. A name
is held while its node is live: registering over a name whose node left succeeds, and
``whereis`` of such a name finds nothing (and forgets it). One Lua script each, so two nodes
registering one name at once cannot both win.
"""

from __future__ import annotations

from typing import Any

from .._base._spec import validate_name
from ._broker import Broker
from ._wire import Keys

__all__ = ["Directory"]

# Shared by both scripts: is the holder in ``held`` ("node|incarnation|ref") live?
_LIVE = """
local function live(held)
  local node, inc = string.match(held, '^([^|]*)|([^|]*)|')
  local key = ARGV[1] .. node
  return redis.call('GET', key) == inc and redis.call('PTTL', key) >= tonumber(ARGV[2])
end
"""

# KEYS: the names hash; ARGV: node key prefix, least ttl, name, "node|incarnation|ref".
# The holder: the one just registered, or the live one that had it.
_REGISTER = _LIVE + """
local held = redis.call('HGET', KEYS[1], ARGV[3])
if held and held ~= ARGV[4] and live(held) then return held end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
return ARGV[4]
"""

# KEYS: the names hash; ARGV: node key prefix, least ttl, name. The live holder, or nil.
_WHEREIS = _LIVE + """
local held = redis.call('HGET', KEYS[1], ARGV[3])
if not held then return nil end
if live(held) then return held end
redis.call('HDEL', KEYS[1], ARGV[3])
return nil
"""

# KEYS: the names hash; ARGV: name, the holder it must still have.
_UNREGISTER = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class Directory:
    """Cluster-wide names, as node ``name`` (``incarnation``) sees them."""

    def __init__(self, broker: Broker, keys: Keys, ttl: float) -> None:
        self.broker = broker
        self.keys = keys
        self._least = int(ttl * 250)  # as Membership: a quarter of the time to live left
        client = broker.client
        self._register: Any = client.register_script(_REGISTER)
        self._whereis: Any = client.register_script(_WHEREIS)
        self._unregister: Any = client.register_script(_UNREGISTER)

    async def register(self, name: str, node: str, incarnation: int, ref: str) -> str:
        """Hold ``name`` for ``ref`` (its wire form, naming its node): the holder's ref
        after the call (``ref`` if it won)."""
        validate_name(name)
        holder = f"{node}|{incarnation}|{ref}"
        found = await self.broker.call("a register", self._register(
            keys=[self.keys.names], args=[self.keys.node(""), self._least, name, holder]))
        return _ref_of(found)

    async def whereis(self, name: str) -> str | None:
        """The wire form of the ref holding ``name``, or None."""
        found = await self.broker.call("a whereis", self._whereis(
            keys=[self.keys.names], args=[self.keys.node(""), self._least, name]))
        return None if found is None else _ref_of(found)

    async def unregister(self, name: str, node: str, incarnation: int, ref: str) -> bool:
        """Give ``name`` up if ``ref`` still holds it."""
        holder = f"{node}|{incarnation}|{ref}"
        done = await self.broker.call("an unregister", self._unregister(
            keys=[self.keys.names], args=[name, holder]))
        return bool(done)


def _ref_of(holder: Any) -> str:
    text = holder.decode() if isinstance(holder, bytes) else str(holder)
    return text.split("|", 2)[2]
