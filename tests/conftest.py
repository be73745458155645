"""Fixtures shared by every test folder.

``stack``: the whole real system (RabbitMQ node, five services, gateway), started once
per test session on free loopback ports under a temp folder (osprey.testing.Stack).
"""
from __future__ import annotations

import uuid

import httpx
import pytest

from osprey.testing import Stack

pytest_plugins = ["tests.storage"]   # postgres, databases, db_url: storage tests on both databases


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("stack"))
    try:
        s.start()
    except Exception:
        s.stop()
        raise
    yield s
    try:
        # like IntelMQ's BotTestCase: a run ends with nothing left unprocessed and
        # nothing unexpected logged (quarantine is a WARNING, not an ERROR)
        from tests.helpers import wait_for
        wait_for(lambda: s.intake_backlog() == 0, timeout=60, what="an empty intake queue")
        assert s.log_errors() == []
    finally:
        s.stop()


@pytest.fixture(scope="session")
def token(stack):
    r = httpx.post(f"{stack.url}/api/v1/tokens", json={"username": "admin", "password": stack.admin_password},
                   timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture
def api(stack, token):
    with httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as client:
        yield client


@pytest.fixture
def marker():
    """A word no other test uses, to find this test's mail among everything else."""
    return "m" + uuid.uuid4().hex[:12]
