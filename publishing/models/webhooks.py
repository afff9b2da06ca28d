"""Webhook deliveries: the durable outbox of a publishing's terminal statuses."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone

from publishing.models.publishings import Publishing


class WebhookDelivery(models.Model):
    """One terminal status of a publishing, POSTed to its project's webhook; a durable outbox row."""

    class State(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    publishing = models.ForeignKey(Publishing, on_delete=models.CASCADE, related_name="webhook_deliveries")
    url = models.CharField(max_length=500)
    event = models.CharField(max_length=64, help_text="publishing.published, .failed or .cancelled")
    # The exact bytes that were signed, so that every retry sends the same body.
    body = models.TextField()
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveIntegerField(default=0, help_text="POSTs made.")
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    message_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    updated_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "webhook deliveries"
        indexes = [models.Index(fields=["state", "updated_at"], name="webhook_state_updated")]

    def __str__(self) -> str:
        return f"{self.event} -> {self.url} ({self.state})"
