"""The web API: DRF, its schema, the initiate and login throttles and their cache, /metrics access."""

from __future__ import annotations

from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from .broker import BROKER_NAMESPACE, PUBLISHING_BROKER_SOCKET_TIMEOUT, REDIS_URL
from .validation import (
    DRF_RATE,
    RATE_EXPECTED,
    parse_rate,
    read_bool,
    read_int,
    read_matching,
    read_parsed,
    read_str,
)

__all__ = [
    "CACHES",
    "LOGIN_FAILURES_PER_ADDRESS",
    "LOGIN_FAILURES_PER_USERNAME",
    "METRICS_ALLOW_ANONYMOUS",
    "METRICS_TOKEN",
    "NUM_PROXIES",
    "PUBLISHING_INITIATE_RATE",
    "REST_FRAMEWORK",
    "SPECTACULAR_SETTINGS",
]

# initiate and retry calls per user ("60/min", "1000/day"), counted across every web process; "0" or
# "" turns the throttle off. Beyond it: 429 THROTTLED with Retry-After.
PUBLISHING_INITIATE_RATE: str = read_matching(
    "PUBLISHING_INITIATE_RATE", "60/min", DRF_RATE, "N/s, N/min, N/hour, N/day or 0 (off)"
)
# Failed logins (token endpoint, admin and browsable API login pages) per username and per client
# address, in clock-aligned periods, counted across every web process. Beyond either: 429 with
# Retry-After until the period ends, for every attempt of that username or address, right password
# or not. A successful login spends nothing. Read as (failures, seconds); None is no limit.
LOGIN_FAILURES_PER_USERNAME: tuple[int, float] | None = read_parsed(
    "LOGIN_FAILURES_PER_USERNAME", "10/hour", parse_rate, RATE_EXPECTED
)
# The same per client address.
LOGIN_FAILURES_PER_ADDRESS: tuple[int, float] | None = read_parsed(
    "LOGIN_FAILURES_PER_ADDRESS", "50/hour", parse_rate, RATE_EXPECTED
)
# Reverse proxies in front of the web tier that append to X-Forwarded-For: the client address is the
# one the outermost of them saw. 0 (the default) believes no header: REMOTE_ADDR is the client.
NUM_PROXIES: int = read_int("NUM_PROXIES", 0)

# When set, GET /metrics wants `Authorization: Bearer <METRICS_TOKEN>`. Production refuses to start
# without one unless METRICS_ALLOW_ANONYMOUS says that anyone who reaches /metrics may scrape it (a
# private network, or a proxy that keeps /metrics off the public route).
METRICS_TOKEN: str = read_str("METRICS_TOKEN", "")
# Production only: true lets it start without METRICS_TOKEN.
METRICS_ALLOW_ANONYMOUS: bool = read_bool("METRICS_ALLOW_ANONYMOUS", False)

# The throttle's counters must be shared by every gunicorn worker and web host: Redis. A request
# never waits on a sick Redis (one short timeout, no retries; the throttle then lets requests
# through). The default cache stays per process: nothing else needs sharing.
CACHES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "throttle": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": f"{BROKER_NAMESPACE}-throttle",
        "OPTIONS": {
            "socket_connect_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
            "socket_timeout": PUBLISHING_BROKER_SOCKET_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
            # Not pickle: what the web process reads from Redis is data, never code.
            "serializer": "publishing.api.throttling.JSONSerializer",
        },
    },
}

REST_FRAMEWORK = {
    # Token first: an anonymous API call then gets 401 with WWW-Authenticate
    # rather than the 403 that session authentication would give.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON, and for a browser DRF's pages made a UI (forms that keep what was sent, Publisher's name).
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "publishing.api.browsable.BrowsableAPIRenderer",
    ],
    # DRF's three, the JSON one bounded in size and depth (a 400, never a RecursionError's 500).
    "DEFAULT_PARSER_CLASSES": [
        "publishing.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "publishing.api.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "publishing.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "publisher_project.exception_handler.api_exception_handler",
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
    # DRF's default (None) takes X-Forwarded-For as it comes: any client could pick its own address.
    "NUM_PROXIES": NUM_PROXIES,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Publisher API",
    "DESCRIPTION": "Build a project, package an artifact and submit it to a store, as a background job.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and ReDoc from drf-spectacular-sidecar's pinned copies, as static files of this
    # service: the pages work without a network, and no third party sees who reads them.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "PublishingStatusEnum": "publishing.models.Publishing.Status",
        "HealthStateEnum": "publishing.api.bodies.HEALTH_STATES",
    },
}
