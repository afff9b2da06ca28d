"""The admin site: Django's, with Publisher's name on it and the queue overview in its app list.

Installed as the default site by `PublisherAdminConfig` (INSTALLED_APPS). Apart from the admin package,
which registers the models on this site: its autodiscovery would otherwise import the site it builds.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest
from django.urls import reverse


class PublisherAdminSite(AdminSite):
    site_header = "Publisher administration"
    site_title = "Publisher admin"
    index_title = "Projects, publishings and the job queue"
    # "View site": the user pages, whose top bar links to the API.
    site_url = "/projects/"

    def get_app_list(self, request: HttpRequest, app_label: str | None = None) -> list[dict[str, Any]]:
        """Django's, with a "Queue overview" row after Publishings for whoever may see them: the index,
        the app page and every page's sidebar list it."""
        app_list: list[dict[str, Any]] = super().get_app_list(request, app_label)
        for app in app_list:
            models: list[dict[str, Any]] = app["models"]
            at = next((i for i, m in enumerate(models) if m["object_name"] == "Publishing"), None)
            if app["app_label"] == "publishing" and at is not None:
                models.insert(at + 1, self._overview_row())
        return app_list

    def _overview_row(self) -> dict[str, Any]:
        return {
            "model": None,
            "name": "Queue overview",
            "object_name": "QueueOverview",
            "perms": {"view": True},
            "admin_url": reverse("admin:publishing_publishing_overview", current_app=self.name),
            "add_url": None,
            "view_only": True,
        }


class PublisherAdminConfig(AdminConfig):
    default_site = "publishing.admin_site.PublisherAdminSite"
