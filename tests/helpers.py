"""Helpers for integration tests (import from tests.helpers)."""
from __future__ import annotations

import time
import uuid

def wait_for(predicate, timeout: float = 30, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def make_mail(subject: str, body: str, sender: str = "Reporter <reporter@example.net>",
              message_id: str | None = None, extra_headers: str = "") -> bytes:
    mid = message_id or f"<{uuid.uuid4().hex}@example.net>"
    return (f"From: {sender}\r\nTo: abuse@csirt.example\r\nSubject: {subject}\r\n"
            f"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: {mid}\r\n{extra_headers}"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n").encode()


def csrf_of(page: str) -> str:
    """The CSRF token a page's forms carry."""
    import re
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def web_session(stack, username: str = "admin", password: str | None = None):
    """An httpx client logged in to the web UI (a context manager)."""
    import contextlib

    import httpx

    @contextlib.contextmanager
    def session():
        with httpx.Client(base_url=stack.url, follow_redirects=True, timeout=30) as web:
            web.post("/login", data={"username": username, "password": password or stack.admin_password,
                                     "csrf_token": csrf_of(web.get("/login").text)})
            yield web
    return session()
