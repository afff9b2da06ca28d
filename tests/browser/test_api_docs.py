"""The API's docs in a real browser with no network beyond this service: Swagger UI and ReDoc draw the
whole API from files the service itself serves."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import artifact, require_playwright

require_playwright()
from playwright.sync_api import Page, Route, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.mark.parametrize(
    ("path", "operation"),
    [("/api/docs/", "/api/v1/publishing/{id}/log"), ("/api/redoc/", "A publishing's log")],
)
def test_the_api_docs_draw_the_api_with_no_network_but_this_service(
    page: Page, make_stack, redis_url: str, request, path: str, operation: str
) -> None:
    # Given the real web server, and a browser that may reach nothing else
    stack = make_stack(redis_url)
    stack.start_web()
    ours = urlsplit(stack.base_url).netloc
    elsewhere: list[str] = []

    def only_ours(route: Route) -> None:
        if urlsplit(route.request.url).netloc == ours or route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_ours)

    # When the docs page is opened
    page.goto(f"{stack.base_url}{path}")

    # Then it draws the API's operations, and asked nothing of any other host
    drawn = page.get_by_role("heading", name=operation) if "redoc" in path else page.get_by_text(operation)
    expect(drawn.first).to_be_visible()
    page.screenshot(path=artifact(request, path.strip("/").replace("/", "-")), full_page=False)
    assert elsewhere == []
