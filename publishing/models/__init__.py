"""Projects and their publishings, each publishing's attempts, log and webhook deliveries.

One module each; the publishing status machine is in `publishings`. Import them from here.
"""

from publishing.models.log import LogLine
from publishing.models.projects import CREDENTIAL_URL_FIELDS, Project
from publishing.models.publishings import (
    SNAPSHOT_FIELDS,
    Attempt,
    Publishing,
    PublishingQuerySet,
    WaitReason,
)
from publishing.models.webhooks import WebhookDelivery

__all__ = [
    "CREDENTIAL_URL_FIELDS",
    "SNAPSHOT_FIELDS",
    "Attempt",
    "LogLine",
    "Project",
    "Publishing",
    "PublishingQuerySet",
    "WaitReason",
    "WebhookDelivery",
]
