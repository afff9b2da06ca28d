"""One publishing's page, for whoever may see it: where it stands, its steps and its log, live.

The page is drawn once; its script then follows the log through the API (`/api/v1/publishing/<id>/log`)
and, when an event arrives, asks this view for its summary again (`?fragment=summary`): the header,
the steps and the attempts have one rendering, this one. The buttons post to the action views below,
which call the services through `actions.act` and come back here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from publishing.authorization import AnyUser, may_act_on
from publishing.models import Publishing
from publishing.pages.actions import act
from publishing.pages.attempts import attempt_views
from publishing.pages.clocks import took
from publishing.pages.headline import headline
from publishing.redaction import redact_credentials, redacted_url
from publishing.selectors import latest_published_id, publishings_visible_to, waiting_of
from publishing.services.publishings import publishing_cancel, publishing_rerun, publishing_retry

Status = Publishing.Status
SUMMARY = "publishing/pages/publishing_summary.html"


@dataclass(frozen=True)
class Actions:
    """The buttons the page shows: what the user may do to the publishing now."""

    cancel: bool = False
    retry: bool = False
    # The re-run button's words ("Re-run", or "Publish this commit again" for a rollback); "" for none.
    rerun: str = ""


def actions_for(user: AnyUser, publishing: Publishing) -> Actions:
    if not may_act_on(user, publishing):
        return Actions()
    project_id = publishing.project_id
    has_project = project_id is not None
    rerun = ""
    if publishing.is_terminal and project_id is not None:
        rerun = "Re-run"
        if publishing.status == Status.PUBLISHED and latest_published_id(project_id) != publishing.pk:
            rerun = "Publish this commit again"
    return Actions(
        cancel=publishing.status in Publishing.CANCELLABLE_STATUSES,
        retry=has_project and publishing.status in Publishing.RETRYABLE_STATUSES,
        rerun=rerun,
    )


def summary_context(request: HttpRequest, publishing: Publishing) -> dict[str, Any]:
    """What the summary (header, steps, attempts) is drawn from."""
    now = timezone.now()
    attempts = attempt_views(publishing, list(publishing.attempt_history.all()))
    current = attempts[0]
    stopped = current.stopped_step
    # Only the attempt that ended the publishing says where it stopped (not an earlier, retried one).
    ended_it = current.outcome == publishing.status
    line = headline(
        publishing,
        waiting=waiting_of(publishing),
        stopped_step=stopped.name if stopped and ended_it else None,
        now=now,
    )
    return {
        "publishing": publishing,
        "headline": line.pieces(now),
        "tone": line.tone,
        "current": current,
        "earlier": attempts[1:],
        "actions": actions_for(request.user, publishing),
        "duration": took(publishing.created_at, publishing.finished_at, now=now),
        "repository": redacted_url(publishing.repository_url),
        "error_message": redact_credentials(publishing.error_message),
    }


@never_cache
@login_required
def publishing_page(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    publishing = get_object_or_404(publishings_visible_to(request.user), pk=pk)
    context = summary_context(request, publishing)
    if request.GET.get("fragment") == "summary":
        return render(request, SUMMARY, context)
    context["log_url"] = reverse("publishing-log", args=[publishing.pk])
    return render(request, "publishing/pages/publishing.html", context)


def _act_on(
    request: HttpRequest,
    pk: uuid.UUID,
    service: Callable[..., Publishing],
    *,
    done: str,
    starts_a_build: bool,
) -> HttpResponse:
    """POST: call `service` on the publishing as the user, then show the page of the result; GET: the page."""
    publishing = get_object_or_404(publishings_visible_to(request.user), pk=pk)
    if request.method != "POST":
        return redirect("page-publishing", pk=publishing.pk)

    def run(user: User) -> Publishing:
        return service(publishing=publishing, by=user)

    result = act(request, run, done=done, starts_a_build=starts_a_build)
    return redirect("page-publishing", pk=result.pk if result is not None else publishing.pk)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def cancel_view(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    return _act_on(request, pk, publishing_cancel, done="Cancel requested", starts_a_build=False)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def retry_view(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    return _act_on(request, pk, publishing_retry, done="Retry requested", starts_a_build=True)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def rerun_view(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    return _act_on(
        request, pk, publishing_rerun, done="Re-run started as a new publishing", starts_a_build=True
    )
