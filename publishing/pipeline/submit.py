"""Submit step: deliver the archive to the store its target URL names (`publishing.pipeline.stores`).

Every store is idempotent per publishing: a retried submit of the same archive stores it once.
"""

from __future__ import annotations

from publishing.pipeline.base import Artifact, Origin, Submission
from publishing.pipeline.stores import store_for


def submit(artifact: Artifact, *, target_url: str, publishing_id: str, origin: Origin) -> Submission:
    """Deliver `artifact` to `target_url`; raise TransientJobError (retry) or PermanentJobError on failure."""
    return store_for(target_url).submit(
        artifact, target_url=target_url, publishing_id=publishing_id, origin=origin
    )
