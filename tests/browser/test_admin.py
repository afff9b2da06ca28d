"""Staff in a real browser: log into the admin, look at the queue, cancel a running publishing.

Takes the README's screenshots, docs/admin-changelist.png and docs/admin-queue-overview.png
(written there with UPDATE_SCREENSHOTS=1, `make screenshots`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from publishing.models import Project, Publishing
from tests.browser.conftest import (
    PASSWORD,
    artifact,
    readme_screenshot,
    require_playwright,
    with_password,
)
from tests.factories import UserFactory
from tests.integration.beacon import BuildBeacon, process_alive
from tests.support.polling import wait_while

require_playwright()
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHANGELIST = "/admin/publishing/publishing/"


def cell(table: Locator, column: str) -> Locator:
    """The cell under the header `column` of a two-row table (headers, values)."""
    headers = [text.strip() for text in table.locator("tr").first.locator("th").all_inner_texts()]
    return table.locator("tr").nth(1).locator("td").nth(headers.index(column))


def row(page: Page, publishing_id: str) -> Locator:
    """The changelist row of one publishing (found by its action checkbox)."""
    return page.locator(f'#result_list tbody tr:has(input[name="_selected_action"][value="{publishing_id}"])')


def test_staff_cancels_a_running_publishing_from_the_admin_changelist(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a superuser, and publishings that published, failed and are building on the real stack
    with_password(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    store = f"file://{tmp_path / 'store'}"
    beacon = BuildBeacon()
    docs = make_project(store, slug="docs-site", name="Docs site")
    blog = make_project(store, slug="blog", name="Blog")
    Project.objects.filter(pk=blog.pk).update(
        build_command="python3 -c \"raise SystemExit('theme not found: themes/nordic')\""
    )
    marketing = make_project(
        store, slug="marketing-site", name="Marketing site", build_args=f"--sleep 600 {beacon.args}"
    )
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)
    stack.start_worker(threads=2)
    for project, outcome in [(docs, "published"), (blog, "failed"), (docs, "published")]:
        publishing = stack.initiate(api, project.pk).json()
        assert stack.wait_for(api, publishing["id"])["status"] == outcome
    running = stack.initiate(api, marketing.pk).json()["id"]
    build_pid = beacon.wait()
    stack.wait_until(api, running, lambda body: body["status"] == "building")

    # When staff log in through the admin's login form
    page.goto(f"{stack.base_url}{CHANGELIST}")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click('#login-form [type="submit"]')

    # Then they land on the publishings, the running one among them
    expect(page).to_have_url(f"{stack.base_url}{CHANGELIST}")
    page.click("#toggle-nav-sidebar")  # room for the table (the admin remembers it)
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    expect(row(page, running)).to_contain_text("Marketing site")
    expect(row(page, running)).to_contain_text(re.compile("building", re.IGNORECASE))
    page.screenshot(path=readme_screenshot(request, "admin-changelist"))

    # And the queue overview says the database and broker are up and one worker is alive
    page.click("text=Queue overview")
    expect(page.locator("h1")).to_have_text("Queue overview")
    expect(page.locator("#dependencies td.ok")).to_have_count(2)
    expect(cell(page.locator("#queue"), "workers alive")).to_have_text("1")
    expect(cell(page.locator("#publishings"), "building")).to_have_text("1")
    expect(page.locator("#failures")).to_contain_text("blog")
    expect(page.locator("#failures")).to_contain_text("BUILD_FAILED")
    page.screenshot(path=readme_screenshot(request, "admin-queue-overview"))

    # When they select the running publishing and run "Cancel selected publishings"
    page.click(".breadcrumbs >> text=Publishings")
    page.check(f'input[name="_selected_action"][value="{running}"]')
    expect(page.locator('select[name="action"] option[value="cancel_selected"]')).to_have_text(
        "Cancel selected publishings"
    )
    page.select_option('select[name="action"]', "cancel_selected")
    page.click('button[name="index"]')

    # Then the changelist says so, and shows it cancelled
    expect(page.locator(".messagelist .success")).to_contain_text(running)
    expect(row(page, running)).to_contain_text(re.compile("cancelled", re.IGNORECASE))
    page.screenshot(path=artifact(request, "after-cancel"), full_page=True)

    # And the database and the API agree, and the others are untouched
    assert Publishing.objects.get(pk=running).status == Publishing.Status.CANCELLED
    assert stack.get(api, running)["status"] == "cancelled"
    wait_while(lambda: process_alive(build_pid), 15, "the build survived its cancellation")
    statuses = sorted(Publishing.objects.values_list("status", flat=True))
    assert statuses == ["cancelled", "failed", "published", "published"]
