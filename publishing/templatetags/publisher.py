"""Template filters the pages and the admin share: `{% load publisher %}`."""

from __future__ import annotations

from django import template

from publishing.pipeline.base import short_sha as _short_sha

register = template.Library()


@register.filter
def short_sha(sha: str) -> str:
    """A commit id as pages show it (`publishing.pipeline.base.short_sha`)."""
    return _short_sha(sha or "")
