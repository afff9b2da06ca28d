"""The stores the submit step delivers to, one module a URL scheme, and the registry that picks one.

`STORES` maps a target URL's scheme to its store's class (`base.Store`); that class owns what
differs between stores: the URL's form, the operator's policy (allowed folders, buckets,
addresses), its settings, how it delivers and how its failures are classified. Project
validation and the submit step ask `store_for`; nothing else looks at the scheme.
"""

from __future__ import annotations

from django.utils.module_loading import import_string

from publishing.exceptions import PermanentJobError
from publishing.pipeline.network import split_url
from publishing.pipeline.stores.base import Store

__all__ = ["STORES", "Store", "store_for", "validate_target_url"]

# Imported when a URL of the scheme is first met: a store's client library loads only where it is used.
STORES: dict[str, str] = {
    "file": "publishing.pipeline.stores.file.FileStore",
    "http": "publishing.pipeline.stores.http.HttpStore",
    "https": "publishing.pipeline.stores.http.HttpStore",
    "s3": "publishing.pipeline.stores.s3.S3Store",
}


def store_for(url: str) -> Store:
    """The store for `url`'s scheme, configured from the settings; PermanentJobError (TARGET_INVALID)
    for a malformed URL or a scheme no store serves."""
    scheme = split_url(url, what="target URL", code="TARGET_INVALID").scheme.lower()
    if scheme not in STORES:
        raise PermanentJobError(
            f"unsupported target URL scheme {scheme!r} (supported: {', '.join(f'{s}://' for s in STORES)})",
            code="TARGET_INVALID",
        )
    store: Store = import_string(STORES[scheme]).from_settings()
    return store


def validate_target_url(url: str) -> None:
    """Check a target URL's form and its store's policy, without the network; raise PermanentJobError."""
    store_for(url).validate(url)
