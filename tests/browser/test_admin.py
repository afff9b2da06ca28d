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


def assert_not_clipped(cell: Locator, text: str) -> None:
    """`cell` shows all of `text`: its words (wrapped or not) and no content beyond its box."""
    expect(cell).to_have_count(1)
    assert cell.inner_text().replace("\n", "") == text
    width = cell.evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert width[0] <= width[1], f"{text} is clipped: {width[0]} px of content in {width[1]} px"
    box, table = cell.bounding_box(), cell.page.locator(".results").bounding_box()
    assert box is not None
    assert table is not None
    assert box["x"] + box["width"] <= table["x"] + table["width"], "the cell is beyond the visible table"


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
    page.mouse.move(0, 0)
    page.evaluate("window.scrollTo(0, 0)")
    expect(page.locator("#result_list tbody tr")).to_have_count(4)
    expect(row(page, running)).to_contain_text("Marketing site")
    expect(row(page, running)).to_contain_text(re.compile("building", re.IGNORECASE))
    # And at 1400 px with the sidebar open nothing is clipped: the whole error code shows in its cell
    expect(page.locator("#nav-sidebar")).to_be_visible()
    assert_not_clipped(page.locator("#result_list td.field-error").filter(has_text="BUILD"), "BUILD_FAILED")
    results = page.locator(".results").evaluate("el => [el.scrollWidth, el.clientWidth]")
    assert results[0] <= results[1], f"the table is {results[0]} px wide in {results[1]} px: it scrolls"
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

    # When they discard the failed build's dead letter (on real Redis), the page says what it was for
    letter = page.locator("#dead-letter-list tbody tr").filter(has_text="BUILD_FAILED")
    expect(letter).to_have_count(1)
    letter.locator('button[name="discard"]').click()
    expect(page.locator(".messagelist .warning")).to_contain_text("it stays failed")
    expect(page.locator("#dead-letters")).to_contain_text("None.")
    expect(cell(page.locator("#queue"), "dead-lettered")).to_have_text("0")

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


def field(page: Page, name: str) -> Locator:
    """The shown value of one read-only field of the change page."""
    return page.locator(f".field-{name} .readonly")


def test_the_admin_keeps_up_without_reloading(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given staff, and a project whose build runs until it is cancelled, on a stack with no worker yet
    with_password(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    beacon = BuildBeacon()
    store = f"file://{tmp_path / 'store'}"
    project = make_project(store, slug="slow", build_args=f"--sleep 600 {beacon.args}")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)
    page.goto(f"{stack.base_url}{CHANGELIST}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click('#login-form [type="submit"]')
    expect(page).to_have_url(f"{stack.base_url}{CHANGELIST}")

    # When they turn the changelist live (a marker on the window shows whether the page reloads)
    page.check("#live-toggle")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#live-state")).to_contain_text(re.compile(r"refreshed at \d\d:\d\d:\d\d"))

    # Then a publishing initiated meanwhile shows up, queued, in place
    publishing = stack.initiate(api, project.pk).json()["id"]
    expect(row(page, publishing)).to_contain_text("queued")

    # And its change page, opened now, says queued, no attempts, not started
    detail = page.context.new_page()
    detail.goto(f"{stack.base_url}{CHANGELIST}{publishing}/change/")
    detail.evaluate("window.notReloaded = true")
    expect(detail.locator("#content > h2")).to_contain_text("(queued)")
    expect(field(detail, "attempts")).to_have_text("0")
    expect(field(detail, "started_at")).to_have_text("-")

    # When a worker starts and the build runs
    stack.start_worker(threads=1)
    build_pid = beacon.wait()

    # Then the whole change page follows, heading, attempts, timing, the attempts inline, without a reload
    expect(detail.locator("#content > h2")).to_contain_text("(building)", timeout=30_000)
    expect(detail.locator(".breadcrumbs")).to_contain_text("(building)")
    expect(field(detail, "attempts")).to_have_text("1")
    expect(field(detail, "started_at")).to_have_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"))
    expect(detail.locator("#attempt_history-group tbody tr.has_original")).to_have_count(1)
    expect(detail.locator("[data-publishing-status]")).to_have_text("building")
    assert detail.evaluate("window.notReloaded") is True
    detail.screenshot(path=artifact(request, "detail-building"), full_page=True)
    # And so does the live changelist, which pauses while a row is ticked rather than lose the tick
    expect(row(page, publishing)).to_contain_text("building")
    assert page.evaluate("window.notReloaded") is True
    page.check(f'input[name="_selected_action"][value="{publishing}"]')
    expect(page.locator("#live-state")).to_contain_text("paused while rows are selected")
    expect(page.locator(f'input[name="_selected_action"][value="{publishing}"]')).to_be_checked()
    expect(page.locator(".action-counter")).to_contain_text("1 of 1 selected")

    # When they cancel it from its page, the build goes
    detail.click("#publishing-cancel")
    expect(detail.locator("#content > h2")).to_contain_text("(cancelled)")
    wait_while(lambda: process_alive(build_pid), 15, "the build survived its cancellation")

    # And the changelist remembers that it is live (localStorage) when opened again
    page.reload()
    expect(page.locator("#live-toggle")).to_be_checked()
    expect(row(page, publishing)).to_contain_text("cancelled")
