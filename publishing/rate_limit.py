"""A global sliding-window limit on job starts, kept in Redis.

Dramatiq's `WindowRateLimiter` says yes or no; deferring a job needs to know
*when* the next slot frees, so this one answers with the wait. One Lua script
does the whole check-and-take atomically on Redis' own clock, so every worker
on every host sees the same window whatever their clocks say.

The window is shared, but not first come, first served: when starts are
scarce, a free slot goes to the owner with the fewest starts in the window
among those waiting, so one owner's backlog cannot hold another's first
publishing behind it. Deferred messages are remembered in a waiting room
that forgets each of them shortly after its expected wake, so a message that
never comes back holds nobody up for long.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from django.conf import settings

# The window: KEYS[1], a sorted set of starts (member `<owner>:<message id>:<ms>`, score its ms).
# The waiting room (fair only), kept together and expiring together:
#   KEYS[2] deferred messages (member `<owner>:<message id>`, score when its wait expires: wake + grace),
#   KEYS[3] their owners (member the owner, score the latest expected wake of one of its messages),
#   KEYS[4] a hash owner -> how many of its messages KEYS[2] holds (an owner leaves with its last one).
# ARGV: window ms, limit, owner, message id, jitter ms, grace ms, margin ms, fair (1 or 0).
# Returns {wait ms, reason}: {0, 0} the start is taken; {wait, 1} the window is full; {wait, 2} a slot
# is free but kept for a waiting owner with fewer starts in the window. A start at t counts up to and
# including t + window. Work per call: the window's members plus O(log n) in the waiting room, so a
# backlog of thousands costs no more per start than a few.
_ACQUIRE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local owner, me = ARGV[3], ARGV[3] .. ':' .. ARGV[4]
local jitter, grace, margin = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local fair = ARGV[8] == '1'

local function owner_of(member)
  return string.match(member, '^([^:]*)')
end

local function forget(member)
  if redis.call('ZREM', KEYS[2], member) == 1 then
    local who = owner_of(member)
    if redis.call('HINCRBY', KEYS[4], who, -1) <= 0 then
      redis.call('HDEL', KEYS[4], who)
      redis.call('ZREM', KEYS[3], who)
    end
  end
end

redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now_ms - window))
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local used = #members
local starts = {}
for _, member in ipairs(members) do
  local who = owner_of(member)
  starts[who] = (starts[who] or 0) + 1
end
local mine = starts[owner] or 0

-- Owners waiting with fewer starts than this one's: each has a free slot kept for it.
local favoured = 0
if fair then
  -- Expired waits do not count: a lost or cancelled message holds nobody up for longer than its grace.
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. now_ms)) do
    forget(member)
  end
  if mine > 0 then
    local waiting_in_window = 0
    for who, count in pairs(starts) do
      if redis.call('ZSCORE', KEYS[3], who) then
        waiting_in_window = waiting_in_window + 1
        if count < mine then
          favoured = favoured + 1
        end
      end
    end
    favoured = favoured + redis.call('ZCARD', KEYS[3]) - waiting_in_window
  end
end

if used + favoured < limit then
  redis.call('ZADD', KEYS[1], now_ms, me .. ':' .. now_ms)
  redis.call('PEXPIRE', KEYS[1], window + 1000)
  if fair then
    forget(me)
  end
  return {0, 0}
end

local wait, reason
if used < limit then
  -- Back just after the first favoured owner's expected wake. The owners ahead of it in this order
  -- that are not favoured have starts in the window, so looking at used + 1 of them finds it.
  reason = 2
  local first = now_ms
  local owners = redis.call('ZRANGE', KEYS[3], 0, used, 'WITHSCORES')
  for i = 1, #owners, 2 do
    if (starts[owners[i]] or 0) < mine then
      first = tonumber(owners[i + 1])
      break
    end
  end
  wait = math.max(first - now_ms, 0) + margin + jitter
else
  reason = 1
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  wait = tonumber(oldest[2]) + window - now_ms + 1 + jitter
end

if fair then
  local wake = now_ms + wait
  if redis.call('ZADD', KEYS[2], wake + grace, me) == 1 then
    redis.call('HINCRBY', KEYS[4], owner, 1)
  end
  redis.call('ZADD', KEYS[3], wake, owner)
  local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
  local expire_at = tonumber(last[2]) + 1000
  for i = 2, 4 do
    redis.call('PEXPIREAT', KEYS[i], expire_at)
  end
end
return {wait, reason}
"""

# KEYS as for _ACQUIRE; ARGV[1] `<owner>:<message id>`. A deferred message that will not come back
# (cancelled) leaves the waiting room at once rather than when its wait expires.
_WITHDRAW = """
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local who = string.match(ARGV[1], '^([^:]*)')
  if redis.call('HINCRBY', KEYS[4], who, -1) <= 0 then
    redis.call('HDEL', KEYS[4], who)
    redis.call('ZREM', KEYS[3], who)
  end
  return 1
end
return 0
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


def publishing_rate() -> Rate | None:
    """PUBLISHING_RATE_LIMIT (read by the settings as starts per seconds); None if there is none."""
    if settings.PUBLISHING_RATE_LIMIT is None:
        return None
    limit, seconds = settings.PUBLISHING_RATE_LIMIT
    return Rate(limit=limit, window_ms=max(1, round(seconds * 1000)))


@dataclass(frozen=True)
class Verdict:
    """What `WindowLimiter.acquire` answers."""

    taken: bool
    wait_ms: int  # when not taken: come back in this many ms (the jitter asked for included)
    for_another_owner: bool = False  # a slot is free, but kept for a waiting owner with fewer starts


class WindowLimiter:
    """At most `rate.limit` acquisitions in any rolling `rate.window_ms`, across processes.

    Fair (the default): while owners wait, a free slot goes to the one with the fewest starts in the
    window, so one owner's backlog cannot hold another's first start behind it. A deferred message
    counts as waiting until `grace_ms` after the wake it was given.
    """

    # How long after its expected wake a deferred message still has a slot kept for it: covers the
    # broker's delay (a worker moves due messages about once a second); past it, the wait is forgotten.
    GRACE_MS = 2_000
    # A message refused in favour of another owner comes back this long after that owner's wake.
    MARGIN_MS = 500

    def __init__(self, client: redis.Redis, key: str, rate: Rate, *, fair: bool = True) -> None:
        self.key = key
        self.rate = rate
        self.fair = fair
        self._keys = [key, f"{key}:waiting", f"{key}:waiting-owners", f"{key}:waiting-counts"]
        self._script = client.register_script(_ACQUIRE)
        self._withdraw = client.register_script(_WITHDRAW)
        self._usage = client.register_script(_USAGE)

    def acquire(self, token: str, *, owner: str, jitter_ms: int = 0) -> Verdict:
        """Take a slot for `token` (a message id) on behalf of `owner`, or say when to come back."""
        wait, reason = self._script(
            keys=self._keys,
            args=[
                self.rate.window_ms,
                self.rate.limit,
                _owner_key(owner),
                token,
                jitter_ms,
                self.GRACE_MS,
                self.MARGIN_MS,
                int(self.fair),
            ],
        )
        return Verdict(taken=int(reason) == 0, wait_ms=int(wait), for_another_owner=int(reason) == 2)

    def withdraw(self, token: str, *, owner: str) -> bool:
        """Forget a deferred message that will not come back; True if it was waiting."""
        return bool(self._withdraw(keys=self._keys, args=[f"{_owner_key(owner)}:{token}"]))

    def usage(self) -> int:
        """How many starts the current window holds."""
        return int(self._usage(keys=[self.key], args=[self.rate.window_ms]))


def _owner_key(owner: str) -> str:
    # The script splits members at the first ':'; capped, as a message's options may carry anything.
    return owner.replace(":", "_")[:64]


def publishing_limiter(client: redis.Redis) -> WindowLimiter | None:
    """The limit on publishing starts from PUBLISHING_RATE_LIMIT(_FAIR) on `client`; None if there is none."""
    rate = publishing_rate()
    if rate is None:
        return None
    key = f"{settings.BROKER_NAMESPACE}:publishing-starts"
    return WindowLimiter(client, key, rate, fair=settings.PUBLISHING_RATE_LIMIT_FAIR)
