"""The parts of Dramatiq's Redis broker that publishing/redis_wakeup.py mirrors are the installed ones."""

from __future__ import annotations

import pytest

from publishing.redis_wakeup import WakingRedisBroker, _WakeableConsumer, mirrored_source_digest

MIRRORS = sorted(
    (cls.__name__, name, digest)
    for cls in (_WakeableConsumer, WakingRedisBroker)
    for name, digest in cls.MIRRORS.items()
)


@pytest.mark.parametrize(("mirror", "upstream", "recorded"), MIRRORS, ids=[f"{m}-{u}" for m, u, _ in MIRRORS])
def test_the_mirrored_dramatiq_source_is_the_installed_one(mirror: str, upstream: str, recorded: str) -> None:
    # Given the digest recorded beside the mirror, when the installed Dramatiq's source is digested
    installed = mirrored_source_digest(upstream)

    # Then they are the same: else the mirror may no longer match what it copies
    assert installed == recorded, (
        f"{upstream} changed in the installed Dramatiq (digest {installed}, recorded {recorded}). "
        f"Re-read the upstream code, update {mirror} in publishing/redis_wakeup.py to match it, "
        f"then record the new digest in {mirror}.MIRRORS."
    )


def test_a_changed_source_gives_another_digest() -> None:
    # Given two upstream functions, their digests differ: the check above can fail
    assert mirrored_source_digest("dramatiq.brokers.redis._RedisConsumer.__next__") != mirrored_source_digest(
        "dramatiq.brokers.redis._RedisConsumer.__init__"
    )
