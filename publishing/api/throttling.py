"""Per-user throttling of the API calls that queue a build: initiate and retry.

The counters live in the `throttle` cache (Redis in production), so every gunicorn worker
process and every web host counts against the same budget. The throttle protects the queue;
it must never be the reason a request hangs or fails: while its cache is unreachable it lets
requests through (fails open) and skips the cache for a short cool-down.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

from django.conf import settings
from django.core.cache import caches
from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView

from publishing.pipeline.network import redact_credentials

logger = logging.getLogger(__name__)

CACHE_ALIAS = "throttle"
# After the cache fails, requests skip it for this long: one slow call per period while Redis is
# away, not one per request.
CACHE_COOLDOWN = 5.0
# A cache that stays down is worth one warning a minute per process, not one per request.
WARNING_INTERVAL = 60.0


class JSONSerializer:
    """The throttle cache's serializer: JSON, where Django's Redis cache would unpickle what it reads.

    Builds share the network with that Redis: a pickle written there by one would run in the web
    process on the next initiate. The throttle stores lists of timestamps, which JSON holds.
    """

    def dumps(self, obj: Any) -> bytes | int:
        # Integers stay integers, as in Django's serializer: incr() works on them in Redis.
        if type(obj) is int:
            return obj
        return json.dumps(obj).encode()

    def loads(self, data: bytes) -> Any:
        try:
            return int(data)
        except ValueError:
            return json.loads(data)


class CacheBreaker:
    """Whether the throttle's cache may be called now; logs its outages, sparingly. Per process."""

    def __init__(
        self, *, cooldown: float = CACHE_COOLDOWN, warning_interval: float = WARNING_INTERVAL
    ) -> None:
        self.cooldown = cooldown
        self.warning_interval = warning_interval
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._open_until = 0.0
            self._last_warning = -math.inf
            self.failures = 0

    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        with self._lock:
            self._open_until = now + self.cooldown
            self.failures += 1
            warn = now - self._last_warning >= self.warning_interval
            if warn:
                self._last_warning = now
        (logger.warning if warn else logger.debug)(
            "throttle cache unavailable (%s: %s); initiate and retry are not throttled for %.0f s",
            type(exc).__name__,
            redact_credentials(str(exc)),
            self.cooldown,
        )

    def succeeded(self) -> None:
        if not self.failures:
            return
        with self._lock:
            failures, self.failures = self.failures, 0
        logger.info("throttle cache reachable again after %d failed call(s)", failures)


breaker = CacheBreaker()


def publishing_start_rate() -> str | None:
    """PUBLISHING_INITIATE_RATE in DRF's notation ("60/min"), or None when the throttle is off."""
    rate = str(settings.PUBLISHING_INITIATE_RATE).strip()
    return None if rate in ("", "0") else rate


class PublishingStartThrottle(UserRateThrottle):
    """At most PUBLISHING_INITIATE_RATE initiate and retry calls per user, across processes and hosts.

    Fails open: when the cache raises, the request is allowed.
    """

    # One scope for initiate and retry: both queue a build, so both draw on one budget.
    scope = "publishing-start"

    def __init__(self) -> None:
        # Per instance, not DRF's import-time `default_cache`: tests and settings may swap caches.
        self.cache = caches[CACHE_ALIAS]
        super().__init__()

    def get_rate(self) -> str | None:
        return publishing_start_rate()

    def allow_request(self, request: Request, view: APIView) -> bool:
        if self.rate is None or breaker.is_open():
            return True
        try:
            allowed = super().allow_request(request, view)
        except Exception as exc:
            # Any backend's error (Redis, memcached, a database): a throttle never causes a 500.
            breaker.failed(exc)
            return True
        breaker.succeeded()
        return allowed
