"""Reads shared by the API, the admin and the metrics."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import Error as DatabaseError
from django.db.models import Count, Min, QuerySet
from django.utils import timezone

from publishing import broker, presence
from publishing.authorization import AnyUser, sees_all_projects, sees_all_publishings
from publishing.exceptions import BrokerUnavailable
from publishing.models import Project, Publishing
from publishing.models import PublishingQuerySet as PublishingQuerySet
from publishing.rate_limit import publishing_limiter


def projects_visible_to(user: AnyUser) -> QuerySet[Project]:
    """The caller's projects; everyone's with the view_project permission."""
    projects = Project.objects.select_related("owner")
    return projects if sees_all_projects(user) else projects.filter(owner_id=user.pk)


def projects_owned_by(user: AnyUser) -> QuerySet[Project]:
    """The user's own projects by name, staff or not: what they would publish themselves."""
    return Project.objects.filter(owner_id=user.pk).order_by("name", "id")


def publishings_visible_to(user: AnyUser) -> PublishingQuerySet:
    """The caller's publishings (requested by them or of their projects); all with view_publishing."""
    publishings = Publishing.objects.select_related("project", "requested_by")
    if sees_all_publishings(user):
        return publishings
    return publishings.filter(requested_by_id=user.pk) | publishings.filter(project__owner_id=user.pk)


def project_for(user: AnyUser, project_id: uuid.UUID | str) -> Project | None:
    return projects_visible_to(user).filter(pk=project_id).first()


@dataclass(frozen=True)
class RateLimitUsage:
    used: int
    limit: int
    window_seconds: float


@dataclass(frozen=True)
class SystemOverview:
    """What operators look at: the database, the broker, the workers and the rate limit, now.

    Each part is None (or the `*_ok` flag False) when its source did not
    answer: the overview is still drawn when Redis or the database is down.
    """

    database_ok: bool
    broker_ok: bool
    publishings: dict[str, int]
    oldest_queued_seconds: float
    queue: broker.QueueStats | None
    workers: list[str] | None
    rate_limit: RateLimitUsage | None


def system_overview() -> SystemOverview:
    """Read it all, each source failing fast (its own connect or socket timeout) and on its own."""
    database_ok, publishings, oldest = True, {}, 0.0
    try:
        rows = Publishing.objects.order_by().values_list("status").annotate(n=Count("pk"))
        publishings = {status: 0 for status in Publishing.Status.values} | dict(rows)
        first = Publishing.objects.filter(status=Publishing.Status.QUEUED).aggregate(at=Min("queued_at"))[
            "at"
        ]
        oldest = max((timezone.now() - first).total_seconds(), 0.0) if first else 0.0
    except DatabaseError:
        database_ok = False
    try:
        queue = broker.queue_stats()
        broker_ok = True
    except BrokerUnavailable:
        queue, broker_ok = None, False
    workers, rate_limit = _redis_state()
    return SystemOverview(database_ok, broker_ok, publishings, oldest, queue, workers, rate_limit)


def _redis_state() -> tuple[list[str] | None, RateLimitUsage | None]:
    """Live workers and the rate-limit window, from the Redis at REDIS_URL (with either broker)."""
    if broker.uses_stub_broker():
        return None, None
    client = broker.web_redis()
    try:
        workers = presence.alive(client, within=settings.PUBLISHING_LEASE_TIMEOUT)
    except broker.BROKER_ERRORS:
        # One timeout is enough: the window lives in the same Redis.
        return None, None
    limiter = publishing_limiter(client)
    if limiter is None:
        return workers, None
    try:
        used = limiter.usage()
    except broker.BROKER_ERRORS:
        return workers, None
    return workers, RateLimitUsage(used, limiter.rate.limit, limiter.rate.window_ms / 1000)


def recent_failures(limit: int) -> list[Publishing]:
    """The latest failed publishings, newest first."""
    failed = Publishing.objects.filter(status=Publishing.Status.FAILED).select_related("project")
    return list(failed.order_by("-finished_at")[:limit])
