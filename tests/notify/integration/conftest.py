"""notify's integration tests run against a whole real Osprey of their own (the
session stack has no SMTP relay configured), delivering to a real SMTP server
(aiosmtpd) on a free loopback port. Short poll, retry and lease times keep it quick."""
from __future__ import annotations

import httpx
import pytest

from osprey.testing import Stack
from tests.helpers import wait_for

from ..smtpd import SmtpServer

DOMAIN = "csirt.example"


@pytest.fixture(scope="package")
def smtp():
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="package")
def mail_stack(tmp_path_factory, smtp):
    env = {"OSPREY_SMTP_HOST": "127.0.0.1", "OSPREY_SMTP_PORT": str(smtp.port), "OSPREY_MAIL_DOMAIN": DOMAIN,
           "OSPREY_NOTIFY_POLL_SECONDS": "0.2", "OSPREY_NOTIFY_RETRY_SECONDS": "1", "OSPREY_SMTP_TIMEOUT": "3",
           "OSPREY_NOTIFY_LEASE_SECONDS": "8", "OSPREY_AUTOREPLY_DAILY_LIMIT": "2"}
    s = Stack(tmp_path_factory.mktemp("mailstack"), env=env)
    try:
        s.start()
    except Exception:
        s.stop()
        raise
    yield s
    try:
        wait_for(lambda: s.intake_backlog() == 0, timeout=60, what="an empty intake queue")
        assert s.log_errors() == []
    finally:
        s.stop()


@pytest.fixture(scope="package")
def mail_token(mail_stack):
    r = httpx.post(f"{mail_stack.url}/api/v1/tokens", json={"username": "admin",
                                                            "password": mail_stack.admin_password}, timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["token"]


@pytest.fixture
def mapi(mail_stack, mail_token):
    with httpx.Client(base_url=f"{mail_stack.url}/api/v1", headers={"Authorization": f"Bearer {mail_token}"},
                      timeout=60) as client:
        yield client


@pytest.fixture(autouse=True)
def clean_sink(smtp):
    smtp.sink.data_replies.clear()
    smtp.sink.refuse_rcpt.clear()
    smtp.sink.hold_index = None
    yield
