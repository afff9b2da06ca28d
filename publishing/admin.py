"""The admin: a job dashboard. Every state change goes through `publishing.services`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django_dramatiq import admin as _registers_the_task_admin  # noqa: F401
from django_dramatiq.models import Task

from publishing import selectors
from publishing.durations import human_duration
from publishing.exceptions import BrokerUnavailable, PublishingConflict, PublishingError
from publishing.models import CREDENTIAL_URL_FIELDS, Attempt, Project, Publishing, WebhookDelivery
from publishing.redaction import redacted_url, restore_credentials
from publishing.services.dead_letters import dead_letters_requeue
from publishing.services.projects import (
    PROJECT_FIELDS,
    deletion_refused,
    project_create,
    project_delete,
    project_update,
    project_validate,
)
from publishing.services.publishings import publishing_cancel, publishing_initiate, publishing_retry
from publishing.services.webhooks import delivery_resend

RECENT_FAILURES = 20
MEDIA_CSS = {"all": ["publishing/admin.css"]}
ATTEMPT_FIELDS = (
    "number", "outcome_badge", "started_at", "finished_at", "duration", "worker", "message_id", "error",
    "log",
)  # fmt: skip
DELIVERY_INLINE_FIELDS = (
    "event", "url", "state_badge", "attempts", "response_status", "last_error", "created_at", "delivered_at",
)  # fmt: skip
DELIVERY_FIELDS = (
    "id", "publishing_link", "event", "url", "state_badge", "attempts", "response_status", "last_error",
    "message_id", "created_at", "updated_at", "delivered_at", "body_view",
)  # fmt: skip

# One job list: the publishings and their attempts are the job record. django_dramatiq stays installed
# for its broker set-up, and its admin module (imported above, so that it has run whichever app the
# autodiscovery reaches first) registers a list of Task rows that nothing writes.
admin.site.unregister(Task)


def _staff_user(request: HttpRequest) -> User:
    user = request.user
    if not isinstance(user, User) or not user.is_staff:
        raise PermissionDenied
    return user


def _badge(state: str, *, live: bool = False) -> SafeString:
    """A coloured badge; the colours live in publishing/admin.css, one class a state."""
    if live:
        return format_html('<span class="pub-badge pub-{}" data-publishing-status>{}</span>', state, state)
    return format_html('<span class="pub-badge pub-{}">{}</span>', state, state)


def _progress(percent: int) -> SafeString:
    return format_html(
        '<span class="pub-progress" data-publishing-progress>'
        '<progress value="{}" max="100">{}%</progress><span>{}%</span></span>',
        percent,
        percent,
        percent,
    )


def _span(start: datetime | None, end: datetime | None, *, running: bool) -> str:
    if start is None:
        return "—"
    if end is None:
        return f"{human_duration((timezone.now() - start).total_seconds())} so far" if running else "—"
    return human_duration((end - start).total_seconds())


def _short_id(pk: uuid.UUID) -> SafeString:
    # The first 8 of 32 hex digits tell rows apart; the whole id is a hover (and a search) away.
    return format_html('<span title="{}">{}</span>', pk, str(pk)[:8])


def _publishing_link(publishing: Publishing) -> SafeString:
    url = reverse("admin:publishing_publishing_change", args=[quote(publishing.pk)])
    return format_html('<a href="{}">{}</a>', url, publishing.pk)


class ProjectAdminForm(forms.ModelForm[Project]):
    # Write-only, as in the API: the page never sends the secret back to the browser.
    webhook_secret = forms.CharField(
        required=False,
        max_length=128,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="HMAC-SHA256 key of the webhook signatures (16+ characters). "
        "Blank keeps the current one; it is cleared with the webhook URL.",
    )

    class Meta:
        model = Project
        fields = [
            "owner", "name", "slug", "repository_url", "ref", "build_command", "artifact_path", "target_url",
            "webhook_url", "webhook_secret",
        ]  # fmt: skip

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shown as in the API, `https://***@host/...`; saved back as shown, the secret stays.
        for field in CREDENTIAL_URL_FIELDS:
            if stored := getattr(self.instance, field, ""):
                self.initial[field] = redacted_url(stored)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for field in CREDENTIAL_URL_FIELDS:
            if cleaned.get(field):
                try:
                    cleaned[field] = restore_credentials(cleaned[field], getattr(self.instance, field))
                except ValueError as exc:
                    self.add_error(field, str(exc))
        if not cleaned.get("webhook_url"):
            cleaned["webhook_secret"] = ""
        elif not cleaned.get("webhook_secret"):
            cleaned["webhook_secret"] = self.instance.webhook_secret
        request: HttpRequest | None = getattr(self, "request", None)
        if request is not None:
            try:
                project_validate(user=request.user, data=cleaned, instance=self.instance)
            except ValidationError as exc:
                raise ValidationError(exc.message_dict) from exc
        return cleaned


class _RedactedURLs:
    """The repository and target columns of a project or publishing, credentials shown as `***`."""

    @admin.display(description="repository", ordering="repository_url")
    def repository(self, obj: Project | Publishing) -> str:
        return redacted_url(obj.repository_url)

    @admin.display(description="target", ordering="target_url")
    def target(self, obj: Project | Publishing) -> str:
        return redacted_url(obj.target_url)


@admin.register(Project)
class ProjectAdmin(_RedactedURLs, admin.ModelAdmin[Project]):
    form = ProjectAdminForm
    list_display = ["name", "slug", "owner", "repository", "ref", "target", "updated_at"]
    list_filter = ["owner"]
    # Not the URLs: a search by their text would tell the credentials in them a letter at a time.
    search_fields = ["name", "slug", "owner__username"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["id", "created_at", "updated_at"]
    actions = ["publish_now"]

    def get_form(
        self, request: HttpRequest, obj: Project | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Project]]:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request  # type: ignore[attr-defined]
        return form

    # Every write through the services, as from the API: the same rules, judged as the staff user.

    def save_model(
        self, request: HttpRequest, obj: Project, form: forms.ModelForm[Project], change: bool
    ) -> None:
        data = {field: form.cleaned_data[field] for field in PROJECT_FIELDS if field in form.cleaned_data}
        owner = form.cleaned_data["owner"]
        if change:
            project_update(project=obj, by=request.user, owner=owner, **data)
            return
        created = project_create(owner=owner, by=request.user, **data)
        # The admin goes on with `obj` (its history entry, the redirect): the row the service made.
        obj.pk = created.pk
        obj.refresh_from_db()

    def get_deleted_objects(
        self, objs: Sequence[Project] | QuerySet[Project], request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Django's list of what a delete takes along, with each active publishing as protected.

        A protected object makes the delete page and the delete action refuse, and say why.
        """
        deleted, counts, perms_needed, protected = super().get_deleted_objects(objs, request)
        for project in objs:
            if active := project.publishings.active().first():
                protected.append(format_html("{}: {}", project, deletion_refused(active)))
        return deleted, counts, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Project) -> None:
        project_delete(project=obj, by=request.user)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            project_delete(project=project, by=request.user)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)
        except PublishingConflict as exc:
            # A publishing started between the confirmation page and the POST (the page refuses before).
            self.message_user(request, exc.detail, messages.ERROR)
            return redirect(reverse("admin:publishing_project_change", args=[quote(object_id)]))

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        try:
            return super().changelist_view(request, extra_context)
        except PublishingConflict as exc:
            # The delete action's race, as in delete_view: nothing was deleted (one transaction).
            self.message_user(request, f"Nothing deleted. {exc.detail}", messages.ERROR)
            return redirect(reverse("admin:publishing_project_changelist"))

    def has_publish_permission(self, request: HttpRequest) -> bool:
        """Publishing records a publishing: the model's add permission, though the admin has no add form."""
        return request.user.has_perm("publishing.add_publishing")

    @admin.action(description="Publish now", permissions=["publish"])
    def publish_now(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        user = _staff_user(request)
        for project in queryset.order_by("name"):
            try:
                publishing = publishing_initiate(user=user, project_id=project.pk)
            except PublishingConflict as exc:
                active = (
                    format_html(
                        ' (<a href="{}">the active one</a>)',
                        reverse("admin:publishing_publishing_change", args=[quote(exc.active_id)]),
                    )
                    if exc.active_id
                    else ""
                )
                self.message_user(
                    request,
                    format_html("{}: not published: {}{}", project, exc.detail, active),
                    messages.WARNING,
                )
            except PublishingError as exc:
                self.message_user(
                    request, format_html("{}: not published: {}", project, exc.detail), messages.ERROR
                )
            else:
                self.message_user(
                    request,
                    format_html(
                        "{}: publishing {} {}.", project, _publishing_link(publishing), publishing.status
                    ),
                    messages.SUCCESS,
                )


class _RecordInline(admin.TabularInline[Any, Publishing]):
    """Records the services write about a publishing: shown, never edited here."""

    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Publishing | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


class AttemptInline(_RecordInline):
    """Each run of the pipeline, oldest first."""

    model = Attempt
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS

    @admin.display(description="outcome")
    def outcome_badge(self, attempt: Attempt) -> SafeString:
        return _badge(attempt.outcome)

    @admin.display(description="duration")
    def duration(self, attempt: Attempt) -> str:
        return _span(
            attempt.started_at, attempt.finished_at, running=attempt.outcome == Attempt.Outcome.RUNNING
        )

    @admin.display(description="error")
    def error(self, attempt: Attempt) -> SafeString | str:
        if not (attempt.error_code or attempt.error_message):
            return "—"
        return format_html("<code>{}</code> {}", attempt.error_code, attempt.error_message)

    @admin.display(description="log")
    def log(self, attempt: Attempt) -> SafeString | str:
        if not attempt.log_excerpt:
            return "—"
        return format_html(
            '<details class="pub-excerpt"><summary>end of its log</summary><pre>{}</pre></details>',
            attempt.log_excerpt,
        )


class WebhookDeliveryInline(_RecordInline):
    model = WebhookDelivery
    show_change_link = True
    fields = DELIVERY_INLINE_FIELDS
    readonly_fields = DELIVERY_INLINE_FIELDS

    @admin.display(description="state")
    def state_badge(self, delivery: WebhookDelivery) -> SafeString:
        return _badge(delivery.state)


@admin.register(Publishing)
class PublishingAdmin(_RedactedURLs, admin.ModelAdmin[Publishing]):
    list_display = [
        "short_id",
        "status_badge",
        "progress_bar",
        "project",
        "requested_by",
        "attempts",
        "duration",
        "error_code",
        "created_at",
        "finished_at",
    ]
    list_filter = [
        "status",
        ("project", admin.RelatedOnlyFieldListFilter),
        ("requested_by", admin.RelatedOnlyFieldListFilter),
        "created_at",
    ]
    search_fields = ["id", "project__name", "project__slug", "requested_by__username", "error_code"]
    date_hierarchy = "created_at"
    list_select_related = ["project", "requested_by"]
    actions = ["cancel_selected", "retry_selected"]
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
                    "error_message",
                ]
            },
        ),
        (
            "Runs with (the project's settings when it was initiated)",
            {"fields": ["repository", "ref", "build_command", "artifact_path", "target"]},
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
        "repository",
        "target",
    ]

    class Media:
        css = MEDIA_CSS
        js = ["publishing/live_log.js"]

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
        return _short_id(publishing.pk)

    @admin.display(description="status", ordering="status")
    def status_badge(self, publishing: Publishing) -> SafeString:
        return _badge(publishing.status)

    @admin.display(description="progress", ordering="progress")
    def progress_bar(self, publishing: Publishing) -> SafeString:
        return _progress(publishing.progress)

    @admin.display(description="duration")
    def duration(self, publishing: Publishing) -> str:
        running = publishing.status in Publishing.ACTIVE_STATUSES
        return _span(publishing.started_at, publishing.finished_at, running=running)

    @admin.display(description="status")
    def live_status(self, publishing: Publishing) -> SafeString:
        return _badge(publishing.status, live=True)

    @admin.display(description="progress")
    def live_progress(self, publishing: Publishing) -> SafeString:
        return _progress(publishing.progress)

    @admin.display(description="log (newest at the bottom)")
    def live_log(self, publishing: Publishing) -> SafeString:
        url = reverse("admin:publishing_publishing_live", args=[quote(publishing.pk)])
        terminal = "true" if publishing.is_terminal else "false"
        note = "Final." if publishing.is_terminal else "Refreshes itself while the publishing runs."
        return format_html(
            '<pre id="publishing-log" class="publishing-log" data-live-url="{}" data-terminal="{}">{}</pre>'
            '<p id="publishing-log-state" class="publishing-log-state">{}</p>',
            url,
            terminal,
            publishing.log,
            note,
        )

    # --- Pages ----------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        own = [
            path("overview/", view(self.overview_view), name="publishing_publishing_overview"),
            path(
                "overview/requeue-dead-letters/",
                view(self.requeue_dead_letters_view),
                name="publishing_publishing_requeue_dead_letters",
            ),
            path("<path:object_id>/live/", view(self.live_view), name="publishing_publishing_live"),
            path("<path:object_id>/cancel/", view(self.cancel_view), name="publishing_publishing_cancel"),
            path("<path:object_id>/retry/", view(self.retry_view), name="publishing_publishing_retry"),
        ]
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
        }
        return super().change_view(request, object_id, form_url, context)

    def live_view(self, request: HttpRequest, object_id: str) -> JsonResponse:
        """Status, progress and log of one publishing, for the detail page's refresh."""
        publishing = self._get_or_404(request, object_id)
        if not self.has_view_permission(request, publishing):
            raise PermissionDenied
        return JsonResponse(
            {
                "id": str(publishing.pk),
                "status": publishing.status,
                "terminal": publishing.is_terminal,
                "progress": publishing.progress,
                "attempts": publishing.attempts,
                "error_code": publishing.error_code,
                "error_message": publishing.error_message,
                "log": publishing.log,
                "updated_at": publishing.updated_at.isoformat(),
            }
        )

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act_on_one(request, object_id, "cancelled", publishing_cancel)

    def retry_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        return self._act_on_one(request, object_id, "retried", publishing_retry)

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
        report = dead_letters_requeue(by=_staff_user(request))
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
        for note in report.notes[:20]:
            self.message_user(request, note, messages.WARNING)
        if len(report.notes) > 20:
            self.message_user(request, f"… and {len(report.notes) - 20} more.", messages.WARNING)
        return redirect("admin:publishing_publishing_overview")

    # --- Actions ------------------------------------------------------------------------------

    @admin.action(description="Cancel selected publishings", permissions=["change"])
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Publishing]) -> None:
        self._act(request, queryset, "cancelled", publishing_cancel)

    @admin.action(description="Retry selected publishings", permissions=["change"])
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Publishing]) -> None:
        self._act(request, queryset, "retried", publishing_retry)

    def _act(
        self,
        request: HttpRequest,
        publishings: Iterable[Publishing],
        done: str,
        service: Callable[..., Publishing],
    ) -> None:
        """Call `service` on each publishing and say, row by row, what happened to it."""
        user = _staff_user(request)
        outcomes = {messages.SUCCESS: 0, messages.WARNING: 0, messages.ERROR: 0}
        for publishing in publishings:
            try:
                after = service(publishing=publishing, by=user)
            except BrokerUnavailable as exc:
                level, text = (
                    messages.ERROR,
                    format_html("{}: not {}: {}", _publishing_link(publishing), done, exc.detail),
                )
            except PublishingError as exc:
                level, text = (
                    messages.WARNING,
                    format_html("{}: not {}: {}", _publishing_link(publishing), done, exc.detail),
                )
            else:
                now = "" if after.status == done else format_html(", now {}", after.status)
                level, text = messages.SUCCESS, format_html("{}: {}{}.", _publishing_link(after), done, now)
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


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[WebhookDelivery]):
    list_display = [
        "short_id", "publishing_link", "event", "url", "state_badge", "attempts", "response_status",
        "created_at", "delivered_at",
    ]  # fmt: skip
    list_filter = ["state", "event", "created_at"]
    search_fields = ["id", "publishing__id", "url", "publishing__project__slug"]
    list_select_related = ["publishing"]
    actions = ["resend_selected"]
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    class Media:
        css = MEDIA_CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, delivery: WebhookDelivery) -> SafeString:
        return _short_id(delivery.pk)

    @admin.display(description="publishing", ordering="publishing")
    def publishing_link(self, delivery: WebhookDelivery) -> SafeString:
        return _publishing_link(delivery.publishing)

    @admin.display(description="state", ordering="state")
    def state_badge(self, delivery: WebhookDelivery) -> SafeString:
        return _badge(delivery.state)

    @admin.display(description="body (as signed)")
    def body_view(self, delivery: WebhookDelivery) -> SafeString:
        return format_html('<pre class="publishing-log">{}</pre>', delivery.body)

    @admin.action(description="Resend selected webhook deliveries", permissions=["change"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        _staff_user(request)
        for delivery in queryset.select_related("publishing__project"):
            label = format_html("{} of {}", delivery.event, _publishing_link(delivery.publishing))
            try:
                delivery_resend(delivery=delivery)
            except BrokerUnavailable as exc:
                self.message_user(
                    request, format_html("{}: not resent: {}", label, exc.detail), messages.ERROR
                )
            except PublishingError as exc:
                self.message_user(
                    request, format_html("{}: not resent: {}", label, exc.detail), messages.WARNING
                )
            else:
                self.message_user(request, format_html("{}: resent.", label), messages.SUCCESS)
