"""Steps the browser tests share: logging in, delivering mail."""
from __future__ import annotations

import hashlib
import re

from playwright.sync_api import expect

from tests.helpers import wait_for


def login(page, stack, username: str = "admin", password: str | None = None, path: str = "/"):
    page.goto(path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password or stack.admin_password)
    page.get_by_role("button", name="Log in").click()
    if path == "/":
        expect(page.get_by_role("heading", name="At a glance", exact=True)).to_be_visible()


def deliver(stack, api, raw) -> dict:
    assert stack.mailgate(raw).returncode == 0
    sha = hashlib.sha256(raw).hexdigest()
    return wait_for(lambda: (lambda r: r.json()["intakes"][0] if r.status_code == 200 and
                             r.json()["intakes"][0]["status"] == "delivered" else None)(api.get(f"/intake/{sha}")),
                    what="delivery")
