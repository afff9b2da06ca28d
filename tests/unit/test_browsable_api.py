"""The browsable API as a UI: a person in a browser (HTML accepted, a session) on /api/v1/...

JSON clients keep their answers; these tests pin what the HTML pages show.
"""

from __future__ import annotations

import html
import re
from urllib.parse import urlencode

import pytest
from django.test import Client

from publishing.models import Project, Publishing
from tests.factories import ProjectFactory, PublishingFactory

pytestmark = pytest.mark.django_db

INITIATE = "/api/v1/publishing/initiate"
PROJECTS = "/api/v1/projects/"
ACTIONS = ["cancel", "retry", "rerun"]


def browser(user) -> Client:
    """A browser's client: a session, and HTML accepted."""
    client = Client(HTTP_ACCEPT="text/html")
    client.force_login(user)
    return client


def page_of(response) -> str:
    assert response["Content-Type"].startswith("text/html"), response.content[:300]
    return str(response.content.decode())


def field_group(page: str, name: str) -> str:
    """The HTML of the form group that holds the field `name` (its input, errors and help)."""
    groups = re.split(r'(?=<div class="form-group)', page)
    found = [group for group in groups if f'name="{name}"' in group]
    assert found, f"no field {name!r} in the page"
    return found[0]


def selected_value(page: str, name: str) -> str | None:
    group = field_group(page, name)
    match = re.search(r'<option value="([^"]*)"\s+selected', group)
    return match.group(1) if match else None


def docs_site(user) -> Project:
    return ProjectFactory.create(owner=user, name="Docs site", slug="docs-site")


# --- 1. an action URL opened in a browser --------------------------------------------------------

CONFIRM = {
    "cancel": ("Cancel publishing", "queued"),
    "retry": ("Retry publishing", "failed"),
    "rerun": ("Re-run publishing", "published"),
}


@pytest.mark.parametrize("action", ACTIONS)
def test_an_action_url_opened_in_a_browser_asks_to_confirm_with_a_labelled_button(user, action) -> None:
    # Given a publishing of the user's project, in a status the action applies to
    label, status = CONFIRM[action]
    publishing = PublishingFactory.create(project=docs_site(user), **{status: True})

    # When its action URL is opened in a browser
    response = browser(user).get(f"/api/v1/publishing/{publishing.pk}/{action}")

    # Then it asks the question, with a button named for the action: no 405 page
    page = page_of(response)
    assert response.status_code == 200
    assert "Method Not Allowed" not in page
    assert html.escape(f"{label} {str(publishing.pk)[:8]} of Docs site?") in page
    assert re.search(rf"<button[^>]*>\s*{label}\s*</button>", page), page
    # And nothing was done by opening it
    publishing.refresh_from_db()
    assert publishing.status == status


def test_initiate_opened_in_a_browser_offers_the_form_with_a_publish_button(user) -> None:
    docs_site(user)

    response = browser(user).get(INITIATE)

    page = page_of(response)
    assert response.status_code == 200
    assert "Method Not Allowed" not in page
    assert 'name="project_id"' in page
    assert re.search(r"<button[^>]*>\s*Publish\s*</button>", page), page


@pytest.mark.parametrize("action", ACTIONS)
def test_a_json_client_still_gets_405_on_an_action_url(api, user, action) -> None:
    publishing = PublishingFactory.create(project=docs_site(user))

    response = api.get(f"/api/v1/publishing/{publishing.pk}/{action}")

    assert response.status_code == 405
    assert response.json() == {"code": "METHOD_NOT_ALLOWED", "detail": 'Method "GET" not allowed.'}
    assert response["Allow"] == "POST, OPTIONS"


def test_a_json_client_still_gets_405_on_initiate(api) -> None:
    response = api.get(INITIATE)
    assert response.status_code == 405
    assert response.json()["code"] == "METHOD_NOT_ALLOWED"


@pytest.mark.parametrize("action", ACTIONS)
def test_the_confirm_page_of_someone_elses_publishing_is_404_and_names_nothing(
    user, other_user, action
) -> None:
    # Given bob's publishing
    theirs = PublishingFactory.create(project=ProjectFactory.create(owner=other_user, name="Secret plans"))

    # When alice opens its action URL in a browser
    response = browser(user).get(f"/api/v1/publishing/{theirs.pk}/{action}")

    # Then she learns nothing of it
    assert response.status_code == 404
    assert "Secret plans" not in response.content.decode()


def test_a_project_name_in_the_confirm_question_is_text_not_markup(user) -> None:
    project = ProjectFactory.create(owner=user, name='<img src=x onerror="alert(1)">', slug="xss")
    publishing = PublishingFactory.create(project=project)

    page = page_of(browser(user).get(f"/api/v1/publishing/{publishing.pk}/cancel"))

    assert "<img src=x" not in page
    assert "&lt;img src=x onerror=" in page


# --- 2. forms keep the input and show the errors beside the fields -----------------------------


def test_a_project_form_with_an_error_keeps_the_input_and_shows_the_error_beside_its_field(user) -> None:
    # When a project is posted from the form with a bad target URL
    response = browser(user).post(
        PROJECTS,
        {
            "name": "Handbook",
            "repository_url": "https://git.example.com/me/handbook.git",
            "target_url": "gopher://nowhere",
            "webhook_secret": "never-shown-back-123",
        },
    )

    # Then the form comes back with what was typed, the error beside the field
    page = page_of(response)
    assert response.status_code == 400
    assert 'value="Handbook"' in field_group(page, "name")
    assert 'value="https://git.example.com/me/handbook.git"' in field_group(page, "repository_url")
    target = field_group(page, "target_url")
    assert "has-error" in target
    assert 'value="gopher://nowhere"' in target
    # And a secret is never written back into the page
    assert "never-shown-back-123" not in page
    assert not Project.objects.filter(name="Handbook").exists()


def test_a_project_patch_form_with_an_error_keeps_the_input_and_shows_the_error(user) -> None:
    project = docs_site(user)

    response = browser(user).patch(
        f"{PROJECTS}{project.pk}/",
        urlencode({"name": "Docs site 2", "slug": "not a slug!"}),
        content_type="application/x-www-form-urlencoded",
    )

    page = page_of(response)
    assert response.status_code == 400
    assert 'value="Docs site 2"' in field_group(page, "name")
    slug = field_group(page, "slug")
    assert "has-error" in slug
    assert 'value="not a slug!"' in slug
    assert re.search(r"<button[^>]*>\s*PATCH\s*</button>", page)


def test_the_project_page_has_an_html_form_for_patch_filled_with_the_project(user) -> None:
    project = docs_site(user)

    page = page_of(browser(user).get(f"{PROJECTS}{project.pk}/"))

    assert 'data-method="PATCH"' in page
    assert 'value="Docs site"' in field_group(page, "name")


def test_an_initiate_form_with_an_error_keeps_the_picked_project_and_shows_the_error(
    user, stub_broker
) -> None:
    docs_site(user)
    picked = ProjectFactory.create(owner=user, name="Zeta site", slug="zeta")

    response = browser(user).post(INITIATE, {"project_id": str(picked.pk), "commit": "x" * 300})

    page = page_of(response)
    assert response.status_code == 400
    assert selected_value(page, "project_id") == str(picked.pk)
    commit = field_group(page, "commit")
    assert "has-error" in commit
    assert "x" * 300 in commit


def test_an_initiate_conflict_keeps_the_picked_project_and_links_the_active_one(user, stub_broker) -> None:
    # Given two projects, the second (not the first in the list) with an active publishing
    docs_site(user)
    picked = ProjectFactory.create(owner=user, name="Zeta site", slug="zeta")
    active = PublishingFactory.create(project=picked, building=True)

    # When it is published again from the form
    response = browser(user).post(INITIATE, {"project_id": str(picked.pk)})

    # Then the answer is 409, the project stays picked, and the active one is a link
    page = page_of(response)
    assert response.status_code == 409
    assert selected_value(page, "project_id") == str(picked.pk)
    assert f'href="http://testserver/api/v1/publishing/{active.pk}"' in page
    # And said again above the form, with the link
    banner = re.search(r'<div class="alert alert-danger answer-error".*?</div>', page, re.S)
    assert banner, page
    assert "already has a publishing in progress" in banner.group(0)
    assert (
        f'href="http://testserver/api/v1/publishing/{active.pk}">Open the active publishing'
        in banner.group(0)
    )
    assert f'href="/publishings/{active.pk}/">its page' in banner.group(0)


def test_after_a_202_the_initiate_form_offers_the_projects_again(user, stub_broker) -> None:
    project = docs_site(user)

    response = browser(user).post(INITIATE, {"project_id": str(project.pk)})

    page = page_of(response)
    assert response.status_code == 202
    assert f'<option value="{project.pk}"' in field_group(page, "project_id")


def test_a_user_with_no_project_is_told_to_create_one_first(user) -> None:
    page = page_of(browser(user).get(INITIATE))

    assert "Create a project first" in page
    assert f'href="{PROJECTS}"' in page


# --- 3. a conflict links the active publishing ---------------------------------------------------


def test_a_conflict_gives_the_active_publishings_url_beside_its_id(api, user, stub_broker) -> None:
    project = docs_site(user)
    active = PublishingFactory.create(project=project, building=True)

    response = api.post(INITIATE, {"project_id": str(project.pk)}, format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["active_id"] == str(active.pk)
    assert body["active_url"] == f"http://testserver/api/v1/publishing/{active.pk}"
    assert api.get(body["active_url"]).json()["id"] == str(active.pk)


def test_the_schema_documents_active_url(client_for) -> None:
    schema = client_for(None).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    error = schema["components"]["schemas"]["Error"]["properties"]
    assert error["active_url"]["format"] == "uri"


# --- 4. each view's own description --------------------------------------------------------------


def test_each_page_describes_its_own_view(user) -> None:
    project = docs_site(user)
    publishing = PublishingFactory.create(project=project, failed=True)
    client = browser(user)
    pages = {
        "list": "/api/v1/publishing/",
        "detail": f"/api/v1/publishing/{publishing.pk}",
        "initiate": INITIATE,
        "cancel": f"/api/v1/publishing/{publishing.pk}/cancel",
        "retry": f"/api/v1/publishing/{publishing.pk}/retry",
        "rerun": f"/api/v1/publishing/{publishing.pk}/rerun",
        "projects": PROJECTS,
        "project": f"{PROJECTS}{project.pk}/",
    }

    descriptions = {}
    for name, url in pages.items():
        page = page_of(client.get(url))
        match = re.search(r'<div class="description">(.*?)</div>', page, re.S)
        assert match, f"{name}: no description"
        descriptions[name] = match.group(1).strip()

    # Then no two pages say the same
    assert len(set(descriptions.values())) == len(pages), descriptions
    assert "Cancel a queued, waiting or running publishing" in descriptions["cancel"]


def test_the_breadcrumbs_name_each_step_by_its_operation(user) -> None:
    publishing = PublishingFactory.create(project=docs_site(user), failed=True)

    page = page_of(browser(user).get(f"/api/v1/publishing/{publishing.pk}/retry"))

    crumbs = re.search(r'<ul class="breadcrumb">(.*?)</ul>', page, re.S)
    assert crumbs
    names = [name.strip() for name in re.findall(r"<a [^>]*>([^<]*)</a>", crumbs.group(1))]
    assert names == ["Publisher API", "List publishings", "Show a publishing", "Retry a publishing"]


def test_the_log_describes_itself_to_an_options_request(api, user) -> None:
    publishing = PublishingFactory.create(project=docs_site(user))

    log = api.options(f"/api/v1/publishing/{publishing.pk}/log").json()
    detail = api.options(f"/api/v1/publishing/{publishing.pk}").json()

    assert "lines of its steps' output" in log["description"]
    assert log["description"] != detail["description"]


# --- 5. the project form starts from the model's defaults ---------------------------------------


def test_the_project_form_starts_with_the_models_defaults(user) -> None:
    page = page_of(browser(user).get(PROJECTS))

    assert 'value="main"' in field_group(page, "ref")
    assert 'value="."' in field_group(page, "artifact_path")


# --- 6. Publisher's name and links ---------------------------------------------------------------


def test_the_pages_are_publishers_with_links_to_the_user_pages_and_the_docs(user) -> None:
    page = page_of(browser(user).get("/api/v1/"))

    assert re.search(r"<title>[^<]*Publisher[^<]*</title>", page)
    assert "Django REST framework" not in page
    assert 'href="/projects/"' in page
    assert 'href="/api/docs/"' in page


def test_json_conflicts_and_validation_errors_keep_their_envelope(api, user) -> None:
    response = api.post(PROJECTS, {"name": "x"}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"code", "detail", "errors"}
    assert Publishing.objects.count() == 0


def test_initiating_someone_elses_project_from_the_form_shows_nothing_of_it(user, other_user) -> None:
    # Given bob's project, whose id alice sends from the form
    docs_site(user)
    theirs = ProjectFactory.create(owner=other_user, name="Secret plans", slug="secret")

    response = browser(user).post(INITIATE, {"project_id": str(theirs.pk)})

    # Then it is not found, and the form that comes back neither offers nor names it
    page = page_of(response)
    assert response.status_code == 404
    assert "Secret plans" not in page
    assert selected_value(page, "project_id") is None


def test_a_page_of_a_view_with_no_operations_still_renders_as_publishers(user) -> None:
    page = page_of(browser(user).get("/api/v1/health"))

    assert "Whether the database and the job broker answer now." in page
    assert re.search(r"<title>Health \u2013 Publisher API</title>", page)


def test_the_login_page_is_publishers(client) -> None:
    page = client.get("/api-auth/login/").content.decode()

    assert re.search(r"<title>[^<]*Publisher[^<]*</title>", page)
    assert "Django REST framework" not in page
