"""A user in a real browser on the browsable API: log in, initiate from the form, follow the link."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from publishing.models import Publishing
from tests.browser.conftest import PASSWORD, artifact, require_playwright, with_password
from tests.support.polling import wait_until

require_playwright()
from playwright.sync_api import Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]

INITIATE = "/api/v1/publishing/initiate"


def response_body(page: Page) -> dict[str, object]:
    """The JSON that the browsable API shows (it renders links inside it as <a>)."""
    text = page.locator(".response-info pre").inner_text()
    _, _, body = text.partition("\n\n")  # headers, a blank line, then the body
    parsed: dict[str, object] = json.loads(body)
    return parsed


def choose_project(page: Page, name: str) -> None:
    """Pick the project in the form's list of the caller's projects, by its label."""
    field = page.locator('#post-object-form select[name="project_id"]')
    labels = field.locator("option").all_inner_texts()
    label = next((text for text in labels if name in text), None)
    assert label is not None, f"{name!r} is not offered: {labels}"
    field.select_option(label=label)


def test_user_initiates_from_the_browsable_api_form_and_follows_the_link(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a user with a project, and the real stack
    user, token = owner_token
    with_password(user)
    project = make_project(f"file://{tmp_path / 'store'}", slug="docs-site", name="Docs site")
    stack = make_stack(redis_url)
    stack.serve(token)

    # When they log in through the browsable API's login page
    page.goto(f"{stack.base_url}/api-auth/login/?next={INITIATE}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click('form [type="submit"]')

    # Then they are on initiate, which offers the form (a GET is not allowed: it only POSTs)
    expect(page).to_have_url(f"{stack.base_url}{INITIATE}")
    expect(page.locator("#post-object-form")).to_be_visible()
    page.screenshot(path=artifact(request, "form"), full_page=True)

    # When they choose the project and POST the form
    choose_project(page, project.name)
    page.click('#post-object-form button:has-text("POST")')

    # Then the response is 202 with the new publishing
    expect(page.locator(".response-info")).to_contain_text("HTTP 202 Accepted")
    created = response_body(page)
    publishing_id = str(created["id"])
    url = str(created["url"])
    assert url == f"{stack.base_url}/api/v1/publishing/{publishing_id}"
    page.screenshot(path=artifact(request, "initiated"), full_page=True)

    # When they follow the publishing's link
    page.click(f'.response-info a[href="{url}"]')

    # Then its page shows the publishing: its id and a status
    expect(page).to_have_url(url)
    expect(page.locator(".response-info")).to_contain_text("HTTP 200 OK")
    shown = response_body(page)
    assert shown["id"] == publishing_id
    assert shown["status"] in Publishing.Status.values
    assert Publishing.objects.get(pk=publishing_id).project_id == project.pk

    # And reloading it, they see the worker publish it
    def reloaded_until_published() -> dict[str, Any] | None:
        nonlocal shown
        page.reload()
        shown = response_body(page)
        return shown if shown["status"] == "published" else None

    if shown["status"] != "published":
        shown = wait_until(
            reloaded_until_published, 60, lambda: f"never shown published: {shown}", interval=0.3
        )
    assert shown["progress"] == 100
    # With its one attempt, and links to what can be done with it
    attempts = shown["attempt_history"]
    assert isinstance(attempts, list)
    assert [(a["number"], a["outcome"]) for a in attempts] == [(1, "published")]
    assert shown["retry"] == f"{url}/retry"
    page.screenshot(path=artifact(request, "published"), full_page=True)
