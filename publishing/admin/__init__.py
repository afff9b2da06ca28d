"""The admin: a job dashboard. Every state change goes through `publishing.services`.

One module a concern: `projects` (the project admin and its form), `publishings` (changelist, detail page,
live log, cancel and retry), `attempts` (the detail page's inline), `overview` (the queue page and its
dead letters), `webhooks` (the deliveries) and `display` (the badges, bars, durations and links they
share). Django's autodiscovery
imports this package, and importing it registers them all on the site of `publishing.admin_site` (its
name, and the queue overview's row in the app list).
"""

from django.contrib import admin
from django_dramatiq import admin as _registers_the_task_admin  # noqa: F401
from django_dramatiq.models import Task

from publishing.admin import overview, projects, publishings, webhooks

__all__ = ["overview", "projects", "publishings", "webhooks"]

# One job list: the publishings and their attempts are the job record. django_dramatiq stays installed
# for its broker set-up, and its admin module (imported above, so that it has run whichever app the
# autodiscovery reaches first) registers a list of Task rows that nothing writes.
admin.site.unregister(Task)
