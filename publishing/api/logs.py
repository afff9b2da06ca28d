"""A publishing's log as the API gives it: text by default, JSON on request, followed with a cursor.

A reader follows a running publishing by asking again with the cursor of the last answer: each call
answers at once with what is there (no request waits for new lines), and every line comes exactly
once, in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.http import HttpResponse
from rest_framework import serializers
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from publishing.api.serializers import FieldsBuiltOnce
from publishing.models import LogLine
from publishing.redaction import redact_credentials
from publishing.selectors import LogPage, render_line

# A cursor is the id of the last line given: digits, opaque to readers.
CURSOR_PATTERN = r"^[0-9]{1,18}$"
# Response headers that carry the page's state in both formats (the text has no room for them).
CURSOR_HEADER = "Log-Cursor"
MORE_HEADER = "Log-More"
COMPLETE_HEADER = "Log-Complete"


class LogQuerySerializer(serializers.Serializer[dict[str, Any]]):
    since = serializers.RegexField(
        CURSOR_PATTERN,
        required=False,
        help_text="Only lines after this cursor (the `cursor` of a previous answer); from the start without.",
        error_messages={"invalid": "Not a cursor: give the cursor of a previous answer."},
    )
    step = serializers.ChoiceField(
        choices=LogLine.Step.choices,
        required=False,
        help_text="Only this step's lines (`event`: what Publisher did).",
    )
    attempt = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, help_text="Only this attempt's lines."
    )


class LogLineSerializer(FieldsBuiltOnce, serializers.ModelSerializer[LogLine]):
    class Meta:
        model = LogLine
        fields = ["time", "attempt", "step", "stream", "text"]
        read_only_fields = fields

    def to_representation(self, instance: LogLine) -> dict[str, Any]:
        data = super().to_representation(instance)
        # A build may print a URL with its credentials, as its error messages may.
        data["text"] = redact_credentials(data["text"])
        return data


class LogPageSerializer(serializers.Serializer[LogPage]):
    cursor = serializers.CharField(help_text="Ask again with `?since=` this to get only newer lines.")
    more = serializers.BooleanField(help_text="More lines are already there: ask again at once.")
    complete = serializers.BooleanField(
        help_text="The publishing has finished and this is the end of its log: nothing more will come."
    )
    dropped = serializers.IntegerField(
        help_text="The oldest lines the log's cap (PUBLISHING_LOG_LIMIT) has dropped, ever."
    )
    lines = LogLineSerializer(many=True)


class PlainTextRenderer(BaseRenderer):
    """Text as it is; anything else (an error's envelope) as JSON, which `finalize_response` labels so."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        if isinstance(data, str):
            return data.encode()
        return json.dumps(data).encode()


def log_response(request: Request, page: LogPage, *, since: int) -> HttpResponse | Response:
    """The page as the client asked for it: text lines (time, step, text) or the structured lines."""
    headers = {
        CURSOR_HEADER: str(page.cursor),
        MORE_HEADER: str(page.more).lower(),
        COMPLETE_HEADER: str(page.complete).lower(),
    }
    if isinstance(request.accepted_renderer, PlainTextRenderer):
        head = f"[{page.dropped} earlier lines dropped]\n" if page.dropped and not since else ""
        text = "".join(
            render_line(line.time, line.step, redact_credentials(line.text)) for line in page.lines
        )
        # A plain response: DRF's drops the Content-Type of an empty body, and an empty log is one.
        return HttpResponse(head + text, content_type="text/plain; charset=utf-8", headers=headers)
    return Response(LogPageSerializer(page).data, headers=headers)


def errors_as_json(request: Request, response: Response) -> None:
    """An error answered to a text reader is the JSON envelope, and says so."""
    if isinstance(getattr(request, "accepted_renderer", None), PlainTextRenderer) and not isinstance(
        response.data, str
    ):
        request.accepted_renderer = JSONRenderer()
        request.accepted_media_type = JSONRenderer.media_type


LOG_RENDERERS = [PlainTextRenderer, JSONRenderer]
