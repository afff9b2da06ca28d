"""The webhook deliveries: a read-only record of each, shown on its publishing too, and a resend action."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from publishing.admin import display
from publishing.exceptions import BrokerUnavailable, PublishingError
from publishing.models import WebhookDelivery
from publishing.services.webhooks import delivery_resend

DELIVERY_INLINE_FIELDS = (
    "event", "url", "state_badge", "attempts", "response_status", "last_error", "created_at", "delivered_at",
)  # fmt: skip
DELIVERY_FIELDS = (
    "id", "publishing_link", "event", "url", "state_badge", "attempts", "response_status", "last_error",
    "message_id", "created_at", "updated_at", "delivered_at", "body_view",
)  # fmt: skip


class WebhookDeliveryInline(display.RecordInline):
    model = WebhookDelivery
    show_change_link = True
    fields = DELIVERY_INLINE_FIELDS
    readonly_fields = DELIVERY_INLINE_FIELDS

    @admin.display(description="state")
    def state_badge(self, delivery: WebhookDelivery) -> SafeString:
        return display.badge(delivery.state)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin[WebhookDelivery]):
    list_display = [
        "short_id", "publishing_link", "event", "url", "state_badge", "attempts", "response_status",
        "created_at", "delivered_at",
    ]  # fmt: skip
    list_filter = ["state", "event", "created_at"]
    search_fields = ["id", "publishing__id", "url", "publishing__project__slug"]
    list_select_related = ["publishing"]
    actions = ["resend_selected"]
    fields = DELIVERY_FIELDS
    readonly_fields = DELIVERY_FIELDS

    class Media:
        css = display.MEDIA_CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: WebhookDelivery | None = None) -> bool:
        return False

    @admin.display(description="id", ordering="id")
    def short_id(self, delivery: WebhookDelivery) -> SafeString:
        return display.short_id(delivery.pk)

    @admin.display(description="publishing", ordering="publishing")
    def publishing_link(self, delivery: WebhookDelivery) -> SafeString:
        return display.publishing_link(delivery.publishing)

    @admin.display(description="state", ordering="state")
    def state_badge(self, delivery: WebhookDelivery) -> SafeString:
        return display.badge(delivery.state)

    @admin.display(description="body (as signed)")
    def body_view(self, delivery: WebhookDelivery) -> SafeString:
        return format_html('<pre class="publishing-log">{}</pre>', delivery.body)

    @admin.action(description="Resend selected webhook deliveries", permissions=["change"])
    def resend_selected(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        display.staff_user(request)
        for delivery in queryset.select_related("publishing__project"):
            label = format_html("{} of {}", delivery.event, display.publishing_link(delivery.publishing))
            try:
                delivery_resend(delivery=delivery)
            except BrokerUnavailable as exc:
                self.message_user(
                    request, format_html("{}: not resent: {}", label, exc.detail), messages.ERROR
                )
            except PublishingError as exc:
                self.message_user(
                    request, format_html("{}: not resent: {}", label, exc.detail), messages.WARNING
                )
            else:
                self.message_user(request, format_html("{}: resent.", label), messages.SUCCESS)
