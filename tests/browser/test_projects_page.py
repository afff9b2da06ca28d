"""A (non-staff) owner in a real browser: publish from the projects page and a project's page, then roll back.

Takes the README's screenshots docs/page-projects.png and docs/page-project.png (written there with
UPDATE_SCREENSHOTS=1, `make screenshots`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from publishing.models import Publishing
from tests.browser.conftest import PASSWORD, artifact, readme_screenshot, require_playwright, with_password

require_playwright()
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PUBLISHING_URL = re.compile(r"/publishings/([0-9a-f-]{36})/$")


def git(repo: Path, *args: str) -> str:
    argv = [
        "git",
        "-c",
        "user.name=Ada Lovelace",
        "-c",
        "user.email=ada@example.invalid",
        "-C",
        str(repo),
        *args,
    ]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def opened_publishing(page: Page) -> str:
    """The id of the publishing whose page the browser was just sent to."""
    expect(page).to_have_url(PUBLISHING_URL)
    match = PUBLISHING_URL.search(page.url)
    assert match is not None
    return match[1]


def history_row(page: Page, publishing_id: str) -> Locator:
    return page.locator(f'#history tbody tr[data-publishing="{publishing_id}"]')


def test_owner_publishes_twice_then_rolls_back_to_the_earlier_commit_from_the_project_page(
    page: Page,
    make_stack,
    make_project,
    owner_token,
    git_source: Path,
    redis_url: str,
    tmp_path: Path,
    request,
) -> None:
    # Given a non-staff user with two projects on the real stack, one of them never published
    user, token = owner_token
    assert not user.is_staff
    with_password(user)
    store = f"file://{tmp_path / 'store'}"
    site = make_project(store, slug="docs-site", name="Docs site")
    make_project(store, slug="blog", name="Blog")
    stack = make_stack(redis_url)
    api = stack.serve(token)
    commit_a = git(git_source, "rev-parse", "HEAD")

    # When they log in through the browsable API's login page, sent on to their projects
    page.goto(f"{stack.base_url}/api-auth/login/?next=/projects/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click('form [type="submit"]')
    expect(page).to_have_url(f"{stack.base_url}/projects/")
    expect(page.locator(".pp-card")).to_have_count(2)

    # And press Publish on Docs site: they are taken to the new publishing, which publishes commit A
    page.click(f'.pp-card[data-project="{site.pk}"] button:has-text("Publish")')
    first = stack.wait_for(api, opened_publishing(page))
    assert (first["status"], first["commit_sha"]) == ("published", commit_a), first

    # When the source moves on (commit B) and they publish again from the project's page
    (git_source / "site" / "index.html").write_text("<h1>{{ title }}, second edition</h1>\n")
    git(git_source, "commit", "-q", "-am", "Second edition of the home page")
    commit_b = git(git_source, "rev-parse", "HEAD")
    page.goto(f"{stack.base_url}/projects/")
    page.click(f'.pp-card[data-project="{site.pk}"] .pp-name')
    expect(page.locator("h1")).to_have_text("Docs site")
    page.click("#publish-button")
    second = stack.wait_for(api, opened_publishing(page))
    assert (second["status"], second["commit_sha"]) == ("published", commit_b), second
    assert second["artifact_sha256"] != first["artifact_sha256"]

    # Then the projects page shows B, published, as Docs site's last publishing
    page.goto(f"{stack.base_url}/projects/")
    card = page.locator(f'.pp-card[data-project="{site.pk}"]')
    expect(card.locator(".pp-badge")).to_have_text("published")
    expect(card).to_contain_text(commit_b[:7])
    expect(card).to_contain_text("Second edition of the home page")
    expect(card.locator(f'a[href="/publishings/{second["id"]}/"]').first).to_be_visible()
    expect(page.locator('.pp-card:has-text("Blog")')).to_contain_text("Not published yet")
    page.screenshot(path=readme_screenshot(request, "page-projects"))

    # When, on the project's page, they publish commit A again from its row (the rollback)
    page.click(f'.pp-card[data-project="{site.pk}"] .pp-name')
    expect(history_row(page, second["id"])).to_contain_text("Live")
    expect(history_row(page, second["id"]).locator("button")).to_have_count(0)
    history_row(page, first["id"]).locator('button:has-text("Publish this commit again")').click()
    rollback = stack.wait_for(api, opened_publishing(page))

    # Then it is published from A, with A's artifact, byte for byte the same checksum
    assert (rollback["status"], rollback["requested_commit"], rollback["commit_sha"]) == (
        "published",
        commit_a,
        commit_a,
    ), rollback
    assert rollback["artifact_sha256"] == first["artifact_sha256"]
    stored = {str(pk): sha for pk, sha in Publishing.objects.values_list("pk", "artifact_sha256")}
    assert stored[rollback["id"]] == stored[first["id"]] != stored[second["id"]]

    # And the project's page shows it live, with the same artifact as the first publishing
    page.goto(f"{stack.base_url}/projects/{site.pk}/")
    live = history_row(page, rollback["id"])
    expect(live).to_have_class("pp-is-live")
    expect(page.locator("#history tbody tr").first).to_have_attribute("data-publishing", rollback["id"])
    live_sha = live.locator(".pp-artifact").get_attribute("data-sha256")
    assert live_sha == history_row(page, first["id"]).locator(".pp-artifact").get_attribute("data-sha256")
    assert live_sha == first["artifact_sha256"]
    expect(page.locator("#live")).to_contain_text(first["artifact_sha256"][:12])
    # B is no longer live, and may now be published again
    expect(history_row(page, second["id"]).locator("button")).to_have_text("Publish this commit again")
    page.mouse.move(0, 0)
    page.screenshot(path=readme_screenshot(request, "page-project"))
    page.screenshot(path=artifact(request, "page-project-full"), full_page=True)
