"""The MTA pipe against the real broker and services: exit codes, durability,
idempotency, quarantine, byte-exact evidence."""
from __future__ import annotations

import hashlib
import socket
import threading

import pytest

from osprey import contracts
from tests.helpers import make_mail, wait_for


def intake(api, raw: bytes, status=None) -> dict:
    sha = hashlib.sha256(raw).hexdigest()

    def done():
        r = api.get(f"/intake/{sha}")
        if r.status_code != 200:
            return None
        body = r.json()
        states = {i["status"] for i in body["intakes"]}
        if status is None and contracts.INTAKE_RECEIVED not in states:
            return body
        return body if status in states else None
    return wait_for(done, timeout=60, what=f"intake {sha[:12]} {status or 'processed'}")


def test_piped_mail_becomes_a_ticket_with_byte_exact_original(stack, api, marker):
    raw = make_mail(f"Scan report {marker}", f"Host 198.51.100.23 probed us. {marker}\r\nBye")
    proc = stack.mailgate(raw, "--queue", "general")
    assert proc.returncode == 0, proc.stderr.decode()

    info = intake(api, raw)
    (record,) = info["intakes"]
    assert record["status"] == "delivered"
    assert record["queue"] == "general" and record["source"] == "mailgate" and record["deliveries"] == 1
    ticket = api.get(f"/tickets/{record['ticket_id']}").json()
    assert ticket["subject"] == f"Scan report {marker}"
    assert ticket["queue"] == "general" and ticket["state"] == "new"
    assert ticket["requestor"] == "reporter@example.net"
    # (enrich adds its own entries shortly after, asynchronously)
    assert [h["action"] for h in ticket["history"] if h["actor"] != "enrich"] == ["ticket_created", "article_added"]

    (article,) = api.get(f"/tickets/{ticket['id']}/articles").json()
    assert marker in article["body_text"]
    assert article["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    raw_resp = api.get(f"/articles/{article['id']}/raw")
    assert raw_resp.status_code == 200
    assert raw_resp.content == raw                       # byte-exact, CRLF kept
    assert raw_resp.headers["x-osprey-sha256"] == hashlib.sha256(raw).hexdigest()
    assert raw_resp.headers["content-type"].startswith("message/rfc822")

    hits = api.get("/search", params={"q": marker}).json()["results"]
    assert [h["id"] for h in hits] == [ticket["id"]]
    hits = api.get("/search", params={"q": "198.51.100.0/24"}).json()["results"]
    assert ticket["id"] in [h["id"] for h in hits]


def test_the_same_delivery_twice_makes_one_article(stack, api, marker):
    raw = make_mail(f"Twice {marker}", f"delivered twice {marker}")
    assert stack.mailgate(raw).returncode == 0
    first = intake(api, raw)
    assert stack.mailgate(raw).returncode == 0   # the MTA retried, e.g. after a timeout
    info = wait_for(lambda: (lambda b: b if b["intakes"][0]["deliveries"] == 2 else None)(
        api.get(f"/intake/{first['sha256']}").json()), what="second delivery counted")
    (record,) = info["intakes"]
    assert record["ticket_id"] == first["intakes"][0]["ticket_id"]
    assert len(api.get(f"/tickets/{record['ticket_id']}/articles").json()) == 1
    assert len(api.get("/search", params={"q": marker}).json()["results"]) == 1


def test_subject_tag_adds_to_the_named_ticket(stack, api, marker):
    raw = make_mail(f"Phishing {marker}", f"first {marker}")
    assert stack.mailgate(raw).returncode == 0
    tid = intake(api, raw)["intakes"][0]["ticket_id"]
    reply = make_mail(f"AW: Re: [Osprey #{tid}] Phishing {marker}", f"the follow-up {marker}")
    assert stack.mailgate(reply).returncode == 0
    assert intake(api, reply)["intakes"][0]["ticket_id"] == tid
    articles = api.get(f"/tickets/{tid}/articles").json()
    assert [a["body_text"].strip() for a in articles] == [f"first {marker}", f"the follow-up {marker}"]


def test_empty_input_exits_65_and_delivers_nothing(stack):
    proc = stack.mailgate(b"")
    assert proc.returncode == 65
    assert b"empty input" in proc.stderr


def test_a_non_mail_blob_is_kept_and_quarantined(stack, api):
    blob = bytes(range(256)) * 64 + b"\x00not a mail"
    assert stack.mailgate(blob).returncode == 0
    info = intake(api, blob, status="quarantined")
    (record,) = info["intakes"]
    assert record["ticket_id"] is None
    assert "not an RFC 5322 message" in record["reason"]
    assert info["stored"] is True
    quarantined = api.get("/intake", params={"status": "quarantined"}).json()
    assert info["sha256"] in [r["sha256"] for r in quarantined]


def test_mail_for_an_unknown_queue_is_quarantined_with_the_reason(stack, api, marker):
    raw = make_mail(f"Lost {marker}", "for a queue that does not exist")
    assert stack.mailgate(raw, "--queue", "no-such-queue").returncode == 0
    (record,) = intake(api, raw, status="quarantined")["intakes"]
    assert record["reason"] == "tickets refused it: UnknownQueue: no queue named 'no-such-queue'"


def test_broker_down_exits_75(stack):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()   # nothing listens there now
    proc = stack.mailgate(make_mail("x", "y"), env={"OSPREY_AMQP_URI": f"amqp://guest:guest@127.0.0.1:{port}/"})
    assert proc.returncode == 75
    assert b"try again later" in proc.stderr


def test_broker_that_never_answers_exits_75_within_the_timeout(stack):
    # a TCP peer that accepts and then says nothing: the broker "slow past a timeout"
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        proc = stack.mailgate(make_mail("x", "y"), "--timeout", "2",
                              env={"OSPREY_AMQP_URI": f"amqp://guest:guest@127.0.0.1:{port}/"}, timeout=30)
        assert proc.returncode == 75
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        server.close()


def test_mail_waits_in_the_broker_while_ingest_is_down(stack, api, marker):
    """Durable before acknowledged: ingest stopped, the mail is still taken (exit 0)
    and becomes a ticket once ingest is back."""
    stack.stop_process("ingest")
    try:
        raw = make_mail(f"While down {marker}", f"ingest was down {marker}")
        assert stack.mailgate(raw).returncode == 0
    finally:
        stack.start_service("ingest")
    assert intake(api, raw)["intakes"][0]["status"] == "delivered"


def test_a_killed_ingest_loses_nothing_and_duplicates_nothing(stack, api, marker):
    """SIGKILL ingest while mails are in flight; after restart every mail is a ticket, once."""
    mails = [make_mail(f"Burst {marker} {i}", f"burst {marker} n{i}") for i in range(30)]
    for raw in mails[:15]:
        assert stack.mailgate(raw).returncode == 0
    stack.stop_process("ingest", sig=9)
    for raw in mails[15:]:
        assert stack.mailgate(raw).returncode == 0
    stack.start_service("ingest")
    for raw in mails:
        assert intake(api, raw)["intakes"][0]["status"] == "delivered"
    found = api.get("/search", params={"q": marker, "limit": 100}).json()["results"]
    assert len(found) == 30
    assert len({h["id"] for h in found}) == 30


@pytest.mark.slow
def test_a_50_mb_mail_is_delivered_whole(stack, api, marker):
    import base64
    payload = bytes((i * 7919) % 251 for i in range(37 * 1024 * 1024))   # 37 MiB → ~50 MB base64
    b64 = base64.encodebytes(payload)
    raw = (make_mail(f"Big {marker}", f"see attachment {marker}").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n", b"Content-Type: multipart/mixed; boundary=BOUND\r\n\r\n"
        b"--BOUND\r\nContent-Type: text/plain\r\n\r\n") +
        b"--BOUND\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"dump.bin\"\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--BOUND--\r\n")
    assert len(raw) > 50_000_000
    proc = stack.mailgate(raw)
    assert proc.returncode == 0, proc.stderr
    (record,) = intake(api, raw)["intakes"]
    assert record["status"] == "delivered"
    (article,) = api.get(f"/tickets/{record['ticket_id']}/articles").json()
    (att,) = article["attachments"]
    assert att["filename"] == "dump.bin" and att["size"] == len(payload)
    assert att["sha256"] == hashlib.sha256(payload).hexdigest()
    got = api.get(f"/attachments/{att['id']}")
    assert hashlib.sha256(got.content).hexdigest() == att["sha256"]
    assert api.get(f"/articles/{article['id']}/raw").content == raw


def test_a_mail_over_the_size_limit_exits_69(stack):
    proc = stack.mailgate(make_mail("big", "x" * 5000), env={"OSPREY_MAX_MAIL_BYTES": "1000"})
    assert proc.returncode == 69
    assert b"larger than 1000 bytes" in proc.stderr


def test_ticket_and_extension_options_like_rt_mailgate(stack, api, marker):
    first = make_mail(f"Ext {marker}", f"first {marker}")
    assert stack.mailgate(first).returncode == 0
    tid = intake(api, first)["intakes"][0]["ticket_id"]
    # --ticket N: no subject tag needed
    follow = make_mail(f"no tag {marker}", "second")
    assert stack.mailgate(follow, "--ticket", str(tid)).returncode == 0
    record = intake(api, follow)["intakes"][0]
    assert (record["ticket_id"], record["envelope_ticket"]) == (tid, tid)
    # --extension ticket|queue: from $EXTENSION, as an MTA sets it for osprey-EXT@
    third = make_mail(f"still no tag {marker}", "third")
    assert stack.mailgate(third, "--extension", "ticket", env={"EXTENSION": str(tid)}).returncode == 0
    assert intake(api, third)["intakes"][0]["ticket_id"] == tid
    queued = make_mail(f"to a queue by extension {marker}", "fourth")
    assert stack.mailgate(queued, "--extension", "queue", env={"EXTENSION": f"ext-{marker}"}).returncode == 0
    assert intake(api, queued, status="quarantined")["intakes"][0]["queue"] == f"ext-{marker}"
    bad = stack.mailgate(make_mail("x", "y"), "--extension", "ticket", env={"EXTENSION": "abc"})
    assert bad.returncode == 64 and b"is no ticket" in bad.stderr


# --- the envelope, and the broker as the mailgate's own AMQP client sees it ----------------

def test_the_envelope_from_the_command_line_is_kept(stack, api, marker):
    """Postfix: argv=osprey-mailgate --queue general --sender=${sender} --recipient=${recipient}
    --client-address=${client_address} (null_sender=): all of it on the intake record."""
    raw = make_mail(f"Envelope {marker}", f"with its envelope {marker}")
    proc = stack.mailgate(raw, "--queue", "general", "--sender=", "--recipient=abuse@csirt.example",
                          "--recipient", "cert@csirt.example", "--client-address=2001:db8::25")
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = intake(api, raw)["intakes"]
    assert record["envelope"] == {"mail_from": "", "rcpt_to": ["abuse@csirt.example", "cert@csirt.example"],
                                  "client_address": "2001:db8::25"}
    listed = {r["intake_id"]: r for r in api.get("/intake", params={"limit": 1000}).json()}
    assert listed[record["intake_id"]]["envelope"] == record["envelope"]
    # without the options there is no envelope to keep
    bare = make_mail(f"No envelope {marker}", "bare")
    assert stack.mailgate(bare).returncode == 0
    assert intake(api, bare)["intakes"][0]["envelope"] is None


def test_a_broker_uri_with_options_goes_through_pika_and_arrives_the_same(stack, api, marker):
    raw = make_mail(f"Through pika {marker}", f"heartbeat option {marker}")
    uri = stack.broker.uri.rstrip("/") + "/%2F?heartbeat=30"
    proc = stack.mailgate(raw, "--sender=a@example.net", env={"OSPREY_AMQP_URI": uri})
    assert proc.returncode == 0, proc.stderr.decode()
    (record,) = intake(api, raw)["intakes"]
    assert (record["status"], record["source"], record["envelope"]) == ("delivered", "mailgate",
                                                                       {"mail_from": "a@example.net"})


@pytest.mark.parametrize("change, said", [
    (lambda uri: uri.replace("guest:guest@", "guest:wrong@"), "ACCESS_REFUSED"),
    (lambda uri: uri.rstrip("/") + "/no-such-vhost", "vhost"),
])
def test_a_refusing_broker_is_a_temporary_failure_with_its_reason(stack, change, said):
    proc = stack.mailgate(make_mail("x", "y"), env={"OSPREY_AMQP_URI": change(stack.broker.uri)})
    assert proc.returncode == 75
    err = proc.stderr.decode()
    assert "try again later" in err and said in err, err


# --- what a mail becomes: attached mails and winmail.dat, end to end ---------------------------

def test_a_forwarded_abuse_report_shows_the_reported_mail_and_is_found_by_its_ip(stack, api, marker):
    from osprey.testing import corpora_dir
    raw = (corpora_dir() / "flanker/messages/complaints/yahoo.eml").read_bytes().replace(
        b"Subject: FW:Some subject", f"Subject: FW: report {marker}".encode(), 1)
    assert raw.count(marker.encode()) == 1
    assert stack.mailgate(raw).returncode == 0
    (record,) = intake(api, raw)["intakes"]
    assert record["status"] == "delivered"
    (article,) = api.get(f"/tickets/{record['ticket_id']}/articles").json()
    assert "----- Attached message (part 3) -----\nFrom: Hello Support <support@example.com>" in article["body_text"]
    assert "Received from: 207.200.36.196" in article["body_text"]
    hits = api.get("/search", params={"q": "207.200.36.196", "limit": 100}).json()["results"]
    assert record["ticket_id"] in [h["id"] for h in hits]
    eml = next(a for a in article["attachments"] if a["part"] == "3")
    assert api.get(f"/attachments/{eml['id']}").content.startswith(b"X-Apparently-To: user@yahoo.com")


def test_winmail_dat_files_are_attachments_of_the_article(stack, api, marker):
    import base64
    from osprey.testing import corpora_dir
    tnef = (corpora_dir() / "mimekit/tnef/MAPI_ATTACH_DATA_OBJ.tnef").read_bytes()
    raw = make_mail(f"Outlook {marker}", f"see attached {marker}").replace(
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n",
        b"Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n") + (
        b"--B\r\nContent-Type: application/ms-tnef; name=winmail.dat\r\nContent-Transfer-Encoding: base64\r\n"
        b"Content-Disposition: attachment; filename=winmail.dat\r\n\r\n" + base64.encodebytes(tnef) + b"--B--\r\n")
    assert stack.mailgate(raw).returncode == 0
    (record,) = intake(api, raw)["intakes"]
    (article,) = api.get(f"/tickets/{record['ticket_id']}/articles").json()
    assert [(a["part"], a["filename"], a["size"]) for a in article["attachments"]] == [
        ("2.1", "VIA_Nytt_1402.doc", 61952), ("2.2", "VIA_Nytt_1402.pdf", 213685), ("2.3", "VIA_Nytt_14021.htm", 68919),
        ("2.4", "body.rtf", 2429)]
    doc = api.get(f"/attachments/{article['attachments'][0]['id']}")
    assert hashlib.sha256(doc.content).hexdigest() == \
        "9955935516d1407e0f833d91242f7416c68a66eae69e73d855ae17724e04fe60"      # Debian tnef's bytes
