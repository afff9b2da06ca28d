"""The publishing admin: changelist columns, the detail page with its live log, cancel, retry and re-run.

A publishing is a read-only record here; the actions and buttons call the services, the only writers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.safestring import SafeString

from publishing.admin import display
from publishing.admin.attempts import AttemptInline
from publishing.admin.overview import QueueOverview
from publishing.admin.webhooks import WebhookDeliveryInline
from publishing.exceptions import BrokerUnavailable, PublishingError
from publishing.models import Publishing
from publishing.redaction import redact_credentials
from publishing.selectors import log_text
from publishing.services.publishings import publishing_cancel, publishing_rerun, publishing_retry


@admin.register(Publishing)
class PublishingAdmin(display.RedactedURLs, QueueOverview):
    # Narrow enough for 1400 px with the sidebar open: progress shows in the status while active, the
    # requester under the project, the creation as "3 min ago"; the finish is the duration's end.
    list_display = [
        "short_id",
        "status_badge",
        "project_and_requester",
        "commit",
        "attempts",
        "duration",
        "error",
        "created",
    ]
    list_filter = [
        "status",
        ("project", admin.RelatedOnlyFieldListFilter),
        ("requested_by", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    search_fields = [
        "id", "project__name", "project__slug", "requested_by__username", "error_code", "commit_sha",
    ]  # fmt: skip
    date_hierarchy = "created_at"
    list_select_related = ["project", "requested_by"]
    actions = ["cancel_selected", "retry_selected", "rerun_selected"]
    inlines = [AttemptInline, WebhookDeliveryInline]
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "id",
                    "project",
                    "requested_by",
                    "live_status",
                    "live_progress",
                    "attempts",
                    "error_code",
                    "error_text",
                ]
            },
        ),
        (
            "Runs with (the project's settings when it was initiated)",
            {"fields": ["repository", "ref", "build_command", "artifact_path", "target"]},
        ),
        (
            "Commit (asked for: empty for the ref's head; as its last attempt checked it out)",
            {"fields": ["requested_commit", "commit_sha", "commit_subject", "commit_author"]},
        ),
        ("Artifact", {"fields": ["artifact_sha256", "artifact_size", "artifact_uri", "submission_ref"]}),
        (
            "Timing",
            {
                "fields": [
                    "created_at",
                    "queued_at",
                    "not_before",
                    "started_at",
                    "heartbeat_at",
                    "finished_at",
                    "duration",
                    "updated_at",
                ]
            },
        ),
        ("Worker and message", {"fields": ["worker", "message_id", "idempotency_key"]}),
        ("Log", {"fields": ["live_log"]}),
    ]
    # Status changes go through the services only, never an admin form.
    readonly_fields = [
        *(field.name for field in Publishing._meta.fields),
        "live_status",
        "live_progress",
        "duration",
        "live_log",
        "error_text",
        "repository",
        "target",
    ]

    class Media:
        css = display.MEDIA_CSS
        js = ["publishing/live_poll.js", "publishing/live_log.js"]

    # --- Permissions: a read-only record; actions are the only writes ---------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Publishing | None = None) -> bool:
        # Without an object it gates the actions; with one, the form, which must never save.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Publishing | None = None) -> bool:
        return False  # business records, never deleted

    # --- Columns and fields -------------------------------------------------------------

    @admin.display(description="id", ordering="id")
    def short_id(self, publishing: Publishing) -> SafeString:
        return display.short_id(publishing.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, publishing: Publishing) -> SafeString:
        if publishing.status in Publishing.ACTIVE_STATUSES:
            bar = display.progress(publishing.progress)
            return format_html("{}<br>{}", display.badge(publishing.status), bar)
        return display.badge(publishing.status)

    @admin.display(description="project, by", ordering="project__name")
    def project_and_requester(self, publishing: Publishing) -> SafeString:
        return format_html(
            '{}<br><span class="pub-quiet">{}</span>',
            publishing.project.name if publishing.project else "(deleted)",
            publishing.requested_by.get_username() if publishing.requested_by else "-",
        )

    @admin.display(description="error code", ordering="error_code")
    def error(self, publishing: Publishing) -> SafeString | str:
        return display.code(publishing.error_code) if publishing.error_code else "-"

    @admin.display(description="created", ordering="created_at")
    def created(self, publishing: Publishing) -> SafeString:
        return display.ago(publishing.created_at)

    @admin.display(description="commit", ordering="commit_sha")
    def commit(self, publishing: Publishing) -> SafeString | str:
        return display.commit(publishing.commit_sha, publishing.commit_subject)

    @admin.display(description="duration")
    def duration(self, publishing: Publishing) -> str:
        running = publishing.status in Publishing.ACTIVE_STATUSES
        return display.span(publishing.started_at, publishing.finished_at, running=running)

    @admin.display(description="error message")
    def error_text(self, publishing: Publishing) -> str:
        return redact_credentials(publishing.error_message) or "—"

    @admin.display(description="status")
    def live_status(self, publishing: Publishing) -> SafeString:
        return display.badge(publishing.status, live=True)

    @admin.display(description="progress")
    def live_progress(self, publishing: Publishing) -> SafeString:
        return display.progress(publishing.progress)

    @admin.display(description="log (newest at the bottom)")
    def live_log(self, publishing: Publishing) -> SafeString:
        # publishing/live_log.js re-reads this page while it is not terminal, and swaps its parts.
        terminal = "true" if publishing.is_terminal else "false"
        note = "Final." if publishing.is_terminal else "This page refreshes itself while the publishing runs."
        return format_html(
            '<pre id="publishing-log" class="publishing-log" data-terminal="{}">{}</pre>'
            '<p id="publishing-log-state" class="publishing-log-state">{}</p>',
            terminal,
            log_text(publishing),
            note,
        )

    # --- Pages ----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("<path:object_id>/cancel/", view(self.cancel_view), name="publishing_publishing_cancel"),
            path("<path:object_id>/retry/", view(self.retry_view), name="publishing_publishing_retry"),
            path("<path:object_id>/rerun/", view(self.rerun_view), name="publishing_publishing_rerun"),
        ]
        # super() adds QueueOverview's pages, then the model's own (whose catch-all comes last).
        return [*own, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        publishing = self.get_object(request, unquote(object_id))
        may_act = self.has_change_permission(request)
        context = {
            **(extra_context or {}),
            "can_cancel": may_act
            and publishing is not None
            and publishing.status in Publishing.CANCELLABLE_STATUSES,
            "can_retry": may_act
            and publishing is not None
            and publishing.status in Publishing.RETRYABLE_STATUSES,
            "can_rerun": may_act and publishing is not None and publishing.is_terminal,
        }
        return super().change_view(request, object_id, form_url, context)

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act_on_one(request, object_id, "cancelled", publishing_cancel)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act_on_one(request, object_id, "retried", publishing_retry)

    def rerun_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act_on_one(request, object_id, "re-run", publishing_rerun)

    # --- Actions ------------------------------------------------------------------------------

    @admin.action(description="Cancel selected publishings", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Publishing]) -> None:
        self._act(request, queryset, "cancelled", publishing_cancel)

    @admin.action(description="Retry selected publishings", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Publishing]) -> None:
        self._act(request, queryset, "retried", publishing_retry)

    @admin.action(description="Re-run selected publishings (each at its commit)", permissions=["change"])
    def rerun_selected(self, request: HttpRequest, queryset: QuerySet[Publishing]) -> None:
        self._act(request, queryset, "re-run", publishing_rerun)

    def _act(
        self,
        request: HttpRequest,
        publishings: Iterable[Publishing],
        done: str,
        service: Callable[..., Publishing],
    ) -> None:
        """Call `service` on each publishing and say, row by row, what happened to it."""
        user = display.staff_user(request)
        outcomes = {messages.SUCCESS: 0, messages.WARNING: 0, messages.ERROR: 0}
        for publishing in publishings:
            try:
                after = service(publishing=publishing, by=user)
            except BrokerUnavailable as exc:
                level, text = (
                    messages.ERROR,
                    format_html("{}: not {}: {}", display.publishing_link(publishing), done, exc.detail),
                )
            except PublishingError as exc:
                level, text = (
                    messages.WARNING,
                    format_html("{}: not {}: {}", display.publishing_link(publishing), done, exc.detail),
                )
            else:
                level, text = messages.SUCCESS, _done(publishing, after, done)
            outcomes[level] += 1
            self.message_user(request, text, level)
        if sum(outcomes.values()) > 1:
            self.message_user(
                request,
                f"{outcomes[messages.SUCCESS]} {done}, {outcomes[messages.WARNING]} refused, "
                f"{outcomes[messages.ERROR]} failed (broker unavailable).",
                messages.INFO,
            )

    def _act_on_one(
        self, request: HttpRequest, object_id: str, done: str, service: Callable[..., Publishing]
    ) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_change_permission(request):
            raise PermissionDenied
        publishing = self._get_or_404(request, object_id)
        self._act(request, [publishing], done, service)
        return redirect("admin:publishing_publishing_change", quote(publishing.pk))

    def _get_or_404(self, request: HttpRequest, object_id: str) -> Publishing:
        publishing = self.get_object(request, unquote(object_id))
        if publishing is None:
            raise Http404("No such publishing.")
        return publishing


def _done(before: Publishing, after: Publishing, done: str) -> SafeString:
    """What a service did to a publishing: `<id>: retried, now queued.`; a re-run makes another one,
    `<id>: re-run as <new id>, now queued.`"""
    now = "" if after.status == done else format_html(", now {}", after.status)
    if after.pk == before.pk:
        return format_html("{}: {}{}.", display.publishing_link(after), done, now)
    return format_html(
        "{}: {} as {}{}.", display.publishing_link(before), done, display.publishing_link(after), now
    )
