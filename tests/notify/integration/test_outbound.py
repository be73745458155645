"""Outbound mail through the whole real system: a mail comes in through the
mailgate, staff reply and forward through the API, a real SMTP server receives
the mail, the ticket shows it, and the answers thread back."""
from __future__ import annotations

import signal
import time
import uuid

import httpx
import pytest

from services.notify import compose
from tests.helpers import make_mail, wait_for

from .conftest import DOMAIN


def deliver(stack, raw: bytes, *args: str) -> None:
    result = stack.mailgate(raw, *args)
    assert result.returncode == 0, result.stderr


def ticket_of(api, marker: str) -> dict:
    def find():
        hits = api.get("/search", params={"q": marker}).json()["results"]
        return hits[0] if hits else None
    return wait_for(find, timeout=30, what=f"the ticket of {marker}")


def articles(api, ticket_id: int) -> list[dict]:
    return api.get(f"/tickets/{ticket_id}/articles").json()


def outgoing(api, ticket_id: int, message_id: str) -> dict:
    return wait_for(lambda: next((a for a in articles(api, ticket_id) if a["message_id"] == message_id), None),
                    timeout=30, what=f"the outgoing article {message_id}")


def received(smtp, message_id: str, timeout=30):
    def find():
        return [r for r in smtp.sink.received if r.message_id == message_id]
    return wait_for(find, timeout=timeout, what=f"the SMTP server to receive {message_id}")


def new_ticket(stack, api, marker, sender="Reporter <reporter@example.net>", extra_headers=""):
    mid = f"<{uuid.uuid4().hex}@example.net>"
    raw = make_mail(f"Scanning {marker}", f"We saw 203.0.113.9 scanning us. {marker}", sender=sender,
                    message_id=mid, extra_headers=extra_headers)
    deliver(stack, raw)
    return ticket_of(api, marker), raw, mid


def test_reply_goes_out_tagged_and_its_answer_threads_back(mail_stack, mapi, smtp, marker):
    ticket, _raw, original_mid = new_ticket(mail_stack, mapi, marker)
    r = mapi.post(f"/tickets/{ticket['id']}/send", json={"body": f"Thanks, we are on it. {marker}"})
    assert r.status_code == 202, r.text
    sent = r.json()
    assert (sent["state"], sent["recipients"], sent["kind"]) == ("queued", ["reporter@example.net"], "reply")
    [got] = received(smtp, sent["message_id"])
    msg = got.message
    assert str(msg["Subject"]) == f"[Osprey #{ticket['id']}] Re: Scanning {marker}"
    assert (str(msg["From"]), str(msg["To"])) == (f"Osprey general <general@{DOMAIN}>", "reporter@example.net")
    assert (msg["In-Reply-To"], msg["References"]) == (original_mid, original_mid)
    assert msg["X-Osprey-Loop"] is None and msg["Auto-Submitted"] is None   # a person wrote it: no loop mark
    assert got.mail_from == f"general@{DOMAIN}" and got.rcpt_tos == ["reporter@example.net"]

    article = outgoing(mapi, ticket["id"], sent["message_id"])
    assert (article["direction"], article["action"], article["author"], article["raw_sha256"]) == (
        "out", "reply", "admin", sent["raw_sha256"])
    raw = mapi.get(f"/articles/{article['id']}/raw")
    assert raw.content == got.data                       # the article's raw bytes are what the relay got
    outbox = mapi.get(f"/tickets/{ticket['id']}/outbox").json()
    assert [(o["id"], o["state"], o["article_id"]) for o in outbox] == [(sent["id"], "sent", article["id"])]

    # the reporter answers with another subject: In-Reply-To still threads it
    answer = make_mail(f"something else {marker}-answer", "Thanks!", sender="reporter@example.net",
                       extra_headers=f"In-Reply-To: {sent['message_id']}\r\nReferences: {sent['message_id']}\r\n")
    deliver(mail_stack, answer)
    wait_for(lambda: any(f"{marker}-answer" in a["subject"] for a in articles(mapi, ticket["id"])), timeout=30,
             what="the answer on the same ticket")


def test_forward_attaches_the_original_byte_exact_and_the_recipient_is_a_correspondent(mail_stack, mapi, smtp,
                                                                                         marker):
    ticket, original, _mid = new_ticket(mail_stack, mapi, marker)
    r = mapi.post(f"/tickets/{ticket['id']}/send",
                  json={"action": "forward", "to": ["NOC <noc@isp.example>"], "body": "Please have a look.",
                        "remind_after": 60})
    assert r.status_code == 202, r.text
    sent = r.json()
    [got] = received(smtp, sent["message_id"])
    assert compose.extract_attached(got.data) == original
    assert str(got.message["Subject"]) == f"[Osprey #{ticket['id']}] Fwd: Scanning {marker}"
    article = outgoing(mapi, ticket["id"], sent["message_id"])
    assert (article["action"], article["to"]) == ("forward", ["noc@isp.example"])
    t = mapi.get(f"/tickets/{ticket['id']}").json()
    assert [(r["awaiting"], r["status"]) for r in t["reminders"]] == [("noc@isp.example", "open")]

    # the NOC answers (tag in the subject): a known correspondent now, so it joins the ticket
    answer = make_mail(f"Re: [Osprey #{ticket['id']}] {marker}-noc", "Fixed.", sender="noc@isp.example")
    deliver(mail_stack, answer)
    wait_for(lambda: any(f"{marker}-noc" in a["subject"] for a in articles(mapi, ticket["id"])), timeout=30,
             what="the NOC's answer on the same ticket")
    t = wait_for(lambda: (lambda t: t if t["reminders"][0]["status"] != "open" else None)(
        mapi.get(f"/tickets/{ticket['id']}").json()), timeout=30, what="the answer ending the reminder")


def test_inline_forward_quotes_the_original(mail_stack, mapi, smtp, marker):
    ticket, _original, _mid = new_ticket(mail_stack, mapi, marker)
    sent = mapi.post(f"/tickets/{ticket['id']}/send", json={"action": "forward", "to": ["noc@isp.example"],
                                                            "forward_mode": "inline", "body": "FYI"}).json()
    [got] = received(smtp, sent["message_id"])
    body = got.message.get_content()
    assert "---------- Forwarded message ----------" in body and f"scanning us. {marker}" in body
    assert got.message.get_content_type() == "text/plain"


def test_templates_through_the_api(mail_stack, mapi, smtp, marker):
    r = mapi.put("/templates/broken", json={"kind": "reply", "body": "Hello\n{% for ip in ips %}\n{{ ip }"})
    assert r.status_code == 400 and r.json()["detail"].startswith("template 'broken' line 3: syntax error")
    for name, body in ((f"intro-{marker}", "Dear {{ ticket.requestor }},"), (f"sig-{marker}", "-- \nCSIRT")):
        kind = "introduction" if name.startswith("intro") else "signature"
        assert mapi.put(f"/templates/{name}", json={"kind": kind, "body": body, "queue": "general"}).status_code == 200
    r = mapi.put(f"/templates/scan-{marker}", json={
        "kind": "reply", "subject": "Scan from {{ ips | join(', ') }}",
        "body": "we saw {{ ips | join(', ') }}\n\n{{ article.quoted }}"})
    assert r.status_code == 200, r.text
    assert r.json()["kind"] == "reply"
    assert f"scan-{marker}" in [t["name"] for t in mapi.get("/templates", params={"kind": "reply"}).json()]
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)

    preview = mapi.post("/templates/preview", json={"ticket_id": ticket["id"], "template": f"scan-{marker}"}).json()
    assert preview == {"subject": f"[Osprey #{ticket['id']}] Scan from 203.0.113.9",
                       "body": f"Dear reporter@example.net,\n\nwe saw 203.0.113.9\n\n"
                               f"> We saw 203.0.113.9 scanning us. {marker}\n\n-- \nCSIRT\n",
                       "template": f"scan-{marker}", "lang": ""}
    bad = mapi.post("/templates/preview", json={"ticket_id": ticket["id"],
                                                "template": {"body": "ok\n{{ ticket.nope }}"}}).json()
    assert bad == {"error": "undefined: 'dict object' has no attribute 'nope'", "line": 2, "template": "body"}

    r = mapi.post(f"/tickets/{ticket['id']}/send", json={"template": f"scan-{marker}"})
    assert r.status_code == 202, r.text
    [got] = received(smtp, r.json()["message_id"])
    assert got.message.get_content().replace("\r\n", "\n") == preview["body"]
    assert str(got.message["Subject"]) == preview["subject"]

    # a template that fails at send time sends nothing
    mapi.put(f"/templates/bad-{marker}", json={"kind": "reply", "body": "{{ article.nothing_here }}"})
    r = mapi.post(f"/tickets/{ticket['id']}/send", json={"template": f"bad-{marker}"})
    assert r.status_code == 400 and "line 1" in r.json()["detail"] and "nothing was sent" in r.json()["detail"]
    for name in (f"intro-{marker}", f"sig-{marker}"):      # leave the queue as the other tests expect it
        assert mapi.delete(f"/templates/{name}").status_code == 200


def test_idempotency_key_sends_once(mail_stack, mapi, smtp, marker):
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)
    key = {"Idempotency-Key": f"send-{marker}"}
    first = mapi.post(f"/tickets/{ticket['id']}/send", json={"body": "once"}, headers=key)
    again = mapi.post(f"/tickets/{ticket['id']}/send", json={"body": "once"}, headers=key)
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] is True
    received(smtp, first.json()["message_id"])
    time.sleep(1)
    assert smtp.sink.by_message_id()[first.json()["message_id"]] == 1
    assert len(mapi.get(f"/tickets/{ticket['id']}/outbox").json()) == 1


def test_a_4xx_is_retried_without_a_duplicate_and_a_5xx_is_visible(mail_stack, mapi, smtp, marker):
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)
    smtp.sink.data_replies = ["451 4.3.0 greylisted, try again"]
    sent = mapi.post(f"/tickets/{ticket['id']}/send", json={"body": "after a 4xx"}).json()
    received(smtp, sent["message_id"])
    row = wait_for(lambda: next((o for o in mapi.get(f"/tickets/{ticket['id']}/outbox").json()
                                 if o["id"] == sent["id"] and o["state"] == "sent"), None), timeout=30,
                   what="the retried mail sent")
    assert row["attempts"] == 2 and row["last_error"] == "451 4.3.0 greylisted, try again"
    time.sleep(1)
    assert smtp.sink.by_message_id()[sent["message_id"]] == 1

    smtp.sink.refuse_rcpt = {"gone@isp.example": "550 5.1.1 no such user"}
    failed = mapi.post(f"/tickets/{ticket['id']}/send", json={"body": "to nobody", "to": ["gone@isp.example"]}).json()
    row = wait_for(lambda: next((o for o in mapi.get(f"/tickets/{ticket['id']}/outbox").json()
                                 if o["id"] == failed["id"] and o["state"] == "failed"), None), timeout=30,
                   what="the refused mail failed")
    assert row["refused"] == {"gone@isp.example": "550 5.1.1 no such user"}
    assert failed["message_id"] not in [a["message_id"] for a in articles(mapi, ticket["id"])]
    failed_list = mapi.get("/outbox", params={"state": "failed"}).json()
    assert failed["id"] in [o["id"] for o in failed_list]
    # the address was fixed on the other side: an administrator queues it again
    smtp.sink.refuse_rcpt = {}
    r = mapi.post(f"/outbox/{failed['id']}/retry")
    assert r.status_code == 200 and r.json()["state"] == "queued", r.text
    received(smtp, failed["message_id"])
    outgoing(mapi, ticket["id"], failed["message_id"])
    assert mapi.post(f"/outbox/{failed['id']}/retry").status_code == 409


def test_auto_reply_once_never_to_automatic_mail_and_limited_per_address(mail_stack, mapi, smtp, marker):
    r = mapi.put(f"/templates/auto-{marker}", json={
        "kind": "auto-reply", "queue": "autoq", "subject": "Received: {{ ticket.subject }}",
        "body": "We received your report and opened ticket {{ ticket.tag }}."})
    assert r.status_code == 200, r.text
    assert mapi.post("/queues", json={"name": "autoq"}).status_code in (201, 409)
    sender = f"{marker}@reporter.example"

    def send_new(tag, headers=""):
        raw = make_mail(f"{tag} {marker}", f"report {tag} {marker}", sender=sender, extra_headers=headers)
        deliver(mail_stack, raw, "--queue", "autoq")

    send_new("auto", "Auto-Submitted: auto-generated\r\n")
    send_new("first")

    def auto_replies():
        return [r for r in smtp.sink.received if r.rcpt_tos == [sender]]
    [first] = wait_for(auto_replies, timeout=30, what="the auto-reply")
    assert first.message["Auto-Submitted"] == "auto-replied"
    assert str(first.message["Subject"]).endswith(f"Received: first {marker}")
    send_new("second")
    wait_for(lambda: len(auto_replies()) == 2, timeout=30, what="the second auto-reply")
    send_new("third")       # over OSPREY_AUTOREPLY_DAILY_LIMIT=2
    ticket_of(mapi, f"third {marker}")
    time.sleep(3)
    got = auto_replies()
    assert [str(m.message["Subject"]).split("Received: ")[1] for m in got] == [f"first {marker}", f"second {marker}"]


def test_a_killed_notify_resumes_without_duplicates(mail_stack, mapi, smtp, marker):
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)
    smtp.sink.hold_index = smtp.sink.data_seen + 3          # hold the 4th of these mails in DATA
    sent = [mapi.post(f"/tickets/{ticket['id']}/send", json={"body": f"mail {i}"}).json() for i in range(10)]
    assert smtp.sink.held.wait(30), "the SMTP server never held a mail"
    mail_stack.stop_process("notify", signal.SIGKILL)         # dies while the relay holds DATA unanswered
    smtp.sink.hold_index = None
    smtp.release()
    mail_stack.start_service("notify")
    ids = [s["message_id"] for s in sent]
    wait_for(lambda: all(smtp.sink.by_message_id()[i] >= 1 for i in ids), timeout=60,
             what="every mail delivered after the restart")
    wait_for(lambda: len([a for a in articles(mapi, ticket["id"]) if a["direction"] == "out"]) == 10, timeout=60,
             what="every mail recorded on the ticket")
    time.sleep(1)
    counts = smtp.sink.by_message_id()
    assert [counts[i] for i in ids] == [1] * 10
    assert sorted(a["message_id"] for a in articles(mapi, ticket["id"]) if a["direction"] == "out") == sorted(ids)
    smtp.sink.held.clear()


def test_comment_to_staff_and_rights(mail_stack, mapi, smtp, marker):
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)
    assert mapi.post("/users", json={"username": f"bob-{marker}", "password": "pw-" + marker, "role": "agent",
                                     "email": f"bob-{marker}@csirt.example"}).status_code == 201
    sent = mapi.post(f"/tickets/{ticket['id']}/send", json={"action": "comment", "to": [f"bob-{marker}"],
                                                            "body": "Bob, please check."}).json()
    [got] = received(smtp, sent["message_id"])
    assert got.rcpt_tos == [f"bob-{marker}@csirt.example"]
    article = outgoing(mapi, ticket["id"], sent["message_id"])
    assert article["action"] == "notification"
    r = mapi.post(f"/tickets/{ticket['id']}/send", json={"action": "comment", "to": ["nobody-here"], "body": "x"})
    assert r.status_code == 400 and "neither a mail address nor a user" in r.json()["detail"]
    r = mapi.post(f"/tickets/{ticket['id']}/send", json={"action": "forward", "body": "x"})
    assert r.status_code == 400 and "at least one recipient" in r.json()["detail"]
    assert mapi.post(f"/tickets/{ticket['id']}/send", json={"action": "shout"}).status_code == 400
    assert mapi.post("/tickets/999999/send", json={"body": "x"}).status_code == 404


def test_reminder_mails_the_owner_and_the_awaited_third_party(mail_stack, mapi, smtp, marker):
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker)
    owner = f"olga-{marker}"
    assert mapi.post("/users", json={"username": owner, "password": "pw-" + marker, "role": "agent",
                                     "email": f"{owner}@csirt.example"}).status_code == 201
    assert mapi.patch(f"/tickets/{ticket['id']}", json={"owner": owner}).status_code == 200
    from datetime import datetime, timezone
    token = httpx.post(f"{mail_stack.url}/api/v1/tokens", json={"username": owner, "password": "pw-" + marker},
                       timeout=30).json()["token"]
    r = httpx.post(f"{mail_stack.url}/api/v1/tickets/{ticket['id']}/reminders", headers={
        "Authorization": f"Bearer {token}"}, timeout=30, json={
        "due": datetime.now(timezone.utc).isoformat(), "text": f"chase the ISP {marker}",
        "awaiting": "noc@isp.example", "notify_third_party": True})
    assert r.status_code == 201, r.text
    # tickets' clock fires it within 15 s
    to_owner = wait_for(lambda: [m for m in smtp.sink.received if m.rcpt_tos == [f"{owner}@csirt.example"]],
                        timeout=45, what="the reminder to the owner")
    assert f"chase the ISP {marker}" in to_owner[0].message.get_content()
    assert to_owner[0].message["Auto-Submitted"] == "auto-generated"
    to_noc = wait_for(lambda: [m for m in smtp.sink.received if m.rcpt_tos == ["noc@isp.example"]
                               and f"#{ticket['id']}]" in str(m.message["Subject"])], timeout=30,
                      what="the reminder to the third party")
    assert "still waiting for your answer" in to_noc[0].message.get_content()


def test_cli(mail_stack, smtp, marker, tmp_path):
    body = tmp_path / "t.txt"
    body.write_text("Hello {{ ticket.requestor }}\n")
    r = mail_stack.cli("template", "save", f"cli-{marker}", str(body), "--kind", "reply", "--subject", "CLI {{ ticket.id }}")
    assert r.returncode == 0, r.stderr
    assert f"cli-{marker}" in mail_stack.cli("template", "list").stdout.decode()
    # a ticket by mail, then preview, reply and the outbox from the command line
    mid = f"<{uuid.uuid4().hex}@example.net>"
    assert mail_stack.mailgate(make_mail(f"cli {marker}", f"text {marker}", message_id=mid)).returncode == 0
    import json
    tid = wait_for(lambda: (json.loads(mail_stack.cli("search", marker, "--json").stdout) or [{}])[0].get("id"),
                   timeout=30, what="the ticket")
    r = mail_stack.cli("template", "preview", f"cli-{marker}", str(tid))
    assert r.returncode == 0 and r.stdout.decode() == f"Subject: [Osprey #{tid}] CLI {tid}\n\nHello reporter@example.net\n"
    bad = tmp_path / "bad.txt"
    bad.write_text("ok\n{{ nope }}\n")
    r = mail_stack.cli("template", "preview", str(tid), "--file", str(bad))
    assert r.returncode == 1 and "line 2: undefined: 'nope' is undefined" in r.stderr.decode()
    r = mail_stack.cli("reply", str(tid), "--text", "from the CLI", "--json")
    assert r.returncode == 0, r.stderr
    sent = json.loads(r.stdout)
    received(smtp, sent["message_id"])
    r = mail_stack.cli("forward", str(tid), "--to", "noc@isp.example", "--inline", "--json")
    assert r.returncode == 0, r.stderr
    received(smtp, json.loads(r.stdout)["message_id"])
    out = mail_stack.cli("outbox", "--ticket", str(tid)).stdout.decode()
    assert sent["id"] in out


def test_signed_by_the_queue_policy_through_crypto(mail_stack, mapi, smtp, marker, tmp_path):
    """The queue's policy asks to sign: crypto signs with the queue's key (PGP/MIME),
    and the signature verifies at the receiver. Without a key nothing is sent."""
    import shutil
    import subprocess
    import tempfile

    from osprey import contracts
    from osprey.rpc import Rpc

    from ..unit.test_compose import verify_pgp_mime
    assert shutil.which("gpg"), "gpg is missing: scripts/bootstrap.sh installs gnupg"
    queue = "signq"
    assert mapi.post("/queues", json={"name": queue}).status_code in (201, 409)
    r = mapi.put(f"/queues/{queue}/mail", json={"sign": True})
    assert r.status_code == 200 and r.json()["sign"] is True
    ticket, _raw, _mid = new_ticket(mail_stack, mapi, marker, sender="Reporter <reporter@example.net>")
    mail_stack.mailgate(make_mail(f"signed {marker}", f"report {marker}-s"), "--queue", queue)
    signed_ticket = ticket_of(mapi, f"{marker}-s")
    r = mapi.post(f"/tickets/{signed_ticket['id']}/send", json={"body": "signed?"})
    assert r.status_code == 400 and r.json()["detail"].startswith("cannot sign this mail:"), r.text

    home = tempfile.mkdtemp(prefix="nq", dir="/tmp")
    try:
        subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                        "--quick-gen-key", f"CSIRT signq <{queue}@{DOMAIN}>", "ed25519", "sign", "never"],
                       check=True, capture_output=True)
        secret = subprocess.run(["gpg", "--homedir", home, "--batch", "--armor", "--export-secret-keys"],
                                check=True, capture_output=True).stdout
        rpc = Rpc(amqp_uri=mail_stack.broker.uri)
        try:
            rpc.call("crypto", "import_key", contracts.b64(secret), True, queue)
        finally:
            rpc.close()
        r = mapi.post(f"/tickets/{signed_ticket['id']}/send", json={"body": "This one is signed.\n"})
        assert r.status_code == 202, r.text
        [got] = received(smtp, r.json()["message_id"])
        assert got.message.get_content_type() == "multipart/signed"
        assert verify_pgp_mime(home, got.data)
        article = outgoing(mapi, signed_ticket["id"], r.json()["message_id"])
        assert article["auto"]["security"]["signed_by"]
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
