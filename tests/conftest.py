from __future__ import annotations

import fcntl
import pwd
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dramatiq
import pytest
from django.test import Client
from dramatiq.brokers.stub import StubBroker
from rest_framework.test import APIClient

from publishing import broker as publishing_broker
from publishing.pipeline.build_limits import count_tasks
from tests.factories import OPERATOR_PERMISSIONS, ProjectFactory, UserFactory, grant
from tests.support.prerequisites import missing, require_root

# The S3 API on loopback (moto's server) and what the s3:// store's tests share.
pytest_plugins = ["tests.support.s3"]


@pytest.fixture(autouse=True)
def _closed_breaker() -> Iterator[None]:
    publishing_broker.breaker.reset()
    yield
    publishing_broker.breaker.reset()


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = dramatiq.get_broker()
    assert isinstance(broker, StubBroker), "unit tests run on the stub broker"
    broker.flush_all()
    yield broker
    broker.flush_all()


@pytest.fixture
def user(db):
    return UserFactory.create(username="alice")


@pytest.fixture
def other_user(db):
    return UserFactory.create(username="bob")


@pytest.fixture
def admin_client_(db) -> Client:
    """A Django test client logged in as a superuser (staff with every permission)."""
    client = Client()
    client.force_login(UserFactory.create(username="admin", is_staff=True, is_superuser=True))
    return client


@pytest.fixture
def staff(db):
    """Staff with no permission: may open the admin, and holds no right over others' objects."""
    return UserFactory.create(username="root", is_staff=True)


@pytest.fixture
def viewer(db):
    """Staff who may view every project and publishing, and change none."""
    return grant(UserFactory.create(username="viewer", is_staff=True), "view_project", "view_publishing")


@pytest.fixture
def operator(db):
    """Staff with every permission over projects and publishings."""
    return grant(UserFactory.create(username="operator", is_staff=True), *OPERATOR_PERMISSIONS)


@pytest.fixture
def project(user):
    return ProjectFactory.create(owner=user)


@pytest.fixture
def client_for():
    def make(user=None):
        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client

    return make


@pytest.fixture
def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def builds_as_nobody() -> Iterator[None]:
    """A machine-wide lock for a test that runs builds as `nobody`, held until that uid's tasks are gone.

    The kernel's process limit and the build's process monitor count every task of that uid, zombies
    not yet reaped included: another test's builds, or their remains, would shift the allowance.
    """
    nobody = pwd.getpwnam("nobody").pw_uid
    with (Path(tempfile.gettempdir()) / "publisher-tests-nobody.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _wait_for_no_tasks(nobody)
        yield
        _wait_for_no_tasks(nobody)


def _wait_for_no_tasks(uid: int, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while count_tasks(uid) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def sandbox_required() -> None:
    """bwrap, for a test of the build sandbox: a failure in CI (which installs it), else a skip."""
    if shutil.which("bwrap") is None:
        missing(
            "bwrap: the build sandbox needs it (apt-get install bubblewrap)", ci_hint=".ci/run installs it"
        )


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.needs_root(reason)`: root, or a failure in CI (which runs as root), else a skip."""
    marker = item.get_closest_marker("needs_root")
    if marker is not None:
        require_root(*marker.args)
