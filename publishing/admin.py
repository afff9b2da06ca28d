from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from publishing import selectors, services
from publishing.models import Project, Publishing

RECENT_FAILURES = 20


class ProjectAdminForm(forms.ModelForm[Project]):
    class Meta:
        model = Project
        fields = [
            "owner", "name", "slug", "repository_url", "ref", "build_command", "artifact_path", "target_url",
        ]  # fmt: skip

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        request: HttpRequest | None = getattr(self, "request", None)
        if request is not None:
            try:
                services.project_validate(user=request.user, data=cleaned, instance=self.instance)
            except ValidationError as exc:
                raise ValidationError(exc.message_dict) from exc
        return cleaned


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin[Project]):
    form = ProjectAdminForm
    list_display = ["name", "slug", "owner", "repository_url", "ref", "target_url", "updated_at"]
    list_filter = ["owner"]
    search_fields = ["name", "slug", "repository_url", "owner__username"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["id", "created_at", "updated_at"]

    def get_form(
        self, request: HttpRequest, obj: Project | None = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm[Project]]:
        form = super().get_form(request, obj, change=change, **kwargs)
        form.request = request  # type: ignore[attr-defined]
        return form


@admin.register(Publishing)
class PublishingAdmin(admin.ModelAdmin[Publishing]):
    list_display = [
        "id",
        "project",
        "status",
        "progress",
        "attempts",
        "requested_by",
        "error_code",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "project", "created_at"]
    search_fields = ["id", "project__name", "project__slug", "requested_by__username", "error_code"]
    date_hierarchy = "created_at"
    list_select_related = ["project", "requested_by"]
    # Status changes go through the services only, never an admin form.
    readonly_fields = [field.name for field in Publishing._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        overview = path(
            "overview/", self.admin_site.admin_view(self.overview_view), name="publishing_publishing_overview"
        )
        return [overview, *super().get_urls()]

    def overview_view(self, request: HttpRequest) -> HttpResponse:
        """The queue now, for staff: drawn whatever is down, saying what is."""
        overview = selectors.system_overview()
        context = {
            **self.admin_site.each_context(request),
            "title": "Queue overview",
            "overview": overview,
            "failures": selectors.recent_failures(RECENT_FAILURES) if overview.database_ok else [],
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/publishing/publishing/overview.html", context)
