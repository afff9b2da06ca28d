"""Every page of the service in a browser that may reach nothing but the service itself.

The machine that serves Publisher may have no internet, and a page must not need it: no CDN, no web
font, no analytics. Each page is loaded with every request to another host aborted, and the test
fails on any such request and on any console error or uncaught script error (a missing static file,
a script that breaks, a Content-Security-Policy refusal all show as one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from publishing.models import Publishing, WebhookDelivery
from tests.browser.conftest import PASSWORD, require_playwright, with_password
from tests.factories import ProjectFactory, PublishingFactory, UserFactory

require_playwright()
from playwright.sync_api import ConsoleMessage, Error, Page, Request, Route  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@dataclass(frozen=True)
class Visit:
    path: str
    # The page polls while it is open: wait for one of its polls to finish as well.
    live: bool = False


def pages(project: str, running: str, failed: str, published: str) -> list[Visit]:
    """Every kind of page: the user pages, the browsable API, the API docs and the admin."""
    return [
        Visit("/projects/"),
        Visit(f"/projects/{project}/"),
        Visit(f"/publishings/{running}/", live=True),
        Visit(f"/publishings/{failed}/"),
        Visit(f"/publishings/{published}/"),
        Visit("/api/v1/"),
        Visit("/api/v1/projects/"),
        Visit(f"/api/v1/projects/{project}/"),
        Visit("/api/v1/publishing/"),
        Visit(f"/api/v1/publishing/{running}"),
        Visit("/api/v1/publishing/initiate"),
        Visit(f"/api/v1/publishing/{running}/cancel"),
        Visit(f"/api/v1/publishing/{failed}/retry"),
        Visit(f"/api/v1/publishing/{published}/rerun"),
        Visit(f"/api/v1/publishing/{failed}/log"),
        Visit("/api/docs/"),
        Visit("/api/redoc/"),
        Visit("/admin/"),
        Visit("/admin/publishing/publishing/"),
        Visit(f"/admin/publishing/publishing/{running}/change/", live=True),
        Visit(f"/admin/publishing/publishing/{failed}/change/"),
        Visit("/admin/publishing/publishing/overview/"),
        Visit("/admin/publishing/project/"),
        Visit(f"/admin/publishing/project/{project}/change/"),
        Visit("/admin/publishing/webhookdelivery/"),
    ]


class Watch:
    """What a page asked of other hosts, and the errors its console and scripts reported."""

    def __init__(self, page: Page, ours: str) -> None:
        self.ours = ours
        self.elsewhere: list[str] = []
        self.errors: list[str] = []
        self.path = ""
        page.route("**/*", self.route)
        page.on("console", self.console)
        page.on("pageerror", self.page_error)

    def route(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == self.ours or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.elsewhere.append(f"{self.path}: {url}")
            route.abort()

    def console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{self.path}: {message.text} ({message.location.get('url')})")

    def page_error(self, error: Error) -> None:
        self.errors.append(f"{self.path}: uncaught {error.name}: {error.message}")


def test_every_page_needs_no_other_host_and_logs_no_error(page: Page, make_stack, redis_url: str) -> None:
    # Given a superuser's project with a running, a failed and a published publishing, and the web server
    admin = with_password(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    project = ProjectFactory.create(owner=admin, name="Docs site", slug="docs-site")
    running = PublishingFactory.create(
        project=project,
        building=True,
        started_at=timezone.now(),
        worker="host-1:4242",
        log="attempt 1 started",
    )
    failed = PublishingFactory.create(
        project=project, failed=True, error_message="exit status 2", log="failed"
    )
    published = PublishingFactory.create(project=project, published=True, commit_sha="a" * 40)
    WebhookDelivery.objects.create(
        publishing=published,
        url="https://hooks.example/publisher",
        event="publishing.published",
        body="{}",
        state=WebhookDelivery.State.DELIVERED,
    )
    Publishing.objects.filter(pk=running.pk).update(progress=40)
    stack = make_stack(redis_url)
    stack.start_web()
    watch = Watch(page, urlsplit(stack.base_url).netloc)

    # When the superuser logs in and opens every page
    watch.path = "/admin/login/"
    page.goto(f"{stack.base_url}/admin/login/?next=/admin/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click('#login-form [type="submit"]')
    page.wait_for_url(f"{stack.base_url}/admin/")
    for visit in pages(str(project.pk), str(running.pk), str(failed.pk), str(published.pk)):
        watch.path = visit.path
        page.goto(f"{stack.base_url}{visit.path}")
        page.wait_for_load_state("networkidle")
        if visit.live:
            page.wait_for_event("requestfinished", predicate=_ours_polled(watch.ours), timeout=15_000)

    # Then none asked another host for anything, and none reported an error
    assert watch.elsewhere == []
    assert watch.errors == [], "\n".join(watch.errors)


def _ours_polled(ours: str) -> Callable[[Request], bool]:
    def polled(request: Request) -> bool:
        return urlsplit(request.url).netloc == ours and request.resource_type in ("fetch", "xhr")

    return polled
