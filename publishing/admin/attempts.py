"""A publishing's attempts, as the inline of its admin page: each run of the pipeline, oldest first."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from publishing.admin import display
from publishing.models import Attempt
from publishing.redaction import redact_credentials

ATTEMPT_FIELDS = (
    "number", "outcome_badge", "started_at", "finished_at", "duration", "worker", "message_id", "commit",
    "error", "log",
)  # fmt: skip


class AttemptInline(display.RecordInline):
    """Each run of the pipeline, oldest first."""

    model = Attempt
    fields = ATTEMPT_FIELDS
    readonly_fields = ATTEMPT_FIELDS

    @admin.display(description="outcome")
    def outcome_badge(self, attempt: Attempt) -> SafeString:
        return display.badge(attempt.outcome)

    @admin.display(description="duration")
    def duration(self, attempt: Attempt) -> str:
        return display.span(
            attempt.started_at, attempt.finished_at, running=attempt.outcome == Attempt.Outcome.RUNNING
        )

    @admin.display(description="commit")
    def commit(self, attempt: Attempt) -> SafeString | str:
        return display.commit(attempt.commit_sha, attempt.commit_subject)

    @admin.display(description="error")
    def error(self, attempt: Attempt) -> SafeString | str:
        if not (attempt.error_code or attempt.error_message):
            return "—"
        return format_html(
            "<code>{}</code> {}", attempt.error_code, redact_credentials(attempt.error_message)
        )

    @admin.display(description="log")
    def log(self, attempt: Attempt) -> SafeString | str:
        if not attempt.log_excerpt:
            return "—"
        return format_html(
            '<details class="pub-excerpt"><summary>end of its log</summary><pre>{}</pre></details>',
            redact_credentials(attempt.log_excerpt),
        )
