"""The projects page (the user's projects, each with its last publishing), a project's history, and
their Publish buttons (the head of the ref, a commit or tag, or an earlier published commit again).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods

from publishing.durations import human_duration, time_ago
from publishing.models import Project, Publishing
from publishing.pages.actions import act
from publishing.pipeline.base import short_sha
from publishing.redaction import redacted_url
from publishing.selectors import live_publishing, project_for, project_history, project_summaries
from publishing.services.publishings import publishing_initiate

# Publishings a page of a project's history shows, as the API's lists.
HISTORY_PAGE_SIZE = 20
Status = Publishing.Status


@dataclass(frozen=True)
class When:
    """A moment as people read it ("3 min ago"), with its exact time for a hover and a machine."""

    ago: str
    exact: str
    iso: str


def when(moment: datetime, now: datetime) -> When:
    utc = moment.astimezone(UTC)
    return When(time_ago((now - moment).total_seconds()), f"{utc:%Y-%m-%d %H:%M:%S} UTC", utc.isoformat())


@dataclass(frozen=True)
class Row:
    """One publishing as a page lists it."""

    publishing: Publishing
    short_sha: str
    # What was asked for while no commit is checked out yet: a commit, a tag or the ref's head.
    asked: str
    author: str
    duration: str
    requester: str
    created: When
    finished: When | None
    live: bool
    # The commit this row published, to publish again (a rollback); empty where that makes no sense.
    rollback_commit: str
    # A published row of the live commit, not the live row itself: publishing it again changes nothing.
    same_as_live: bool


def row(publishing: Publishing, live: Publishing | None, now: datetime) -> Row:
    is_live = live is not None and publishing.pk == live.pk
    earlier = publishing.status == Status.PUBLISHED and bool(publishing.commit_sha) and not is_live
    same_as_live = earlier and live is not None and publishing.commit_sha == live.commit_sha
    requester = publishing.requested_by
    return Row(
        publishing=publishing,
        short_sha=short_sha(publishing.commit_sha),
        asked=publishing.requested_commit[:12] or f"head of {publishing.ref or 'the ref'}",
        author=publishing.commit_author.split(" <", 1)[0],
        duration=duration(publishing, now),
        requester=requester.get_username() if isinstance(requester, User) else "(deleted user)",
        created=when(publishing.created_at, now),
        finished=when(publishing.finished_at, now) if publishing.finished_at else None,
        live=is_live,
        rollback_commit=publishing.commit_sha if earlier and not same_as_live else "",
        same_as_live=same_as_live,
    )


def duration(publishing: Publishing, now: datetime) -> str:
    """How long its run took, or has taken so far; a dash before it starts."""
    start, end = publishing.started_at, publishing.finished_at
    if start is None:
        return "—"
    if end is None:
        running = publishing.status in Publishing.ACTIVE_STATUSES
        return f"{human_duration((now - start).total_seconds())} so far" if running else "—"
    return human_duration((end - start).total_seconds())


def owned_project(request: HttpRequest, pk: uuid.UUID) -> Project:
    """The project if the user may see it; 404 otherwise, as for one that does not exist."""
    project = project_for(request.user, pk)
    if project is None:
        raise Http404("No such project.")
    return project


@login_required
def projects_page(request: HttpRequest) -> HttpResponse:
    now = timezone.now()
    cards = [
        {
            "project": summary.project,
            "repository": redacted_url(summary.project.repository_url),
            "last": row(summary.last, summary.live, now) if summary.last else None,
            "live": row(summary.live, summary.live, now) if summary.live else None,
        }
        for summary in project_summaries(request.user)
    ]
    return render(request, "publishing/pages/projects.html", {"cards": cards})


@login_required
def project_page(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    project = owned_project(request, pk)
    now = timezone.now()
    live = live_publishing(request.user, project)
    history = Paginator(project_history(request.user, project), HISTORY_PAGE_SIZE)
    page = history.get_page(request.GET.get("page"))
    context = {
        "project": project,
        "repository": redacted_url(project.repository_url),
        "target": redacted_url(project.target_url),
        "live": row(live, live, now) if live else None,
        "page": page,
        "rows": [row(publishing, live, now) for publishing in page],
    }
    return render(request, "publishing/pages/project.html", context)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def project_publish(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """Publish the project (its ref's head, or the commit or tag posted); GET leads to the project's page.

    Queued: to the new publishing's page. Refused (another one active, too many started, the job
    service down, a bad commit): back to the page the button was on, with the reason.
    """
    project = owned_project(request, pk)
    if request.method != "POST":
        return redirect("page-project", project.pk)
    commit = request.POST.get("commit", "").strip()
    at = f"commit {commit[:12]}" if commit else f"the head of {project.ref}"

    def publish(user: User) -> Publishing:
        return publishing_initiate(user=user, project_id=project.pk, commit=commit, via="page")

    publishing = act(request, publish, done=f"Publishing {project.name} at {at}", starts_a_build=True)
    if publishing is not None:
        return redirect("page-publishing", publishing.pk)
    if request.POST.get("from") == "projects":
        return redirect("page-projects")
    return redirect("page-project", project.pk)
