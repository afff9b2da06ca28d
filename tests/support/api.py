"""Checking the API's answers, and a cache whose server is gone."""

from __future__ import annotations

from typing import Any

import redis
from django.core.cache.backends.base import BaseCache

# The error envelope's code for each status the authorization and throttle tests meet.
ERROR_CODES = {
    401: "NOT_AUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    429: "THROTTLED",
}


def assert_error(response: Any, status: int) -> None:
    """`response` is the error envelope for `status`: its code and a detail."""
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) >= {"code", "detail"}, body
    assert body["code"] == ERROR_CODES[status]
    assert body["detail"]


class BrokenCache(BaseCache):
    """A cache whose server is gone: every call raises, as Django's RedisCache does then.

    Name it in CACHES as `tests.support.api.BrokenCache`; `calls` counts the calls that failed.
    """

    calls = 0

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    get = set = add = delete = clear = get_many = set_many = _fail
