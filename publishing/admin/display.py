"""What every admin page shows the same way: badges, progress, durations, ids, links, redacted URLs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from publishing.durations import human_duration, time_ago
from publishing.models import Project, Publishing
from publishing.pipeline.base import short_sha
from publishing.redaction import redacted_url

MEDIA_CSS = {"all": ["publishing/admin.css"]}


def staff_user(request: HttpRequest) -> User:
    """The staff user a write is judged as; anyone else is refused."""
    user = request.user
    if not isinstance(user, User) or not user.is_staff:
        raise PermissionDenied
    return user


def badge(state: str, *, live: bool = False) -> SafeString:
    """A coloured badge; the colours live in publishing/admin.css, one class a state."""
    if live:
        return format_html('<span class="pub-badge pub-{}" data-publishing-status>{}</span>', state, state)
    return format_html('<span class="pub-badge pub-{}">{}</span>', state, state)


def progress(percent: int) -> SafeString:
    """A progress bar with its percentage, which the detail page's refresh updates."""
    return format_html(
        '<span class="pub-progress" data-publishing-progress>'
        '<progress value="{}" max="100">{}%</progress><span>{}%</span></span>',
        percent,
        percent,
        percent,
    )


def span(start: datetime | None, end: datetime | None, *, running: bool) -> str:
    """How long a run took, or has taken so far while it runs; a dash before it starts."""
    if start is None:
        return "—"
    if end is None:
        return f"{human_duration((timezone.now() - start).total_seconds())} so far" if running else "—"
    return human_duration((end - start).total_seconds())


def short_id(pk: uuid.UUID) -> SafeString:
    """The first 8 of 32 hex digits tell rows apart; the whole id is a hover (and a search) away."""
    return format_html('<span title="{}">{}</span>', pk, str(pk)[:8])


def commit(sha: str, subject: str = "") -> SafeString | str:
    """A commit's short id; its whole id and subject a hover away."""
    if not sha:
        return "—"
    return format_html('<code title="{} {}">{}</code>', sha, subject, short_sha(sha))


def code(text: str) -> SafeString:
    """An error code such as `TARGET_UNAVAILABLE`, which a narrow column may wrap after each `_`."""
    parts = format_html_join(mark_safe("_<wbr>"), "{}", ((part,) for part in text.split("_")))
    return format_html("<code>{}</code>", parts)


def ago(moment: datetime) -> SafeString:
    """`3 min ago`, with the exact second (the project's format) on hover."""
    exact = formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")
    elapsed = time_ago((timezone.now() - moment).total_seconds())
    return format_html('<time datetime="{}" title="{}">{}</time>', moment.isoformat(), exact, elapsed)


def publishing_link(publishing: Publishing) -> SafeString:
    """The publishing's id, linked to its admin page."""
    url = reverse("admin:publishing_publishing_change", args=[quote(publishing.pk)])
    return format_html('<a href="{}">{}</a>', url, publishing.pk)


class RedactedURLs:
    """The repository and target columns of a project or publishing, credentials shown as `***`."""

    @admin.display(description="repository", ordering="repository_url")
    def repository(self, obj: Project | Publishing) -> str:
        return redacted_url(obj.repository_url)

    @admin.display(description="target", ordering="target_url")
    def target(self, obj: Project | Publishing) -> str:
        return redacted_url(obj.target_url)


class RecordInline(admin.TabularInline[Any, Publishing]):
    """Records the services write about a publishing: shown, never edited here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Publishing | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False
