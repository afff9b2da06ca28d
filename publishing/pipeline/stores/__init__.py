"""The stores the submit step delivers to, one module a URL scheme, and the registry that picks one.

`STORES` maps a target URL's scheme to its store's class (`base.Store`); that class owns what
differs between stores: the URL's form, the operator's policy (allowed folders, buckets,
addresses), its settings, how it delivers and how its failures are classified. Project
validation and the submit step ask `store_for`; nothing else looks at the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.module_loading import import_string

from publishing.exceptions import PermanentJobError
from publishing.pipeline.network import split_url
from publishing.pipeline.stores.base import Store

__all__ = ["STORES", "Store", "StoreEntry", "store_for", "target_url_help", "validate_target_url"]


@dataclass(frozen=True)
class StoreEntry:
    """Where a scheme's store class lives (imported when a URL of the scheme is first met, so a store's
    client library loads only where it is used), and the form of its URLs, for people."""

    path: str
    form: str


STORES: dict[str, StoreEntry] = {
    "file": StoreEntry("publishing.pipeline.stores.file.FileStore", "file:///folder"),
    "http": StoreEntry("publishing.pipeline.stores.http.HttpStore", "http://host/path"),
    "https": StoreEntry("publishing.pipeline.stores.http.HttpStore", "https://host/path"),
    "s3": StoreEntry("publishing.pipeline.stores.s3.S3Store", "s3://bucket/prefix"),
}


def target_url_help() -> str:
    """What a target URL may be, for the API's schema."""
    forms = ", ".join(entry.form for entry in STORES.values())
    return f"Where to submit the artifact; its scheme picks the store: {forms}."


def store_for(url: str) -> Store:
    """The store for `url`'s scheme, configured from the settings; PermanentJobError (TARGET_INVALID)
    for a malformed URL or a scheme no store serves."""
    scheme = split_url(url, what="target URL", code="TARGET_INVALID").scheme.lower()
    if scheme not in STORES:
        raise PermanentJobError(
            f"unsupported target URL scheme {scheme!r} (supported: {', '.join(f'{s}://' for s in STORES)})",
            code="TARGET_INVALID",
        )
    store: Store = import_string(STORES[scheme].path).from_settings()
    return store


def validate_target_url(url: str) -> None:
    """Check a target URL's form and its store's policy, without the network; raise PermanentJobError."""
    store_for(url).validate(url)
