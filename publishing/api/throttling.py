"""Throttling: per user of the API calls that queue a build (initiate and retry), and of failed logins
per username and per client address (the token endpoint, the admin's and the browsable API's login).

The counters live in the `throttle` cache (Redis in production), so every gunicorn worker
process and every web host counts against the same budget. A throttle must never be the reason a
request hangs or fails: while its cache is unreachable it skips the cache for a short cool-down
(a circuit breaker, `publishing/breaker.py`, per throttle and process). The initiate throttle then
lets requests through (fails open); the login throttle counts in the process's own memory instead,
so that a password guesser still meets a limit (each process's).
"""

from __future__ import annotations

import functools
import hashlib
import html
import json
import logging
import math
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle, UserRateThrottle
from rest_framework.views import APIView

from publishing.breaker import CircuitBreaker, CircuitOpen
from publishing.durations import human_duration

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


def _cache_breaker(consequence: str) -> CircuitBreaker:
    """A breaker for the throttle cache. Any backend's error (Redis, memcached, a database) opens it: a
    throttle never causes a 500."""
    return CircuitBreaker(
        name="throttle cache",
        cooldown=CACHE_COOLDOWN,
        consequence=consequence,
        warning_interval=WARNING_INTERVAL,
    )


breaker = _cache_breaker("initiate and retry are not throttled")


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
        if self.rate is None:
            return True
        allow = super().allow_request
        try:
            return breaker.call(lambda: allow(request, view))
        except CircuitOpen:
            return True


# --- Failed logins --------------------------------------------------------------------------------

login_breaker = _cache_breaker("this process counts failed logins on its own")
# Per-process memory, for while the shared cache is away.
LOCAL_CACHE_ALIAS = "default"
TOO_MANY_LOGINS = "Too many failed logins for this username or from this address."
# Where a login page's attempt waits for the `user_logged_in` signal.
REQUEST_ATTRIBUTE = "_publishing_login_attempt"


@dataclass
class LoginAttempt:
    """A login attempt, counted as failed until `login_succeeded` gives it back."""

    keys: list[tuple[str, str]] = field(default_factory=list)  # (cache alias, key) of each counter
    wait: float | None = None  # seconds until the throttled client may try again; None: allowed


def _clock() -> float:
    return time.time()


def _login_budgets(request: HttpRequest | Request, username: str | None) -> list[tuple[str, str, int, int]]:
    """(scope, what is counted, limit, period in seconds) of each budget this attempt draws on."""
    budgets = []
    address_rate = settings.LOGIN_FAILURES_PER_ADDRESS
    if address_rate:
        # DRF's reading of the client address: X-Forwarded-For only as far as NUM_PROXIES trusts it.
        address = str(BaseThrottle().get_ident(request))  # type: ignore[arg-type]
        budgets.append(("address", address, address_rate[0], _whole_seconds(address_rate[1])))
    username_rate = settings.LOGIN_FAILURES_PER_USERNAME
    if username_rate and username:
        # Read as the login form and DRF's serializer read it (NFKC, stripped), and without case: no
        # spelling that logs the same account in gets a budget of its own.
        normalized = unicodedata.normalize("NFKC", username).strip().casefold()
        budgets.append(("username", normalized, username_rate[0], _whole_seconds(username_rate[1])))
    return budgets


def _whole_seconds(seconds: float) -> int:
    # Counters live in clock-aligned periods of whole seconds, which also name their cache keys.
    return max(1, math.ceil(seconds))


def _count(cache: BaseCache, key: str, period: int) -> int:
    cache.add(key, 0, timeout=period + 1)
    try:
        return int(cache.incr(key))
    except ValueError:  # expired in between
        cache.set(key, 1, timeout=period + 1)
        return 1


def _shared_count(key: str, period: int) -> int:
    return _count(caches[CACHE_ALIAS], key, period)


def login_attempt(request: HttpRequest | Request, username: Any) -> LoginAttempt:
    """Count a login attempt against its username's and its client address's budgets of failed logins.

    Counted before the password is checked, so that concurrent guesses cannot all pass one check;
    `wait` is set when a budget is spent, and the caller then refuses without checking the password.
    Never raises for the cache: while the shared one fails, this process counts on its own.
    """
    attempt = LoginAttempt()
    now = _clock()
    named = username if isinstance(username, str) else None
    for scope, value, limit, period in _login_budgets(request, named):
        window = int(now // period)
        # Hashed: a key never holds what a client sent, however long or odd.
        digest = hashlib.sha256(value.encode()).hexdigest()[:32]
        key = f"login:{scope}:{digest}:{period}:{window}"
        alias = CACHE_ALIAS
        try:
            count = login_breaker.call(functools.partial(_shared_count, key, period))
        except CircuitOpen:
            alias = LOCAL_CACHE_ALIAS
            count = _count(caches[alias], key, period)
        attempt.keys.append((alias, key))
        if count > limit:
            attempt.wait = max(attempt.wait or 0.0, (window + 1) * period - now)
            if count == limit + 1:
                logger.warning(
                    "login throttled: %d failed logins for %s %r within %d s; refused for %.0f s",
                    limit,
                    scope,
                    value,
                    period,
                    attempt.wait,
                )
    return attempt


def login_succeeded(attempt: LoginAttempt) -> None:
    """Give a successful login's count back: only failed logins spend the budgets."""
    for alias, key in attempt.keys:
        try:
            caches[alias].decr(key)
        except ValueError:  # expired meanwhile: nothing to give back
            continue
        except Exception as exc:
            # The shared cache went away since the attempt was counted: the count merely stays.
            login_breaker.failed(exc)


def on_user_logged_in(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """`user_logged_in` receiver: a login page's successful attempt gives its count back."""
    attempt = getattr(request, REQUEST_ATTRIBUTE, None)
    if isinstance(attempt, LoginAttempt):
        login_succeeded(attempt)


def login_throttled(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """A Django login page whose POSTs answer 429 with Retry-After once a budget of failed logins is
    spent."""

    @functools.wraps(view)
    def throttled_view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        attempt = login_attempt(request, request.POST.get("username"))
        if attempt.wait is not None:
            return too_many_logins_page(attempt.wait, login_page=request.get_full_path())
        setattr(request, REQUEST_ATTRIBUTE, attempt)
        return view(request, *args, **kwargs)

    return throttled_view


def retry_after(wait: float) -> int:
    """Whole seconds for Retry-After, at least 1."""
    return max(math.ceil(wait), 1)


def too_many_logins_page(wait: float, *, login_page: str) -> HttpResponse:
    """The login pages' 429: a plain page (they are HTML), saying when to come back and what else to do."""
    body = (
        "<!doctype html><title>Too many failed logins</title>"
        f"<h1>Too many failed logins</h1><p>{html.escape(TOO_MANY_LOGINS)} "
        f"Try again in {human_duration(retry_after(wait))}.</p>"
        "<p>If you have forgotten your password, ask an administrator to set a new one. "
        f'<a href="{html.escape(login_page)}">Back to the login page</a></p>'
    )
    return HttpResponse(body, status=429, headers={"Retry-After": str(retry_after(wait))})


def login_username(data: Any) -> Any:
    """The username a token request's body names, whatever the body holds."""
    return data.get("username") if isinstance(data, Mapping) else None
