"""Projects: what a user publishes, from where, with which build, to where."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

# A project's URLs a user may write credentials into (`https://user:token@host/...`): kept, and
# never shown back (the API and the admin show `***`).
CREDENTIAL_URL_FIELDS = ("repository_url", "target_url", "webhook_url")


class Project(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="projects")
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100)
    repository_url = models.CharField(
        max_length=500,
        help_text="Git URL (https://, ssh://, git@host:path). file:// URLs and local paths only "
        "where PUBLISHING_ALLOW_LOCAL_SOURCES is on.",
    )
    ref = models.CharField(max_length=255, default="main", help_text="Branch or tag to build.")
    build_command = models.TextField(
        blank=True,
        default="",
        help_text="Command line run in the checkout without a shell; empty for no build.",
    )
    artifact_path = models.CharField(
        max_length=500, default=".", help_text="Path inside the checkout to package."
    )
    target_url = models.CharField(
        max_length=500, help_text="Where to submit the artifact: a URL whose scheme picks the store."
    )
    webhook_url = models.CharField(
        max_length=500,
        blank=True,
        default="",
        help_text="http(s) URL that receives every terminal status as signed JSON; empty for none.",
    )
    # Kept readable: signing needs it. Never shown back by the API or the admin.
    webhook_secret = models.CharField(
        max_length=128, blank=True, default="", help_text="HMAC-SHA256 key of the webhook signatures."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "slug"], name="project_unique_slug_per_owner"),
        ]
        # A build command runs on the workers: setting one is a right of its own, apart from
        # changing a project (publishing.authorization).
        permissions = [("set_build_command", "Can set build commands")]

    def __str__(self) -> str:
        return self.name
