"""A publishing's owner (not staff) in a real browser: watch it run, cancel it, retry it, from its page.

Takes the README's screenshots docs/page-publishing-running.png and docs/page-publishing-failed.png
(written there with UPDATE_SCREENSHOTS=1, `make screenshots`).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from publishing.models import Project, Publishing
from tests.browser.conftest import PASSWORD, artifact, readme_screenshot, require_playwright, with_password
from tests.integration.beacon import BuildBeacon, process_alive
from tests.support.polling import wait_until, wait_while

require_playwright()
from playwright.sync_api import Locator, Page, expect  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.integration]

# Long enough to be seen building (the page polls every 2 s), short enough to wait for its end.
SLOW_BUILD_SECONDS = 15
# A line every 0.1 s for a minute: more than a step's log box shows at once.
CHATTY_BUILD = (
    "python3 -c \"import time; [print('line', i, flush=True) or time.sleep(0.1) for i in range(600)]\""
)
FAILING_BUILD = (
    "python3 -c \"print('rendering 12 pages'); raise SystemExit('theme not found: themes/nordic')\""
)


def open_page(page: Page, base_url: str, user, publishing_id: str) -> None:
    """Log in through the login page on the way to the publishing's page, as a person would."""
    path = f"/publishings/{publishing_id}/"
    page.goto(f"{base_url}/api-auth/login/?next={path}")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click('form [type="submit"]')
    expect(page).to_have_url(f"{base_url}{path}")


def step(page: Page, attempt: int, name: str) -> Locator:
    return page.locator(f"#a{attempt}-{name}")


def test_the_owner_watches_a_slow_build_go_from_queued_to_published_without_reloading(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a non-staff owner, a slow build, and a stack whose worker is not started yet
    user, token = owner_token
    with_password(user)
    assert not user.is_staff
    beacon = BuildBeacon()
    project = make_project(
        f"file://{tmp_path / 'store'}",
        name="Docs site",
        build_args=f"--sleep {SLOW_BUILD_SECONDS} {beacon.args}",
    )
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)
    publishing = stack.initiate(api, project.pk).json()["id"]

    # When the owner opens its page
    open_page(page, stack.base_url, user, publishing)
    page.evaluate("window.notReloaded = true")

    # Then it says it waits for a worker, its steps all to come
    headline = page.locator("#pub-headline")
    expect(headline).to_contain_text("Waiting for a free worker")
    expect(step(page, 1, "checkout")).to_have_class(re.compile(r"\bstep-pending\b"))
    expect(page.locator("#pub-summary")).to_contain_text("queued by integration via api")
    expect(page.locator(".run-actions button")).to_have_text(["Cancel"])

    # When a worker starts and takes it
    stack.start_worker()
    beacon.wait(timeout=60)

    # Then, without a reload, the header says it builds and where; checkout done, build running, its output
    expect(headline).to_contain_text(re.compile(r"Building on \S+ for \d+ s"))
    expect(step(page, 1, "checkout")).to_have_class(re.compile(r"\bstep-done\b"))
    expect(step(page, 1, "build")).to_have_class(re.compile(r"\bstep-running\b"))
    expect(step(page, 1, "build").locator(".log")).to_contain_text("build started")
    expect(step(page, 1, "build").locator(".log")).to_contain_text("build: python3 build.py")
    page.mouse.move(0, 0)
    page.screenshot(path=readme_screenshot(request, "page-publishing-running"))
    # (The picture is of the build running: it still was after it was taken.)
    assert "Building on" in headline.inner_text()

    # And once the build ends, it says published, every step done, and stops following
    expect(headline).to_contain_text("Published", timeout=90_000)
    for name in ("checkout", "build", "package", "submit"):
        expect(step(page, 1, name)).to_have_class(re.compile(r"\bstep-done\b"))
    expect(page.locator("#pub")).to_have_attribute("data-complete", "true")
    expect(page.locator(".run-actions button")).to_have_text(["Re-run"])
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=artifact(request, "published"), full_page=True)
    assert Publishing.objects.get(pk=publishing).status == "published"


def test_the_owner_cancels_a_running_build_with_the_button(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a build that would run for ten minutes, running
    user, token = owner_token
    with_password(user)
    beacon = BuildBeacon()
    project = make_project(f"file://{tmp_path / 'store'}", build_args=f"--sleep 600 {beacon.args}")
    stack = make_stack(redis_url)
    api = stack.serve(token)
    publishing = stack.initiate(api, project.pk).json()["id"]
    build_pid = beacon.wait(timeout=60)
    open_page(page, stack.base_url, user, publishing)
    expect(page.locator("#pub-headline")).to_contain_text("Building on")

    # When the owner presses Cancel
    page.click('.run-actions button:has-text("Cancel")')

    # Then the page says who cancelled it and during which step, the build step shows it, the log says it
    expect(page.locator(".message.success")).to_contain_text("Cancel requested: now cancelled.")
    expect(page.locator("#pub-headline")).to_contain_text("Cancelled by integration during build")
    expect(step(page, 1, "build")).to_have_class(re.compile(r"\bstep-cancelled\b"))
    expect(step(page, 1, "build").locator(".log")).to_contain_text("cancelled by integration")
    expect(page.locator(".run-actions button")).to_have_text(["Retry", "Re-run"])
    page.screenshot(path=artifact(request, "cancelled"), full_page=True)

    # And the build itself stops
    wait_while(lambda: process_alive(build_pid), 30, "the build survived its cancellation")
    assert Publishing.objects.get(pk=publishing).status == "cancelled"


def test_the_owner_reads_why_a_build_failed_and_retries_it_with_the_button(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a publishing whose build failed
    user, token = owner_token
    with_password(user)
    project = make_project(f"file://{tmp_path / 'store'}", name="Blog")
    Project.objects.filter(pk=project.pk).update(build_command=FAILING_BUILD)
    stack = make_stack(redis_url)
    api = stack.serve(token)
    publishing = stack.initiate(api, project.pk).json()["id"]
    assert stack.wait_for(api, publishing)["status"] == "failed"

    # When the owner opens its page
    open_page(page, stack.base_url, user, publishing)

    # Then the header says where and why; the build step is open, its error beside it, its last lines marked
    expect(page.locator("#pub-headline")).to_contain_text("Failed at build: BUILD_FAILED")
    build = step(page, 1, "build")
    expect(build).to_have_class(re.compile(r"\bstep-failed\b"))
    expect(build).to_have_attribute("open", "")
    expect(build.locator(".step-error")).to_contain_text("BUILD_FAILED")
    expect(build.locator(".ln-tail").last).to_contain_text("theme not found: themes/nordic")
    expect(step(page, 1, "package")).to_have_class(re.compile(r"\bstep-skipped\b"))
    page.mouse.move(0, 0)
    page.screenshot(path=readme_screenshot(request, "page-publishing-failed"))

    # When they press Retry
    page.click('.run-actions button:has-text("Retry")')

    # Then it runs again, followed live, and its first attempt is kept among the earlier ones
    # (A free worker may have taken it already by the time the message reads its status.)
    retried = re.compile(r"Retry requested: now (queued|building)\.")
    expect(page.locator(".message.success")).to_have_text(retried)
    expect(page.locator("#pub-headline")).to_contain_text("Failed at build after 2 attempts", timeout=60_000)
    expect(page.locator("#attempt-1 > summary")).to_contain_text("Attempt 1")
    expect(page.locator("#attempt-1 > summary")).to_contain_text("BUILD_FAILED")
    page.screenshot(path=artifact(request, "retried"), full_page=True)
    assert Publishing.objects.get(pk=publishing).attempts == 2


def test_a_reader_scrolled_up_in_a_log_is_left_there_and_one_at_its_end_follows_it(
    page: Page, make_stack, make_project, owner_token, redis_url: str, tmp_path: Path, request
) -> None:
    # Given a build that prints a line every 0.1 s for a minute, followed on its page
    user, token = owner_token
    with_password(user)
    project = make_project(f"file://{tmp_path / 'store'}")
    Project.objects.filter(pk=project.pk).update(build_command=CHATTY_BUILD)
    stack = make_stack(redis_url)
    api = stack.serve(token)
    publishing = stack.initiate(api, project.pk).json()["id"]
    open_page(page, stack.base_url, user, publishing)
    log = step(page, 1, "build").locator(".log")
    expect(log.locator(".ln").nth(60)).to_be_attached()

    def lines() -> int:
        return log.locator(".ln").count()

    # When the reader, at the end, waits for more lines
    seen = lines()
    wait_until(lambda: lines() > seen + 10, 30, "no new lines came")

    # Then the log stays at its end
    assert log.evaluate("el => el.scrollHeight - el.scrollTop - el.clientHeight") < 24

    # When they scroll up to its top and more lines come
    log.evaluate("el => { el.scrollTop = 0; }")
    seen = lines()
    wait_until(lambda: lines() > seen + 10, 30, "no new lines came")

    # Then they are left at the top
    assert log.evaluate("el => el.scrollTop") == 0

    # And still when the page draws its steps again (after an event: the owner cancels through the API)
    assert api.post(f"{stack.base_url}/api/v1/publishing/{publishing}/cancel", timeout=30).status_code == 200
    expect(page.locator("#pub-headline")).to_contain_text("Cancelled by integration during build")
    assert log.evaluate("el => el.scrollTop") == 0
    assert lines() > seen
    page.screenshot(path=artifact(request, "scrolled-up"))
