"""A global sliding-window limit on job starts, kept in Redis (SPEC §4).

Dramatiq's `WindowRateLimiter` says yes or no; deferring a job needs to know
*when* the next slot frees, so this one answers with the wait. One Lua script
does the whole check-and-take atomically on Redis' own clock, so every worker
on every host sees the same window whatever their clocks say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import redis
from django.conf import settings

_SPEC = re.compile(r"^\s*(?P<limit>\d+)\s*/\s*(?P<window>\d+(?:\.\d+)?)\s*s?\s*$")

# KEYS[1] the window's sorted set (member: a start, score: its time in ms).
# ARGV[1] window in ms, ARGV[2] limit, ARGV[3] a unique member for this start.
# Returns 0 when the start is taken, else the ms until the oldest start leaves
# the window. A start at t counts up to and including t + window.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - window))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], now_ms, ARGV[3] .. ':' .. now_ms)
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return tonumber(oldest[2]) + window - now_ms + 1
"""


# KEYS[1] the window's sorted set; ARGV[1] window in ms. Starts in the window now.
_USAGE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], now_ms - tonumber(ARGV[1]), '+inf')
"""


@dataclass(frozen=True)
class Rate:
    limit: int
    window_ms: int

    def __str__(self) -> str:
        return f"{self.limit}/{self.window_ms / 1000:g}s"


def parse_rate(text: str) -> Rate | None:
    """`"5/60s"` -> Rate(5, 60 000); `"0"` or `""` -> None (no limit). ValueError otherwise."""
    if text.strip() in {"", "0"}:
        return None
    match = _SPEC.match(text)
    if not match or int(match["limit"]) < 1 or float(match["window"]) <= 0:
        raise ValueError(f"PUBLISHING_RATE_LIMIT must look like '5/60s' or be '0', not {text!r}")
    return Rate(limit=int(match["limit"]), window_ms=int(float(match["window"]) * 1000))


class WindowLimiter:
    """At most `rate.limit` acquisitions in any rolling `rate.window_ms`, across processes."""

    def __init__(self, client: redis.Redis, key: str, rate: Rate) -> None:
        self.key = key
        self.rate = rate
        self._script = client.register_script(_ACQUIRE)
        self._usage = client.register_script(_USAGE)

    def acquire(self, token: str) -> int:
        """Take a slot (returns 0) or return the milliseconds until one frees."""
        wait = self._script(keys=[self.key], args=[self.rate.window_ms, self.rate.limit, token])
        return int(wait)

    def usage(self) -> int:
        """How many starts the current window holds."""
        return int(self._usage(keys=[self.key], args=[self.rate.window_ms]))


def publishing_limiter(client: redis.Redis) -> WindowLimiter | None:
    """The limit on publishing starts from PUBLISHING_RATE_LIMIT, on `client`; None when there is none."""
    rate = parse_rate(settings.PUBLISHING_RATE_LIMIT)
    if rate is None:
        return None
    return WindowLimiter(client, f"{settings.BROKER_NAMESPACE}:publishing-starts", rate)
