"""Reads shared by the API, the admin and the metrics."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import Error as DatabaseError
from django.db.models import Count, Min, OuterRef, QuerySet, Subquery
from django.utils import timezone

from publishing import broker, presence
from publishing.authorization import AnyUser, sees_all_projects, sees_all_publishings
from publishing.exceptions import BrokerUnavailable
from publishing.models import Attempt, LogLine, Project, Publishing
from publishing.models import PublishingQuerySet as PublishingQuerySet
from publishing.rate_limit import publishing_limiter
from publishing.redaction import redact_credentials


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
    return _own(publishings, user)


def _own(publishings: PublishingQuerySet, user: AnyUser) -> PublishingQuerySet:
    """Those the user requested or of the user's projects: what anyone may see of publishings."""
    return publishings.filter(requested_by_id=user.pk) | publishings.filter(project__owner_id=user.pk)


def publishing_visible_to(
    user: AnyUser, publishing_id: uuid.UUID | str, *, fields: Sequence[str]
) -> Publishing | None:
    """One publishing by id, with only `fields` loaded, if the caller may see it (as
    publishings_visible_to says); None otherwise. ValidationError for an id that is not a UUID.

    The caller's own first: an owner's look-up (a page polling its log every 2 s) never loads the
    caller's permissions, two queries that only decide whether others' publishings are visible too.
    """
    if user.pk is None:  # requested_by_id=None would match the publishings of deleted users
        return None
    rows = Publishing.objects.only(*fields)
    found = _own(rows, user).filter(pk=publishing_id).first()
    if found is None and sees_all_publishings(user):
        found = rows.filter(pk=publishing_id).first()
    return found


def project_for(user: AnyUser, project_id: uuid.UUID | str) -> Project | None:
    return projects_visible_to(user).filter(pk=project_id).first()


def _newest(publishings: QuerySet[Publishing]) -> QuerySet[Publishing]:
    return publishings.order_by("-created_at", "-id")


def _live(publishings: QuerySet[Publishing]) -> QuerySet[Publishing]:
    """The published ones, the one submitted last first: what the target serves now."""
    published = publishings.filter(status=Publishing.Status.PUBLISHED)
    return published.order_by("-finished_at", "-created_at", "-id")


@dataclass(frozen=True)
class ProjectSummary:
    """A project with its newest publishing and its live one (the latest published), if any."""

    project: Project
    last: Publishing | None
    live: Publishing | None


def project_summaries(user: AnyUser) -> list[ProjectSummary]:
    """The user's projects by name, each with its newest and its live publishing: two queries, any count."""
    of_project = publishings_visible_to(user).filter(project_id=OuterRef("pk"))
    projects = list(
        projects_visible_to(user)
        .order_by("name", "id")
        .annotate(
            last_id=Subquery(_newest(of_project).values("pk")[:1]),
            live_id=Subquery(_live(of_project).values("pk")[:1]),
        )
    )
    wanted = {pk for project in projects for pk in (project.last_id, project.live_id) if pk is not None}
    found = Publishing.objects.select_related("requested_by").in_bulk(wanted) if wanted else {}
    return [
        ProjectSummary(project, found.get(project.last_id), found.get(project.live_id))
        for project in projects
    ]


def project_history(user: AnyUser, project: Project) -> QuerySet[Publishing]:
    """The project's publishings the user may see, newest first."""
    return _newest(publishings_visible_to(user).filter(project_id=project.pk))


def live_publishing(user: AnyUser, project: Project) -> Publishing | None:
    """The project's publishing the target serves now: the latest published (None before the first)."""
    return _live(publishings_visible_to(user).filter(project_id=project.pk)).first()


def latest_published_id(project_id: uuid.UUID | str) -> uuid.UUID | None:
    """The project's publishing that published last: what its target serves now."""
    return _live(Publishing.objects.filter(project_id=project_id)).values_list("pk", flat=True).first()


def running_on(host: str) -> int:
    """How many publishings the worker processes of `host` (PUBLISHING_WORKER_NAME) are running now.

    Only those whose lease is fresh: a worker that crashed left its rows running, and no one runs them.
    """
    lease_expired = timezone.now() - timedelta(seconds=settings.PUBLISHING_LEASE_TIMEOUT)
    return Publishing.objects.filter(
        status__in=(Publishing.Status.BUILDING, Publishing.Status.SUBMITTING),
        worker__startswith=f"{host}:",
        heartbeat_at__gt=lease_expired,
    ).count()


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


def live_workers() -> list[str] | None:
    """The workers heard from within a lease (presence, in the Redis at REDIS_URL with either broker);
    None when that cannot be told: the stub broker (its workers are in-process), or Redis not answering."""
    if broker.uses_stub_broker():
        return None
    try:
        return presence.alive(broker.web_redis(), within=settings.PUBLISHING_LEASE_TIMEOUT)
    except broker.BROKER_ERRORS:
        return None


def _redis_state() -> tuple[list[str] | None, RateLimitUsage | None]:
    """Live workers and the rate-limit window, from the Redis at REDIS_URL (with either broker)."""
    workers = live_workers()
    if workers is None:
        # One timeout is enough: the window lives in the same Redis.
        return None, None
    client = broker.web_redis()
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


# Lines of a publishing's log given at once: a reader asks again, from the cursor, for more.
LOG_PAGE_SIZE = 1000
# What log_page reads of the publishing's row.
LOG_PAGE_FIELDS = ("id", "finished_at", "log_dropped")


@dataclass(frozen=True)
class LogPage:
    """Lines of a publishing's log after a cursor, and where to ask from next."""

    lines: list[LogLine]
    # The cursor for the next call: past every line given (and every line a filter left out).
    cursor: int
    # More lines are already there past `cursor`: ask again at once.
    more: bool
    # The publishing is finished and this is its log's end: nothing will come after `cursor`.
    complete: bool
    # The oldest lines the log's cap dropped, over the publishing's whole life.
    dropped: int


def log_page(
    publishing: Publishing,
    *,
    since: int = 0,
    step: str | None = None,
    attempt: int | None = None,
    limit: int = LOG_PAGE_SIZE,
) -> LogPage:
    """The log's lines after `since` (a cursor a previous page gave; 0 from the start), oldest first.

    Whether it is complete and what it dropped are `publishing`'s as read before this call: the status
    first, then the lines. A terminal event is written with its status, so a publishing read finished
    has all of its lines here; one read earlier than that is only said complete by a later page.
    """
    lines = LogLine.objects.filter(publishing_id=publishing.pk, id__gt=since)
    ceiling: int | None = None
    if step is not None or attempt is not None:
        # A filter's cursor moves past the lines it leaves out, up to the last line now: lines
        # committed after `ceiling` are the next call's, even those the filter keeps.
        ceiling = lines.order_by("-id").values_list("id", flat=True).first() or since
        lines = lines.filter(id__lte=ceiling)
    if step is not None:
        lines = lines.filter(step=step)
    if attempt is not None:
        lines = lines.filter(attempt=attempt)
    found = list(lines.order_by("id")[: limit + 1])
    more = len(found) > limit
    found = found[:limit]
    # Past the last line given or, with a filter and no more to give, past the lines it left out.
    last = found[-1].id if found else since
    cursor = ceiling if ceiling is not None and not more else last
    return LogPage(
        lines=found,
        cursor=cursor,
        more=more,
        complete=publishing.finished_at is not None and not more,
        dropped=publishing.log_dropped,
    )


def last_attempt(publishing_id: uuid.UUID | str) -> Attempt | None:
    """The publishing's newest attempt (its steps as they ran), None before the first."""
    return Attempt.objects.filter(publishing_id=publishing_id).order_by("-number").first()


def stopped_step(attempt: Attempt) -> str | None:
    """The step an ended attempt stopped at (failed, cancelled or cut off): the one it left not done."""
    return next(
        (
            step.get("name")
            for step in attempt.steps or []
            if isinstance(step, dict) and step.get("state") != "done"
        ),
        None,
    )


def log_tail(publishing_id: uuid.UUID | str, *, attempt: int, step: str, limit: int) -> list[LogLine]:
    """The last `limit` lines of one step of one attempt, oldest first."""
    lines = LogLine.objects.filter(publishing_id=publishing_id, attempt=attempt, step=step)
    return list(reversed(lines.order_by("-id")[:limit]))


def log_end(publishing_id: uuid.UUID | str) -> int:
    """The cursor past the log's last line now: a reader from here sees only what comes next."""
    last = LogLine.objects.filter(publishing_id=publishing_id).order_by("-id").values_list("id", flat=True)
    return last.first() or 0


def render_line(time: datetime, step: str, text: str) -> str:
    """One line of the log as text: its time (UTC, to the millisecond), its step and what it says."""
    stamp = time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    return f"{stamp}Z {step:<8} {text}\n"


def log_text(publishing: Publishing) -> str:
    """The whole log as text, one line each, saying first how many of its oldest lines were dropped;
    credentials in URLs shown as `***` (a build may print a URL with its credentials)."""
    # Read again: the caller's instance may be older than its log's last trim.
    page = log_page(Publishing.objects.get(pk=publishing.pk), limit=10**9)
    head = f"[{page.dropped} earlier lines dropped]\n" if page.dropped else ""
    return head + "".join(
        render_line(line.time, line.step, redact_credentials(line.text)) for line in page.lines
    )


@dataclass(frozen=True)
class Waiting:
    """Why a queued publishing waits, and until when."""

    reason: str  # retry_backoff, rate_limit, or queue (for a free worker)
    until: datetime | None
    attempt: int  # the try it waits for: 1, or 1 + the retries behind it
    max_attempts: int


def waiting_of(publishing: Publishing) -> Waiting | None:
    """Why a queued publishing waits; None unless it is queued."""
    if publishing.status != Publishing.Status.QUEUED:
        return None
    due = publishing.not_before
    # A wait that is over (or never had a reason) is a wait for a worker to take it.
    reason = publishing.wait_reason if due and due > timezone.now() and publishing.wait_reason else "queue"
    return Waiting(
        reason=reason,
        until=due if reason != "queue" else None,
        attempt=publishing.retries + 1,
        max_attempts=settings.PUBLISHING_MAX_RETRIES + 1,
    )
