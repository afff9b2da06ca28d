"""The queue overview page and its dead-letter requeue, served under the publishing admin's URLs."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from publishing import selectors
from publishing.admin import display
from publishing.models import Publishing
from publishing.services.dead_letters import DeadLetterRequeue, dead_letters_requeue

RECENT_FAILURES = 20
NOTES_SHOWN = 20


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
        ]
        return [*own, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """The queue now, for staff: drawn whatever is down, saying what is."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        overview = selectors.system_overview()
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "overview": overview,
            "failures": selectors.recent_failures(RECENT_FAILURES) if overview.database_ok else [],
            "can_requeue": self.has_change_permission(request),
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

    def _report(self, request: HttpRequest, report: DeadLetterRequeue) -> None:
        done = f"Dead letters: {report.requeued} requeued, {report.dropped} dropped as obsolete"
        if report.broker_unavailable and not (report.requeued or report.dropped or report.left):
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
