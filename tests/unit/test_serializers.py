"""The publishing's answer, rendered by hand, says exactly what DRF renders from its declared fields."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import set_script_prefix
from django.utils import timezone
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.test import APIRequestFactory

from publishing.api.serializers import PublishingListSerializer, PublishingSerializer
from publishing.models import Attempt, Publishing
from tests.factories import ProjectFactory, PublishingFactory

pytestmark = pytest.mark.django_db


def _request(path: str = "/api/v1/publishing/") -> Request:
    return Request(APIRequestFactory().get(path))


def _both(
    serializer_class: type[PublishingSerializer], publishing: Publishing, path: str = "/api/v1/publishing/"
) -> tuple[str, str]:
    serializer = serializer_class(publishing, context={"request": _request(path)})
    fast, drf = serializer.to_representation(publishing), serializer.drf_representation(publishing)
    assert list(fast) == list(drf)
    return JSONRenderer().render(fast).decode(), JSONRenderer().render(drf).decode()


def _variety() -> list[Publishing]:
    """Publishings in every shape the answer takes: queued and waiting, finished with attempts,
    with credentials in URLs and job text, without a project or a requester."""
    now = timezone.now()
    project = ProjectFactory.create(repository_url="https://user:secret@git.example/repo.git")
    queued = PublishingFactory.create(project=project, status=Publishing.Status.QUEUED, queued_at=now)
    waiting = PublishingFactory.create(
        status=Publishing.Status.QUEUED,
        not_before=now + timedelta(minutes=5),
        wait_reason="retry_backoff",
        retries=2,
        error_code="TRANSIENT",
        error_message="fetch https://user:secret@git.example/repo.git failed",
    )
    published = PublishingFactory.create(
        status=Publishing.Status.PUBLISHED,
        progress=100,
        attempts=1,
        artifact_sha256="a" * 64,
        artifact_size=1234,
        artifact_uri="s3://key:secret@bucket/a.tar.gz",
        commit_sha="b" * 40,
        started_at=now,
        finished_at=now + timedelta(seconds=3, microseconds=250),
    )
    Attempt.objects.create(
        publishing=published, number=1, outcome=Attempt.Outcome.PUBLISHED, finished_at=now, log_excerpt="ok"
    )
    orphan = PublishingFactory.create(status=Publishing.Status.CANCELLED, finished_at=now, requested_by=None)
    orphan.project = None
    orphan.save()
    return [Publishing.objects.get(pk=p.pk) for p in (queued, waiting, published, orphan)]


@pytest.mark.parametrize("serializer_class", [PublishingSerializer, PublishingListSerializer])
def test_the_hand_rendered_publishing_is_what_drf_renders(
    serializer_class: type[PublishingSerializer],
) -> None:
    # Given publishings of every shape
    for publishing in _variety():
        # When both render it
        fast, drf = _both(serializer_class, publishing)
        # Then they say the same, in the same order
        assert fast == drf
        assert json.loads(fast)["id"] == str(publishing.pk)


def test_the_links_follow_the_script_prefix_and_the_format_override() -> None:
    # Given a publishing whose links were made once already, at the site's root
    publishing = PublishingFactory.create(status=Publishing.Status.QUEUED)
    root, _ = _both(PublishingSerializer, publishing)
    set_script_prefix("/publisher/")
    try:
        # When it is answered below a script prefix, to a request with ?format=json
        fast, drf = _both(PublishingSerializer, publishing, path="/api/v1/publishing/?format=json")
    finally:
        set_script_prefix("/")
    # Then its links are DRF's: under the prefix, with the override
    assert fast == drf
    url = json.loads(fast)["url"]
    assert url == f"http://testserver/publisher/api/v1/publishing/{publishing.pk}?format=json"
    assert json.loads(root)["url"] == f"http://testserver/api/v1/publishing/{publishing.pk}"
