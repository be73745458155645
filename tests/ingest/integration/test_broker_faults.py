"""A killed broker loses nothing it confirmed, and the system recovers by itself.
Its own stack: killing the broker must not disturb the other tests."""
from __future__ import annotations

import hashlib

import httpx
import pytest

from osprey.testing import Stack
from tests.helpers import make_mail, wait_for


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("faults"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def token(stack) -> str:
    r = httpx.post(f"{stack.url}/api/v1/tokens", json={"username": "admin", "password": stack.admin_password},
                   timeout=30)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def delivered(stack, tok, raw) -> dict | None:
    sha = hashlib.sha256(raw).hexdigest()
    try:
        r = httpx.get(f"{stack.url}/api/v1/intake/{sha}", headers={"Authorization": f"Bearer {tok}"}, timeout=30)
    except httpx.HTTPError:
        return None
    if r.status_code == 200 and r.json()["intakes"][0]["status"] == "delivered":
        return r.json()["intakes"][0]
    return None


def test_confirmed_mail_survives_a_broker_crash(own_stack, marker):
    s = own_stack
    tok = token(s)
    # ingest is down, so the confirmed mail sits in the broker only
    s.stop_process("ingest")
    raw = make_mail(f"Survivor {marker}", f"kept across a broker crash {marker}")
    assert s.mailgate(raw).returncode == 0

    s.crash_broker()                                  # SIGKILL: no clean shutdown
    assert s.mailgate(make_mail("x", "y")).returncode == 75   # down: the MTA must retry

    s.start_broker()                                  # same node, same state folder
    s.start_service("ingest")
    record = wait_for(lambda: delivered(s, tok, raw), timeout=120, what="the mail after the crash")
    assert record["deliveries"] == 1

    # everything reconnected by itself: readiness, new mail, the API
    s.wait_ready(120)
    after = make_mail(f"After {marker}", f"delivered after the crash {marker}")
    assert s.mailgate(after).returncode == 0
    wait_for(lambda: delivered(s, tok, after), timeout=60, what="a new mail after the crash")
    hits = httpx.get(f"{s.url}/api/v1/search", params={"q": marker},
                     headers={"Authorization": f"Bearer {tok}"}, timeout=30).json()["results"]
    assert len(hits) == 2
