"""A user (not staff) in a real browser on the browsable API: log in, initiate from the form, follow the
link; forms that keep what was typed; action URLs that ask to confirm rather than answer 405."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from publishing.models import Publishing
from tests.browser.conftest import PASSWORD, artifact, readme_screenshot, require_playwright, with_password
from tests.factories import PublishingFactory
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


def log_in(page: Page, base_url: str, user, path: str) -> None:
    """Through the browsable API's login page, landing on `path`."""
    page.goto(f"{base_url}/api-auth/login/?next={path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click('form [type="submit"]')
    expect(page).to_have_url(f"{base_url}{path}")


def field_group(page: Page, name: str):
    """The form group (label, input, errors, help) of the field `name` in the page's POST form."""
    return page.locator("#post-object-form .form-group").filter(has=page.locator(f'[name="{name}"]'))


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
    log_in(page, stack.base_url, user, INITIATE)

    # Then they are on initiate, which offers the form with its Publish button
    expect(page.locator("#post-object-form")).to_be_visible()
    expect(page.locator("h1")).to_have_text("Publish a project")
    page.screenshot(path=artifact(request, "form"), full_page=True)

    # When they choose the project and POST the form
    choose_project(page, project.name)
    page.click('#post-object-form button:has-text("Publish")')

    # Then the response is 202 with the new publishing, and the form offers the projects again
    expect(page.locator(".response-info")).to_contain_text("HTTP 202 Accepted")
    expect(page.locator('#post-object-form select[name="project_id"] option')).not_to_have_count(0)
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


def test_a_400_keeps_what_was_typed_with_the_fields_error_beside_it(
    page: Page, make_stack, owner_token, redis_url: str, request
) -> None:
    # Given a user on the projects form
    user, token = owner_token
    with_password(user)
    stack = make_stack(redis_url)
    stack.serve(token, worker=False)
    log_in(page, stack.base_url, user, "/api/v1/projects/")
    # (which starts from the model's defaults)
    expect(field_group(page, "ref").locator("input")).to_have_value("main")

    # When they fill it in with a target URL of no known store and create the project
    page.fill('#post-object-form [name="name"]', "Handbook")
    page.fill('#post-object-form [name="repository_url"]', "https://git.example.com/me/handbook.git")
    page.fill('#post-object-form [name="target_url"]', "gopher://nowhere")
    page.click('#post-object-form button:has-text("Create project")')

    # Then the answer is 400, and the form still holds what they typed, the error beside the field
    expect(page.locator(".response-info")).to_contain_text("HTTP 400 Bad Request")
    expect(field_group(page, "name").locator("input")).to_have_value("Handbook")
    target = field_group(page, "target_url")
    expect(target).to_have_class(re.compile(r"has-error"))
    expect(target.locator("input")).to_have_value("gopher://nowhere")
    expect(target.locator(".help-block").first).to_contain_text(re.compile(r"\w"))
    page.screenshot(path=artifact(request, "project-400"), full_page=True)


def test_a_409_keeps_the_picked_project_and_links_the_active_publishing(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given two projects, the second in the list with a publishing under way
    user, token = owner_token
    with_password(user)
    make_project(f"file://{tmp_path / 'a'}", slug="docs-site", name="Docs site")
    picked = make_project(f"file://{tmp_path / 'b'}", slug="handbook", name="Handbook")
    active = PublishingFactory.create(project=picked, building=True)
    stack = make_stack(redis_url)
    stack.serve(token, worker=False)
    log_in(page, stack.base_url, user, INITIATE)

    # When they pick it and publish
    choose_project(page, "Handbook")
    page.click('#post-object-form button:has-text("Publish")')

    # Then the answer is 409 with a link to the active one, and the project is still the one picked
    expect(page.locator(".response-info")).to_contain_text("HTTP 409 Conflict")
    active_url = f"{stack.base_url}/api/v1/publishing/{active.pk}"
    expect(page.locator(f'.response-info a[href="{active_url}"]')).to_be_visible()
    expect(page.locator('#post-object-form select[name="project_id"]')).to_have_value(str(picked.pk))
    page.screenshot(path=readme_screenshot(request, "browsable-api"), full_page=True)

    # And the link leads to the active publishing
    page.click(f'.response-info a[href="{active_url}"]')
    expect(page).to_have_url(active_url)
    assert response_body(page)["id"] == str(active.pk)


ACTION_PAGES = {
    "cancel": "Cancel publishing",
    "retry": "Retry publishing",
    "rerun": "Re-run publishing",
}


def test_every_action_url_opened_in_the_browser_asks_to_confirm_and_never_405(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a failed publishing of the user's project
    user, token = owner_token
    with_password(user)
    project = make_project(f"file://{tmp_path / 'store'}", slug="docs-site", name="Docs site")
    publishing = PublishingFactory.create(project=project, failed=True)
    stack = make_stack(redis_url)
    stack.serve(token, worker=False)
    log_in(page, stack.base_url, user, INITIATE)

    # Then initiate offers its form, and each action's URL asks its question with its button
    assert "Method Not Allowed" not in page.locator("body").inner_text()
    expect(page.locator('#post-object-form button:has-text("Publish")')).to_be_visible()
    short = str(publishing.pk)[:8]
    for action, label in ACTION_PAGES.items():
        answer = page.goto(f"{stack.base_url}/api/v1/publishing/{publishing.pk}/{action}")
        assert answer is not None
        assert answer.status == 200, action
        assert "Method Not Allowed" not in page.locator("body").inner_text(), action
        expect(page.locator("h1")).to_have_text(f"{label} {short} of Docs site?")
        expect(page.locator(f'#post-object-form button:has-text("{label}")')).to_be_visible()
    page.screenshot(path=artifact(request, "rerun-confirm"), full_page=True)

    # And opening them changed nothing
    publishing.refresh_from_db()
    assert publishing.status == Publishing.Status.FAILED


def test_the_project_patch_form_changes_what_was_edited_and_keeps_the_webhook_secret(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a project with a webhook and its signing secret (which the form never shows)
    user, token = owner_token
    with_password(user)
    project = make_project(
        f"file://{tmp_path / 'store'}",
        slug="docs-site",
        name="Docs site",
        webhook_url="https://hooks.example.com/publisher",
        webhook_secret="a-long-enough-secret",
    )
    stack = make_stack(redis_url)
    stack.serve(token, worker=False)
    path = f"/api/v1/projects/{project.pk}/"
    log_in(page, stack.base_url, user, path)

    # When they rename it in the page's PATCH form, leaving the secret's field empty
    form = page.locator("#patch-object-form")
    expect(form.locator('[name="webhook_secret"]')).to_have_value("")
    form.locator('[name="name"]').fill("Docs site (new)")
    form.locator('button:has-text("PATCH")').click()

    # Then the project is renamed, and its secret kept
    expect(page.locator(".request-info")).to_contain_text("PATCH")
    expect(page.locator(".response-info")).to_contain_text("HTTP 200 OK")
    expect(page.locator('#patch-object-form [name="name"]')).to_have_value("Docs site (new)")
    project.refresh_from_db()
    assert project.name == "Docs site (new)"
    assert project.webhook_secret == "a-long-enough-secret"
    page.screenshot(path=artifact(request, "patched"), full_page=True)
