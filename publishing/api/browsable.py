"""The browsable API (`/api/v1/...` in a browser) as a UI: forms that keep what was sent, pages that say
what they do, Publisher's name on them.

JSON clients never meet this module: it renders only for a client that asks for HTML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

from django.http import Http404
from django.urls import Resolver404, resolve
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe
from rest_framework import exceptions, renderers, serializers
from rest_framework.request import Request, override_method
from rest_framework.response import Response

from publishing.api.operations import Operation

if TYPE_CHECKING:
    # Only for types: DRF's settings import this module while rest_framework.views is loading.
    from rest_framework.views import APIView


class BrowsableAPIRenderer(renderers.BrowsableAPIRenderer):
    """DRF's, but a form answered with an error comes back as it was sent, its errors beside its fields.

    DRF's own builds the form again from the answer's serializer, which the error envelope
    (`{"code", "detail", "errors"}`) does not carry: the form came back blank, and after a 202 it was
    the answer's (a publishing's) fields, not the form's.
    """

    template = "publishing/api/browsable.html"
    # The answer being rendered (get_context sets it): its status and body decide how a form comes back.
    response: Response

    def get_context(
        self, data: Any, accepted_media_type: str | None, renderer_context: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.response = renderer_context["response"]
        context: dict[str, Any] = super().get_context(data, accepted_media_type, renderer_context)
        view, request = renderer_context["view"], renderer_context["request"]
        # DRF draws an HTML form for PUT only; the projects take PATCH.
        context["patch_form"] = self.get_rendered_html_form(data, view, "PATCH", request)
        extras = getattr(view, "browsable_extras", None)
        context.update(extras() if extras is not None else {})
        # An error said again above the forms, where the person looks next (the envelope is above).
        body = self.response.data
        if self.response.status_code >= 400 and isinstance(body, Mapping) and "detail" in body:
            context["answer_error"] = body
        return context

    def get_breadcrumbs(self, request: Request) -> list[tuple[str, str]]:
        # DRF names each crumb by a bare instance of its view's class, which knows no action.
        return [(_crumb_name(url) or name, url) for name, url in super().get_breadcrumbs(request)]

    def get_rendered_html_form(self, data: Any, view: APIView, method: str, request: Request) -> Any:
        if request.method != method or method not in ("POST", "PATCH"):
            return super().get_rendered_html_form(data, view, method, request)
        sent = _sent(request)
        with override_method(view, request, method) as overridden:
            instance = _instance(view, data, method)
            if (method == "PATCH" and instance is None) or not self.show_form_for_method(
                view, method, overridden, instance
            ):
                return None
            if self.response.status_code < 400:
                # Done: the form again, ready for the next one (a project's, as it now is).
                form = view.get_serializer(instance=instance)  # type: ignore[attr-defined]
            else:
                form = view.get_serializer(  # type: ignore[attr-defined]
                    instance=instance, data=sent, partial=method == "PATCH"
                )
                _as_sent(form, self.response.data)
        return self.render_form_for_serializer(form)


def _crumb_name(url: str) -> str | None:
    try:
        view = resolve(urlsplit(url).path).func
    except Resolver404:
        return None
    operations = getattr(getattr(view, "cls", None), "operations", {})
    action = next(iter(getattr(view, "actions", {}).values()), "")
    operation = operations.get(action)
    return operation.summary if operation else None


def _sent(request: Request) -> Any:
    try:
        return request.data
    except exceptions.ParseError:
        return {}


def _instance(view: APIView, data: Any, method: str) -> Any:
    """The object a PATCH form edits: the answer's, or for an error (which carries none) the view's."""
    if method != "PATCH":
        return None
    instance = getattr(getattr(data, "serializer", None), "instance", None)
    if instance is not None:
        return instance
    try:
        return view.get_object()  # type: ignore[attr-defined]
    except (Http404, exceptions.APIException):
        return None


def _as_sent(form: serializers.BaseSerializer[Any], answer: Any) -> None:
    """Make `form` show what was sent (over the object's values) and the answer's errors per field.

    Not validated again: the answer has judged the request, the service's checks included. A
    secret (a password input) is never written back into the page.
    """
    errors = answer.get("errors", {}) if isinstance(answer, Mapping) else {}
    shown: dict[str, Any] = {}
    if form.instance is not None:
        shown.update(cast(Mapping[str, Any], form.to_representation(form.instance)))
    shown.update(cast(Mapping[str, Any], form.get_initial()))
    for name, field in form.fields.items():  # type: ignore[attr-defined]
        if field.style.get("input_type") == "password":
            shown.pop(name, None)
    # DRF reads these three: set, they stand for a validation that already ran.
    form._validated_data = {}  # type: ignore[attr-defined]
    form._errors = errors if isinstance(errors, Mapping) else {"non_field_errors": errors}  # type: ignore[attr-defined]
    form._data = shown  # type: ignore[attr-defined]


class DescribedViewSet:
    """A viewset whose pages and OPTIONS answers name and describe each operation, not the class.

    `operations` holds the texts by action; the schema's `extend_schema` reads the same ones.
    """

    operations: ClassVar[Mapping[str, Operation]] = {}
    # Set by a page that asks to confirm an action: the page's heading.
    confirm_question: str | None = None

    def operation(self) -> Operation | None:
        """The operation of this request, or of the URL's first one (for OPTIONS, DRF's "metadata")."""
        action = getattr(self, "action", None)
        if action in (None, "metadata"):
            action = next(iter(getattr(self, "action_map", {}).values()), None)
        return self.operations.get(action or "")

    def get_view_name(self) -> str:
        if self.confirm_question:
            return self.confirm_question
        operation = self.operation()
        return operation.summary if operation else "Publisher API"

    def get_view_description(self, html: bool = False) -> str:
        operation = self.operation()
        text = operation.description if operation else ""
        return described(text) if html else text

    def browsable_extras(self) -> dict[str, Any]:
        """What the page adds to DRF's: its POST button's label, a question to confirm, a notice."""
        post = getattr(self, "action_map", {}).get("post", "")
        operation = self.operations.get(post)
        return {
            "post_button": operation.button if operation and operation.button else "POST",
            "confirm_question": self.confirm_question,
            "notice": self.browsable_notice(),
        }

    def browsable_notice(self) -> SafeString | None:
        return None


def described(text: str) -> SafeString:
    """`text` as HTML: its paragraphs, and `code` as code (the texts are the schema's Markdown)."""
    paragraphs = (
        re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(paragraph))) for paragraph in text.split("\n\n")
    )
    return mark_safe("".join(f"<p>{paragraph}</p>" for paragraph in paragraphs))  # noqa: S308 (escaped above)


def notice_with_link(text: str, url: str, link_text: str) -> SafeString:
    return format_html('{} <a href="{}">{}</a>.', text, url, link_text)
