"""What the commands for a developer's machine (bootstrap_demo, runlocal) share."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import CommandError


def refuse_in_production(command: str) -> None:
    """Raise CommandError under the production settings (and those built on them): `command` is not for
    a deployment."""
    if settings.PRODUCTION:
        raise CommandError(
            f"{command} is for a development machine and refuses to run under the production settings. "
            "Run it with DJANGO_SETTINGS_MODULE=publisher_project.settings.local (as `make run` does)."
        )
