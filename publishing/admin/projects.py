"""The project admin: its form shows credentials redacted, and every write goes through the services."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from publishing.admin import display
from publishing.exceptions import PublishingConflict, PublishingError
from publishing.models import CREDENTIAL_URL_FIELDS, Project
from publishing.redaction import redacted_url, restore_credentials
from publishing.services.projects import (
    PROJECT_FIELDS,
    deletion_refused,
    project_create,
    project_delete,
    project_update,
    project_validate,
)
from publishing.services.publishings import publishing_initiate


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


@admin.register(Project)
class ProjectAdmin(display.RedactedURLs, admin.ModelAdmin[Project]):
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
                # A link to the publishing: where it can be cancelled.
                protected.append(
                    format_html(
                        "{}: {} The publishing: {}",
                        project,
                        deletion_refused(active),
                        display.publishing_link(active),
                    )
                )
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

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view(self.publish_commit_view)
        own = [path("<path:object_id>/publish/", view, name="publishing_project_publish_commit")]
        return [*own, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {**(extra_context or {}), "can_publish": self.has_publish_permission(request)}
        return super().change_view(request, object_id, form_url, context)

    def publish_commit_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The project page's "Publish" form: its ref's head, or the commit or tag written in it."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_publish_permission(request):
            raise PermissionDenied
        project = self.get_object(request, object_id)
        if project is None:
            raise Http404("No such project.")
        self._publish(request, project, commit=request.POST.get("commit", "").strip())
        return redirect("admin:publishing_project_change", quote(project.pk))

    def has_publish_permission(self, request: HttpRequest) -> bool:
        """Publishing records a publishing: the model's add permission, though the admin has no add form."""
        return request.user.has_perm("publishing.add_publishing")

    @admin.action(description="Publish now", permissions=["publish"])
    def publish_now(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset.order_by("name"):
            self._publish(request, project)

    def _publish(self, request: HttpRequest, project: Project, *, commit: str = "") -> None:
        """Initiate a publishing of `project` as the staff user, and say how it went."""
        user = display.staff_user(request)
        try:
            publishing = publishing_initiate(user=user, project_id=project.pk, commit=commit, via="admin")
        except ValidationError as exc:
            said = " ".join(exc.message_dict.get("commit", exc.messages))
            self.message_user(request, format_html("{}: not published: {}", project, said), messages.ERROR)
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
            link = display.publishing_link(publishing)
            self.message_user(
                request,
                format_html("{}: publishing {} {}.", project, link, publishing.status),
                messages.SUCCESS,
            )
