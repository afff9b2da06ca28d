"""Links to an object's views, as DRF's `reverse` makes them, with Django's URL reversal done once per view.

The links of a publishing were most of the time its answer took: Django reverses a view by matching
its patterns each time. A view's path for one pk differs from its path for another only in the pk,
so it is reversed once per URL configuration and script prefix, with a placeholder, and the pk
filled in. What else could change a link (a versioning scheme, a format suffix, a pk that is not a
UUID) goes through DRF's `reverse` itself; tests/unit/test_serializers.py compares the two.
"""

from __future__ import annotations

import functools
import uuid
from typing import Any

from django.urls import get_script_prefix, get_urlconf
from django.urls import reverse as django_reverse
from rest_framework.request import Request
from rest_framework.reverse import preserve_builtin_query_params, reverse

# A pk that Django's reverse writes unchanged (a UUID's text needs no quoting), found once in a path.
PLACEHOLDER = str(uuid.UUID(int=0))


@functools.lru_cache(maxsize=256)
def _path(view: str, urlconf: Any, prefix: str) -> str:
    # `prefix` keys the cache only: Django's reverse reads the thread's script prefix itself.
    return django_reverse(view, urlconf=urlconf, kwargs={"pk": PLACEHOLDER})


class Links:
    """The absolute links of one answer: `links(view, pk)` is `reverse(view, kwargs={"pk": pk}, ...)`."""

    def __init__(self, request: Request, format: str | None = None) -> None:
        self.request = request
        self.format = format
        self.plain = format is None and getattr(request, "versioning_scheme", None) is None
        self.urlconf, self.prefix = get_urlconf(), get_script_prefix()

    def __call__(self, view: str, pk: Any) -> str:
        if not (self.plain and isinstance(pk, uuid.UUID)):
            return reverse(view, kwargs={"pk": pk}, request=self.request, format=self.format)
        path = _path(view, self.urlconf, self.prefix).replace(PLACEHOLDER, str(pk))
        return preserve_builtin_query_params(self.request.build_absolute_uri(path), self.request)
