"""The admin: a job dashboard. Every state change goes through `publishing.services`.

One module a concern: `projects` (the project admin and its form), `publishings` (changelist, detail page,
live log, cancel and retry), `overview` (the queue page and the dead-letter requeue), `webhooks` (the
deliveries) and `display` (the badges, bars, durations and links they share). Django's autodiscovery
imports this package, and importing it registers them all.
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

admin.site.site_header = "Publisher administration"
admin.site.site_title = "Publisher admin"
admin.site.index_title = "Projects, publishings and the job queue"
# "View site": the user pages, whose top bar links to the API.
admin.site.site_url = "/projects/"
