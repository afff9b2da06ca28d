"""The queue overview page and its dead letters (listed; requeued or discarded one by one, by selection
or all at once), served under the publishing admin's URLs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from publishing import selectors
from publishing.admin import display
from publishing.exceptions import BrokerUnavailable
from publishing.models import Publishing
from publishing.redaction import redact_credentials
from publishing.services.dead_letters import (
    DeadLetterDiscard,
    DeadLetterRequeue,
    DeadLetterRow,
    dead_letters_discard,
    dead_letters_list,
    dead_letters_requeue,
)

RECENT_FAILURES = 20
NOTES_SHOWN = 20
# Dead letters listed a queue; the queue table counts them all.
DEAD_LETTERS_SHOWN = 100
# A selection bigger than any listing is not a person's: refused whole.
MOST_SELECTED = 2 * DEAD_LETTERS_SHOWN


class QueueOverview(admin.ModelAdmin[Publishing]):
    """The pages about the queue as a whole; the publishing admin is one, so they share its permissions."""

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("overview/", view(self.overview_view), name="publishing_publishing_overview"),
            path(
                "overview/requeue-dead-letters/",
                view(self.requeue_dead_letters_view),
                name="publishing_publishing_requeue_dead_letters",
            ),
            path(
                "overview/dead-letters/",
                view(self.dead_letters_view),
                name="publishing_publishing_dead_letters",
            ),
        ]
        return [*own, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """The queue now, for staff: drawn whatever is down, saying what is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = selectors.system_overview()
        can_requeue = self.has_change_permission(request)
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "overview": overview,
            # Each with its message, credentials redacted (an error may quote a URL with them).
            "failures": [
                (failure, redact_credentials(failure.error_message))
                for failure in (selectors.recent_failures(RECENT_FAILURES) if overview.database_ok else [])
            ],
            "can_requeue": can_requeue,
            "dead_letters": _dead_letters() if can_requeue and overview.database_ok else None,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/publishing/publishing/overview.html", context)

    def requeue_dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """POST: dead_letters_requeue as the staff user, then back to the overview."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        report = dead_letters_requeue(by=display.staff_user(request))
        self._report(request, report)
        return redirect("admin:publishing_publishing_overview")

    def dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """POST: requeue or discard the dead letters named (one by its button, or the ticked ones), as the
        staff user, then back to the overview."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        user = display.staff_user(request)
        action, ids = _chosen(request)
        refusal = _refusal(action, ids)
        if refusal:
            self.message_user(request, f"{refusal}; nothing changed.", messages.WARNING)
        elif action == "requeue":
            self._report(request, dead_letters_requeue(by=user, message_ids=ids))
        else:
            self._report_discard(request, dead_letters_discard(by=user, message_ids=ids))
        return redirect("admin:publishing_publishing_overview")

    def _report_discard(self, request: HttpRequest, report: DeadLetterDiscard) -> None:
        if report.broker_unavailable:
            self.message_user(
                request,
                f"The broker is unavailable: {len(report.discarded)} discarded before it went away; the "
                "rest stay dead-lettered. Try again once it is back.",
                messages.ERROR,
            )
        for meaning in report.discarded[:NOTES_SHOWN]:
            self.message_user(request, f"Discarded {meaning}.", messages.WARNING)
        if len(report.discarded) > NOTES_SHOWN:
            more = len(report.discarded) - NOTES_SHOWN
            self.message_user(request, f"… and {more} more discarded (each is in the log).", messages.WARNING)
        if report.missing:
            self.message_user(
                request,
                f"{report.missing} of the selected dead letters are not there any more (requeued or "
                "discarded meanwhile); nothing done for them.",
                messages.WARNING,
            )

    def _report(self, request: HttpRequest, report: DeadLetterRequeue) -> None:
        done = f"Dead letters: {report.requeued} requeued, {report.dropped} dropped as obsolete"
        if report.missing and not (report.requeued or report.dropped or report.left):
            self.message_user(
                request,
                "None of the selected dead letters is there any more (requeued or discarded meanwhile); "
                "nothing changed.",
                messages.WARNING,
            )
        elif report.broker_unavailable and not (report.requeued or report.dropped or report.left):
            self.message_user(
                request,
                "The broker is unavailable: the dead letters cannot be read now. Nothing changed; "
                "try again once it is back.",
                messages.ERROR,
            )
        elif report.broker_unavailable:
            self.message_user(
                request,
                f"{done}; the broker went away meanwhile: {report.left} left for another try.",
                messages.WARNING,
            )
        elif report.left:
            self.message_user(request, f"{done}, {report.left} left.", messages.WARNING)
        elif report.requeued or report.dropped:
            self.message_user(request, f"{done}.", messages.SUCCESS)
        else:
            self.message_user(request, "No dead letters.", messages.INFO)
        for note in report.notes[:NOTES_SHOWN]:
            self.message_user(request, note, messages.WARNING)
        if len(report.notes) > NOTES_SHOWN:
            self.message_user(request, f"… and {len(report.notes) - NOTES_SHOWN} more.", messages.WARNING)


def _chosen(request: HttpRequest) -> tuple[str, list[str]]:
    """(action, message ids) of the dead-letter form: a row's own button names one letter, the selection
    buttons the ticked ones."""
    for action in ("requeue", "discard"):
        if action in request.POST:
            return action, [request.POST[action]]
    selected = request.POST.getlist("message_id")
    return request.POST.get("action", "").removesuffix("_selected"), selected


def _refusal(action: str, ids: list[str]) -> str | None:
    if action not in {"requeue", "discard"}:
        return "Unknown action"
    if not ids:
        return "Select dead letters first"
    if len(ids) > MOST_SELECTED:
        return f"At most {MOST_SELECTED} dead letters at a time"
    return None


def _dead_letters() -> list[DeadLetterRow] | None:
    """The dead letters for the overview; None when the broker cannot be read now."""
    try:
        return dead_letters_list(limit=DEAD_LETTERS_SHOWN)
    except BrokerUnavailable:
        return None
