"""Run the reconciler once (the workers run it every PUBLISHING_RECONCILE_INTERVAL seconds anyway)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from publishing.services import webhooks
from publishing.services.maintenance import job_records_prune, publishing_reconcile


class Command(BaseCommand):
    help = (
        "Make the broker match the database once: queue pending publishings, requeue those whose worker "
        "died, send again queued ones (and pending webhook deliveries) whose message is gone; then prune "
        "dead letters."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = publishing_reconcile()
        resent = webhooks.deliveries_reconcile()
        pruned = job_records_prune()
        self.stdout.write(
            f"Reconciled: {report}, {resent} webhook deliveries sent again. Pruned {pruned} dead letters."
        )
