from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from rest_framework.test import APIClient

from publishing import broker as publishing_broker
from tests.factories import ProjectFactory, UserFactory


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
def staff(db):
    return UserFactory.create(username="root", is_staff=True)


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
