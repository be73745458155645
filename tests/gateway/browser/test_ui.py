"""The staff UI in real headless Chromium (Debian's), driven by Playwright."""
from __future__ import annotations

import hashlib
import re

from playwright.sync_api import expect

from tests.gateway.browser.support import deliver, login
from tests.helpers import make_mail, wait_for

HTML_MAIL = """From: CERT Example <cert@example.org>\r
To: abuse@csirt.example\r
Subject: Phishing site {marker}\r
Date: Wed, 25 Nov 2026 10:00:00 +0000\r
Message-ID: <{marker}@example.org>\r
MIME-Version: 1.0\r
Content-Type: multipart/mixed; boundary=OUTER\r
\r
--OUTER\r
Content-Type: multipart/alternative; boundary=ALT\r
\r
--ALT\r
Content-Type: text/plain; charset=utf-8\r
\r
Phishing kit at 203.0.113.77, marker {marker}.\r
--ALT\r
Content-Type: text/html; charset=utf-8\r
\r
<html><body><p id="p">Phishing kit at <b>203.0.113.77</b></p>\r
<script>document.title = "pwned";</script>\r
<img src="http://203.0.113.9/track.gif" onerror="document.title='pwned2'">\r
</body></html>\r
--ALT--\r
--OUTER\r
Content-Type: text/plain; name="evidence.txt"\r
Content-Disposition: attachment; filename="evidence.txt"\r
\r
log line 1\r
--OUTER--\r
"""


def test_log_in_see_the_ticket_and_find_it(page, stack, api, marker):
    raw = HTML_MAIL.format(marker=marker).encode()
    record = deliver(stack, api, raw)
    tid = record["ticket_id"]

    login(page, stack)
    # the queue list with counts, and the ticket in the list
    expect(page.get_by_role("complementary").get_by_role("link", name="general")).to_be_visible()
    link = page.get_by_role("link", name=f"Phishing site {marker}")
    expect(link).to_be_visible()
    link.click()

    expect(page).to_have_url(f"{stack.url}/tickets/{tid}")
    expect(page.get_by_role("heading", name=f"#{tid} Phishing site {marker}")).to_be_visible()
    expect(page.locator("pre.body")).to_contain_text(f"Phishing kit at 203.0.113.77, marker {marker}.")
    expect(page.get_by_role("link", name="evidence.txt")).to_be_visible()
    sha = hashlib.sha256(raw).hexdigest()
    expect(page.locator("code.sha").first).to_have_text(sha)

    # the HTML part: sanitised (no script, no handlers), in a sandboxed frame
    page.get_by_text("HTML version").click()
    frame_el = page.locator("iframe.html-body")
    assert frame_el.get_attribute("sandbox") == ""
    srcdoc = frame_el.get_attribute("srcdoc")
    assert "<script" not in srcdoc and "onerror" not in srcdoc and "203.0.113.77" in srcdoc
    expect(page.frame_locator("iframe.html-body").locator("p")).to_have_text("Phishing kit at 203.0.113.77")
    assert "pwned" not in page.title()

    # the original, byte-exact
    with page.expect_download() as dl:
        page.get_by_role("link", name="Download original .eml").click()
    assert open(dl.value.path(), "rb").read() == raw

    # search by a word of the body, then by the IP's network
    for query in (marker, "203.0.113.0/24"):
        box = page.get_by_role("searchbox", name="Search tickets")
        box.fill(query)
        box.press("Enter")
        expect(page.get_by_role("heading", name=re.compile("^Search"))).to_be_visible()
        expect(page.get_by_role("link", name=f"Phishing site {marker}")).to_be_visible()
    # the marker search highlights the hit
    page.goto(f"/search?q={marker}")
    expect(page.locator(".snippet mark")).to_have_text(marker)

    # nothing was fetched from anywhere but Osprey (no CDN, no remote image)
    assert page.outside_requests == []


def test_a_search_syntax_error_is_shown_with_its_position(page, stack):
    login(page, stack)
    page.goto('/search?q=%22unclosed')
    expect(page.get_by_role("alert")).to_contain_text("unclosed quote at position 1")


def test_quarantine_is_visible(page, stack, api):
    blob = b"\x00\x01\x02 garbage that is no mail " + bytes(range(200))
    assert stack.mailgate(blob).returncode == 0
    sha = hashlib.sha256(blob).hexdigest()
    wait_for(lambda: api.get(f"/intake/{sha}").status_code == 200 and
             api.get(f"/intake/{sha}").json()["intakes"][0]["status"] == "quarantined", what="quarantine")
    login(page, stack)
    page.get_by_role("link", name="Quarantine").click()
    row = page.locator(f'a[href="/intake/{sha}"]')
    expect(row).to_be_visible()
    row.click()
    expect(page.get_by_text("not an RFC 5322 message")).to_be_visible()


def test_wrong_password_is_refused(page, stack):
    page.goto("/login")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    page.goto("/")
    expect(page).to_have_url(re.compile("/login"))


def test_logout_ends_the_session(page, stack):
    login(page, stack)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile("/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile("/login"))


def test_an_admin_processes_a_quarantined_mail_again(page, stack, api, marker):
    queue = f"ui-{marker}"
    raw = make_mail(f"Waiting {marker}", f"for queue {queue}")
    assert stack.mailgate(raw, "--queue", queue).returncode == 0
    sha = hashlib.sha256(raw).hexdigest()
    wait_for(lambda: api.get(f"/intake/{sha}").status_code == 200 and
             api.get(f"/intake/{sha}").json()["intakes"][0]["status"] == "quarantined", what="quarantine")
    login(page, stack)
    page.goto(f"/intake/{sha}")
    expect(page.get_by_text(f"no queue named '{queue}'")).to_be_visible()
    assert stack.cli("queue", "add", queue).returncode == 0
    page.get_by_role("button", name="Process again").click()
    expect(page.locator(".status-delivered")).to_be_visible()
    page.get_by_role("link", name=re.compile(r"^#\d+$")).click()
    expect(page.get_by_role("heading", name=re.compile(rf"^#\d+ Waiting {marker}$"))).to_be_visible()


def test_a_strangers_followup_shows_the_link_on_both_tickets(page, stack, api, marker):
    first = make_mail(f"Linked {marker}", "from the reporter")
    record = deliver(stack, api, first)
    tid = record["ticket_id"]
    other = deliver(stack, api, make_mail(f"Re: [Osprey #{tid}] Linked {marker}", "hi",
                                          sender="stranger@elsewhere.example"))
    login(page, stack)
    page.goto(f"/tickets/{tid}")
    expect(page.get_by_role("link", name=f"#{other['ticket_id']} Re: [Osprey #{tid}] Linked {marker}")).to_be_visible()
    page.goto(f"/tickets/{other['ticket_id']}")
    expect(page.get_by_role("link", name=f"#{tid} Linked {marker}")).to_be_visible()
