"""Trust between tenants, with real processes: what a job writes, and which settings it runs.

Each test is an attack that worked before: two tenants' artifacts in one store folder, a project
changed under a queued publishing, a file:// target in a folder only the worker could write.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from publishing.models import Project
from tests.factories import ProjectFactory, UserFactory
from tests.fakes import git_repository
from tests.integration.conftest import BUILD_SCRIPT

pytestmark = pytest.mark.integration


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar.getmembers()
            if member.isfile()
        }


def test_two_tenants_projects_of_one_slug_never_share_a_store_folder(
    redis_url, make_stack, owner_token, git_source: Path, tmp_path: Path
) -> None:
    # Given alice and bob, each with a project called "site", publishing to one store
    store = tmp_path / "store"
    alice, alice_token = owner_token
    bob = UserFactory.create(username="bob")
    bob_token = Token.objects.create(user=bob).key
    projects = {
        user.pk: ProjectFactory.create(
            owner=user,
            slug="site",
            repository_url=str(git_source),
            build_command="python3 build.py",
            artifact_path="dist",
            target_url=f"file://{store}",
        )
        for user in (alice, bob)
    }
    stack = make_stack(redis_url)
    api = {alice.pk: stack.serve(alice_token), bob.pk: stack.api(bob_token)}

    # When both publish
    done = {
        owner: stack.wait_for(session, stack.initiate(session, projects[owner].pk).json()["id"])
        for owner, session in api.items()
    }

    # Then each artifact and manifest lies in its owner's folder, naming its project and owner
    for owner, publishing in done.items():
        assert publishing["status"] == "published", publishing
        folder = store / str(owner) / "site"
        assert sorted(p.name for p in folder.iterdir()) == [
            f"{publishing['id']}.json",
            f"{publishing['id']}.tar.gz",
        ]
        manifest = json.loads((folder / f"{publishing['id']}.json").read_text())
        assert (manifest["owner_id"], manifest["project_id"]) == (str(owner), str(projects[owner].pk))
    assert sorted(p.name for p in store.iterdir()) == sorted([str(alice.pk), str(bob.pk)])


def test_a_queued_publishing_runs_the_settings_it_was_initiated_with(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a publishing queued while no worker runs
    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    project = make_project(f"file://{store}")
    _, token = owner_token
    stack = make_stack(redis_url)
    api = stack.serve(token, worker=False)
    publishing = stack.initiate(api, project.pk).json()
    assert publishing["status"] == "queued", publishing

    # When its owner points the project at other code, another build and another store
    other = git_repository(
        tmp_path / "other", {"site/index.html": "<h1>other code</h1>\n", "build.py": BUILD_SCRIPT}
    )
    changed = api.patch(
        f"{stack.base_url}/api/v1/projects/{project.pk}/",
        json={
            "repository_url": str(other),
            "build_command": "python3 build.py --sleep 0",
            "target_url": f"file://{elsewhere}",
        },
        timeout=10,
    )
    assert changed.status_code == 200, changed.text
    # And a worker then runs it
    stack.start_worker()
    done = stack.wait_for(api, publishing["id"])

    # Then it published what was asked for when it was initiated, where it was asked for
    assert done["status"] == "published", done
    archive = store / str(project.owner_id) / project.slug / f"{publishing['id']}.tar.gz"
    assert _members(archive) == {"index.html": b"<h1>Built</h1>\n"}
    assert not elsewhere.exists()
    assert "python3 build.py --sleep 0" not in api.get(done["log_url"]).text


def test_a_file_target_outside_the_store_roots_is_refused_by_the_worker(
    redis_url, make_stack, make_project, owner_token, tmp_path: Path
) -> None:
    # Given a folder only root may write, outside the store roots, and a project whose target
    # names it (saved before the roots were narrowed: the web would refuse it now)
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    project = make_project(f"file://{tmp_path / 'store'}")
    Project.objects.filter(pk=project.pk).update(target_url=f"file://{private}")
    _, token = owner_token
    stack = make_stack(redis_url, PUBLISHING_FILE_STORE_ROOTS=str(tmp_path / "store"))
    api = stack.serve(token)

    # When it is published
    done = stack.wait_for(api, stack.initiate(api, project.pk).json()["id"])

    # Then the worker refuses the target, and wrote nothing there
    assert (done["status"], done["error_code"]) == ("failed", "TARGET_NOT_ALLOWED"), done
    assert list(private.iterdir()) == []
