"""http(s):// store: the archive POSTed to an endpoint on a public address (unless
PUBLISHING_ALLOW_PRIVATE_TARGETS), with the publishing id as `Idempotency-Key`."""

from __future__ import annotations

import json
import logging
from typing import Any, Self
from urllib.parse import urljoin

from django.conf import settings

from publishing.exceptions import PermanentJobError
from publishing.pipeline.base import Artifact, Origin, Submission
from publishing.pipeline.network import answer_error, check_host, post, split_url
from publishing.redaction import redact_credentials

logger = logging.getLogger(__name__)

# How much of a response body is read: enough for a JSON answer or an error excerpt, never a flood.
RESPONSE_READ_LIMIT = 64 * 1024


class HttpStore:
    """POSTs the archive; `allow_private` lets it reach the worker's own network, `timeout` in seconds."""

    def __init__(self, *, allow_private: bool, timeout: int) -> None:
        self.allow_private = allow_private
        self.timeout = timeout

    @classmethod
    def from_settings(cls) -> Self:
        return cls(
            allow_private=settings.PUBLISHING_ALLOW_PRIVATE_TARGETS,
            timeout=settings.PUBLISHING_SUBMIT_TIMEOUT,
        )

    def validate(self, url: str) -> None:
        parts = split_url(url, what="target URL", code="TARGET_INVALID")
        if not parts.hostname:
            raise PermanentJobError("target URL has no host", code="TARGET_INVALID")
        check_host(parts.hostname, allow_private=self.allow_private, code="TARGET_NOT_ALLOWED", resolve=False)

    def submit(
        self, artifact: Artifact, *, target_url: str, publishing_id: str, origin: Origin
    ) -> Submission:
        self.validate(target_url)
        host = split_url(target_url, what="target URL", code="TARGET_INVALID").hostname or ""
        check_host(host, allow_private=self.allow_private, code="TARGET_NOT_ALLOWED", resolve=True)
        return _submit_over_http(
            artifact,
            target_url,
            publishing_id=publishing_id,
            timeout=self.timeout,
            allow_private=self.allow_private,
        )


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _first_string(data: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = data.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _submit_over_http(
    artifact: Artifact, target_url: str, *, publishing_id: str, timeout: int, allow_private: bool
) -> Submission:
    """POST the archive; classify the answer into a Submission, a transient or a permanent error.

    A 307 or 308 is followed (the archive is sent again); another redirect is an answer like any 3xx.
    """
    safe_url = redact_credentials(target_url)
    headers = {
        "Content-Type": "application/gzip",
        "Idempotency-Key": publishing_id,
        "X-Checksum-SHA256": artifact.sha256,
        "X-Publishing-Id": publishing_id,
        # The commit id only: a header carries ASCII, which a subject or an author name may not be.
        **({"X-Commit-SHA": artifact.commit.sha} if artifact.commit else {}),
    }
    try:
        fh = artifact.path.open("rb")
    except OSError as exc:
        raise PermanentJobError(f"artifact file cannot be read: {exc}", code="ARTIFACT_NOT_FOUND") from exc
    label = f"target {safe_url}"
    with fh:
        answer = post(
            target_url,
            data=fh,
            headers=headers,
            timeout=timeout,
            allow_private=allow_private,
            read_limit=RESPONSE_READ_LIMIT,
            label=label,
            code_prefix="TARGET",
        )
    logger.info("Target %s answered %s for publishing %s", safe_url, answer.status, publishing_id)
    if error := answer_error(answer, label=label, code_prefix="TARGET"):
        raise error
    data = _json_object(answer.body)
    location = answer.headers.get("Location") or _first_string(data, "uri", "url")
    # Relative locations are resolved against the URL that answered (after any redirect);
    # credentials in the target URL are not kept.
    uri = redact_credentials(urljoin(answer.url, location) if location else answer.url)
    ref = _first_string(data, "id", "ref") or answer.headers.get("X-Submission-Id", "")
    return Submission(uri=uri, ref=ref)
