"""The admin keeps up: the publishing page refreshes as a whole, the changelist and the queue overview
offer a live toggle, the changelist fits 1400 px, and the queue overview has a row in the app list."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from publishing.models import Publishing
from tests.factories import PublishingFactory, UserFactory
from tests.unit.test_admin import CHANGELIST, change_url

pytestmark = pytest.mark.django_db


OVERVIEW = f"{CHANGELIST}overview/"
QUEUE_ROW = 'id="publishing-queueoverview"'


def test_the_index_and_the_sidebar_list_the_queue_overview_under_publishing(admin_client_: Client) -> None:
    # The index's app list: a "Queue overview" row in the Publishing app, linked to the page
    index = admin_client_.get("/admin/").content.decode()
    assert QUEUE_ROW in index
    assert f'<a href="{OVERVIEW}">Queue overview</a>' in index
    # The sidebar of every admin page lists it too, and marks it current on the overview itself
    assert QUEUE_ROW in admin_client_.get(CHANGELIST).content.decode()
    overview = admin_client_.get(OVERVIEW).content.decode()
    assert 'class="model-queueoverview current-model"' in overview


def test_only_those_who_may_see_publishings_get_the_queue_overview_row() -> None:
    # Given staff who may see projects but not publishings
    user = UserFactory.create(is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename="view_project"))
    client = Client()
    client.force_login(user)

    # Then neither the index nor the app page lists the overview
    assert QUEUE_ROW not in client.get("/admin/").content.decode()
    assert QUEUE_ROW not in client.get("/admin/publishing/").content.decode()


def test_the_changelist_and_the_overview_offer_a_live_toggle_that_remembers_itself(
    admin_client_: Client, stub_broker
) -> None:
    for url, key in ((CHANGELIST, "publisher.live.changelist"), (OVERVIEW, "publisher.live.overview")):
        html = admin_client_.get(url).content.decode()
        assert 'id="live-toggle"' in html, url
        assert f'data-live-key="{key}"' in html, url
        assert 'id="live-state"' in html, url
        assert "publishing/live_poll.js" in html, url


def test_the_changelist_is_narrow_enough_for_1400_px(admin_client_: Client) -> None:
    # Given a building and a failed publishing
    building = PublishingFactory.create(building=True, commit_sha="0123456789abcdef" * 2 + "01234567")
    PublishingFactory.create(failed=True, finished_at=timezone.now())

    html = admin_client_.get(CHANGELIST).content.decode()

    # Then the commit shows its short id (its whole id on hover), progress is part of the status while
    # active, there is no finished column (duration says it), and the error code may wrap at `_`
    assert f'title="{building.commit_sha} ' in html
    assert ">0123456</code>" in html
    assert "column-progress_bar" not in html
    assert "column-finished_at" not in html
    assert html.count("<progress ") == 1
    assert "BUILD_<wbr>FAILED" in html


def test_the_changelist_says_how_long_ago_with_the_exact_second_on_hover(admin_client_: Client) -> None:
    created = timezone.now() - timedelta(minutes=3, seconds=5)
    publishing = PublishingFactory.create(building=True)
    Publishing.objects.filter(pk=publishing.pk).update(created_at=created)

    html = admin_client_.get(CHANGELIST).content.decode()

    assert f'title="{created:%Y-%m-%d %H:%M:%S}"' in html
    assert ">3 min ago</time>" in html


def test_the_publishing_page_marks_what_its_live_refresh_swaps(admin_client_: Client) -> None:
    active = PublishingFactory.create(building=True, log="checking out\n")
    finished = PublishingFactory.create(failed=True)

    html = admin_client_.get(change_url(active)).content.decode()

    # The page refreshes itself from its own URL while active; the log keeps its own element
    assert 'data-terminal="false"' in html
    assert 'id="publishing-log"' in html
    assert "publishing/live_log.js" in html
    assert 'data-terminal="true"' in admin_client_.get(change_url(finished)).content.decode()
