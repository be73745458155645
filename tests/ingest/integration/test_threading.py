"""Follow-up detection and automatic mail, through the real mailgate, broker and services."""
from __future__ import annotations

import hashlib

from tests.helpers import make_mail, wait_for, web_session


def deliver(stack, api, raw, *args) -> dict:
    assert stack.mailgate(raw, *args).returncode == 0
    sha = hashlib.sha256(raw).hexdigest()

    def done():
        r = api.get(f"/intake/{sha}")
        if r.status_code == 200:
            rows = [i for i in r.json()["intakes"] if i["status"] != "received"]
            if rows:
                return rows[-1]
        return None
    return wait_for(done, what="delivery")


def test_a_reply_with_a_changed_subject_threads_by_references(stack, api, marker):
    first = deliver(stack, api, make_mail(f"Botnet {marker}", "first", message_id=f"<a-{marker}@example.net>"))
    reply = deliver(stack, api, make_mail(
        f"totally different subject {marker}", "the answer", message_id=f"<b-{marker}@example.org>",
        extra_headers=f"In-Reply-To: <a-{marker}@example.net>\r\nReferences: <a-{marker}@example.net>\r\n"))
    assert reply["ticket_id"] == first["ticket_id"]
    third = deliver(stack, api, make_mail(
        f"Re: again {marker}", "third", extra_headers=f"References: <x@nowhere> <b-{marker}@example.org>\r\n"))
    assert third["ticket_id"] == first["ticket_id"]
    history = api.get(f"/tickets/{first['ticket_id']}").json()["history"]
    assert [h["detail"].get("threaded_by") for h in history if h["action"] == "article_added"] == [
        None, f"references <a-{marker}@example.net>", f"references <b-{marker}@example.org>"]


def test_one_mail_through_two_aliases_is_one_article(stack, api, marker):
    mid = f"<alias-{marker}@example.net>"
    body = f"sent to abuse@ and cert@ {marker}"
    one = make_mail(f"Alias {marker}", body, message_id=mid, extra_headers="Delivered-To: abuse@csirt.example\r\n")
    two = make_mail(f"Alias {marker}", body, message_id=mid, extra_headers="Delivered-To: cert@csirt.example\r\n")
    assert one != two
    a = deliver(stack, api, one)
    b = deliver(stack, api, two)
    assert (b["ticket_id"], b["article_id"]) == (a["ticket_id"], a["article_id"])
    assert len(api.get(f"/tickets/{a['ticket_id']}/articles").json()) == 1
    history = api.get(f"/tickets/{a['ticket_id']}").json()["history"]
    assert "duplicate_delivery" in [h["action"] for h in history]


def test_other_teams_ticket_numbers_thread_per_sender_domain(stack, api, marker):
    n = int(hashlib.sha256(marker.encode()).hexdigest()[:6], 16)
    first = deliver(stack, api, make_mail(f"[CERT-X #{n}] Scanning {marker}", "from their RT",
                                          sender="CERT X <cert@certx.example>"))
    ticket = api.get(f"/tickets/{first['ticket_id']}").json()
    assert ticket["external_refs"] == [{"system": "rt:cert-x", "ref": str(n), "sender_domain": "certx.example"}]
    later = deliver(stack, api, make_mail(f"Update [CERT-X #{n}]", "status update, no references",
                                          sender="Other Analyst <other@certx.example>"))
    assert later["ticket_id"] == first["ticket_id"]
    # the same number from another domain is another team's ticket
    stranger = deliver(stack, api, make_mail(f"[CERT-X #{n}] unrelated", "x", sender="a@elsewhere.example"))
    assert stranger["ticket_id"] != first["ticket_id"]
    otrs = deliver(stack, api, make_mail(f"[Ticket#2026{n:08d}] Phish {marker}", "from Znuny",
                                         sender="noc@isp.example"))
    again = deliver(stack, api, make_mail(f"RE: [Ticket#2026{n:08d}] Phish", "their follow-up",
                                          sender="noc@isp.example"))
    assert again["ticket_id"] == otrs["ticket_id"]


def test_automatic_mail_is_recorded_and_a_bounce_joins_the_bounced_mails_ticket(stack, api, marker):
    original = deliver(stack, api, make_mail(f"Notice {marker}", "to a network owner",
                                             message_id=f"<notice-{marker}@csirt.example>"))
    vacation = deliver(stack, api, make_mail(f"Out of office {marker}", "away",
                                             extra_headers="Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\n"))
    (article,) = api.get(f"/tickets/{vacation['ticket_id']}/articles").json()
    assert article["auto"] == {"automatic": True, "reasons": ["Auto-Submitted: auto-replied", "Precedence: bulk"],
                               "bounce": False, "bounce_of": None}

    dsn = (f"From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\nTo: abuse@csirt.example\r\n"
           f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{marker}@mx.example>\r\n"
           f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
           f"Content-Type: multipart/report; report-type=delivery-status; boundary=B\r\n\r\n"
           f"--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
           f"--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example\r\n\r\n"
           f"Final-Recipient: rfc822; owner@net.example\r\nAction: failed\r\nStatus: 5.1.1\r\n\r\n"
           f"--B\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: abuse@csirt.example\r\n"
           f"Message-ID: <notice-{marker}@csirt.example>\r\nSubject: Notice {marker}\r\n\r\n--B--\r\n").encode()
    bounce = deliver(stack, api, dsn)
    assert bounce["ticket_id"] == original["ticket_id"]
    articles = api.get(f"/tickets/{original['ticket_id']}/articles").json()
    assert articles[-1]["auto"]["bounce"] is True
    assert articles[-1]["auto"]["bounce_of"] == f"<notice-{marker}@csirt.example>"
    assert "mailer daemon" in articles[-1]["auto"]["reasons"]
    assert articles[-1]["auto"]["failed_recipients"] == [{"address": "owner@net.example", "status": "5.1.1",
                                                          "diagnostic": ""}]
    failed = api.get(f"/tickets/{original['ticket_id']}").json()["failed_recipients"]
    assert [(f["address"], f["status"], f["article_id"]) for f in failed] == [
        ("owner@net.example", "5.1.1", articles[-1]["id"])]
    with web_session(stack) as web:
        page = web.get(f"/tickets/{original['ticket_id']}").text
    assert 'id="failed-h"' in page and "owner@net.example" in page and "mail to owner@net.example bounced" in page


def test_a_stranger_naming_a_ticket_gets_a_new_linked_ticket(stack, api, marker):
    first = deliver(stack, api, make_mail(f"Incident {marker}", "from the reporter",
                                          sender="Reporter <reporter@example.net>"))
    tid = first["ticket_id"]
    # a known correspondent (the requestor) joins, a stranger does not
    known = deliver(stack, api, make_mail(f"Re: [Osprey #{tid}] Incident", "more", sender="reporter@example.net"))
    assert known["ticket_id"] == tid
    stranger = deliver(stack, api, make_mail(f"Re: [Osprey #{tid}] Incident", "I want in",
                                             sender="Mallory <mallory@evil.example>"))
    assert stranger["ticket_id"] != tid
    new = api.get(f"/tickets/{stranger['ticket_id']}").json()
    old = api.get(f"/tickets/{tid}").json()
    assert new["links"] == [{"type": "refers-to", "direction": "out", "ticket_id": tid, "subject": old["subject"],
                             "state": old["state"], "label": "refers-to"}]
    assert old["links"] == [{"type": "refers-to", "direction": "in", "ticket_id": new["id"], "subject": new["subject"],
                             "state": new["state"], "label": "referred-to-by"}]
    assert "followup_from_unknown_sender" in [h["action"] for h in old["history"]]
    assert len(api.get(f"/tickets/{tid}/articles").json()) == 2


def test_a_queue_can_accept_followups_from_anyone(stack, api, marker):
    queue = f"open-{marker}"
    assert stack.cli("queue", "add", queue, "--followup-policy", "accept").returncode == 0
    first = deliver(stack, api, make_mail(f"Open {marker}", "x"), "--queue", queue)
    other = deliver(stack, api, make_mail(f"[Osprey #{first['ticket_id']}] note", "y", sender="x@else.example"),
                    "--queue", queue)
    assert other["ticket_id"] == first["ticket_id"]
