"""Attached mails (message/rfc822 parts: a mail forwarded as an attachment, the
original in an abuse report): their headers and text read into
``attached_messages``, shown inline in the body text (so search finds their text and
IPs), their own parts listed and fetched by number below the attached mail's."""
from __future__ import annotations

import base64
import hashlib

import pytest

from osprey import contracts
from osprey.testing import corpora_dir
from services.ingest.parse import MAX_NESTED_PARTS, get_part, parse_mail

CORPORA = corpora_dir()
MAX = 1024 * 1024


def corpus(name: str) -> bytes:
    return (CORPORA / name).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_aol_feedback_report_shows_the_reported_mail_and_its_source_ip():
    raw = corpus("flanker/messages/complaints/aol.eml")
    mail = parse_mail(raw, MAX)
    assert mail.attached_messages == [{
        "part": "3", "from": "Bob <bob@example.com>", "to": ["redacted@aol.com"], "cc": [],
        "subject": "exciting Repair the transmittion", "date": "2010-11-17T17:41:30+00:00",
        "message_id": "<20101117174130.28884.55421@luna>",
        "text": "Dude\r\n\r\nHello\r\n--\r\nBest,\r\nBob\r\n\r\n", "text_truncated": False,
        "received_ips": ["173.193.210.34"], "ips": ["173.193.210.34"], "attachments": []}]
    assert [(a["part"], a["content_type"]) for a in mail.attachments] == [
        ("2", "message/feedback-report"), ("3", "message/rfc822")]
    block = mail.body_text[mail.body_text.index("----- Attached message (part 3) -----"):]
    assert block == ("----- Attached message (part 3) -----\n"
                     "From: Bob <bob@example.com>\nTo: redacted@aol.com\nDate: 2010-11-17T17:41:30+00:00\n"
                     "Subject: exciting Repair the transmittion\nMessage-ID: <20101117174130.28884.55421@luna>\n"
                     "Received from: 173.193.210.34\n\nDude\r\n\r\nHello\r\n--\r\nBest,\r\nBob\r\n\r\n")
    assert get_part(raw, "3").payload.startswith(b"Content-Type: text/plain")


def test_yahoo_report_ip_is_found_only_in_the_attached_mail():
    raw = corpus("flanker/messages/complaints/yahoo.eml")
    mail = parse_mail(raw, MAX)
    (reported,) = mail.attached_messages
    assert (reported["part"], reported["from"], reported["subject"], reported["received_ips"]) == (
        "3", "Hello Support <support@example.com>", "Some subject", ["207.200.36.196"])
    # the report's own text does not name it; the article's text (what search indexes) does
    own_text = mail.body_text[:mail.body_text.index("----- Attached message")]
    assert "207.200.36.196" not in own_text
    assert [str(ip) for ip in contracts.find_ips(mail.body_text)] == ["207.200.36.196"]


def test_mimekit_simple_embedded_message():
    mail = parse_mail(corpus("mimekit/messages/simple-embedded-message.eml"), MAX)
    assert [(m["part"], m["from"], m["subject"], m["date"], m["message_id"], m["text"])
            for m in mail.attached_messages] == [
        ("2", "mimekit@example.com", "embedded message", "2013-11-12T09:12:42-05:00", None,
         "This is the embedded message body.\n")]
    assert mail.body_text == ("This is the message body.\n\n----- Attached message (part 2) -----\n"
                              "From: mimekit@example.com\nTo: mimekit@example.com\nDate: 2013-11-12T09:12:42-05:00\n"
                              "Subject: embedded message\n\nThis is the embedded message body.\n")


def test_flanker_enclosed_mail_with_base64_utf8_text_and_html():
    raw = corpus("flanker/messages/enclosed.eml")
    mail = parse_mail(raw, MAX)
    (thanks,) = mail.attached_messages
    assert (thanks["from"], thanks["to"], thanks["subject"], thanks["message_id"]) == (
        "Kirk Douglas <dan@example.com>", ["Bob Marley <bob@example.net>", "Jimmy Hendrix <jimmy@examplehq.com>"],
        "Thanks!", "<BANLkTinHZL1QMDHOv7Ewp+Z5u6SPvYcc+Q@mail.gmail.com>")
    assert thanks["text"].startswith("dudes... you're kicking ass.\nчтобы я без вас делал, дорогие мои!!!")
    assert thanks["received_ips"] == ["127.0.1.1", "209.85.212.51", "10.52.66.82", "10.52.168.1"]
    # the inner text/html is the attached mail's HTML body, not a file
    assert [(a["part"], a["filename"]) for a in mail.attachments] == [("2", "thanks.eml")]
    assert get_part(raw, "2.1").payload.startswith(b"dudes... you're kicking ass.")
    assert get_part(raw, "2.2").content_type == "text/html"


def forward(inner: bytes, extra: bytes = b"", cte: str | None = None) -> bytes:
    head = b"Content-Type: message/rfc822\r\n"
    if cte:
        head += f"Content-Transfer-Encoding: {cte}\r\n".encode()
    return (b"From: analyst@example.org\r\nTo: csirt@example.org\r\nSubject: Fwd: report\r\n"
            b"Message-ID: <fwd@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"O\"\r\n"
            b"\r\n--O\r\nContent-Type: text/plain\r\n\r\nSee below.\r\n--O\r\n" + head + b"\r\n" + inner + b"\r\n"
            + extra + b"--O--\r\n")


INNER = (b"From: Spammer <spam@example.com>\r\nTo: victim@example.net\r\nSubject: Cheap pills\r\n"
         b"Date: Tue, 24 Nov 2026 08:00:00 +0100\r\nMessage-ID: <spam-1@example.com>\r\n"
         b"Received: from bad.example.com (bad.example.com [198.51.100.77]) by mx.example.net\r\n"
         b"Received: from [2001:db8::bad] by bad.example.com\r\n"
         b"Content-Type: text/plain\r\n\r\nBuy now at http://203.0.113.5/shop\r\n")


def test_own_forward_headers_text_and_every_ip():
    mail = parse_mail(forward(INNER), MAX)
    (spam,) = mail.attached_messages
    assert spam == {
        "part": "2", "from": "Spammer <spam@example.com>", "to": ["victim@example.net"], "cc": [],
        "subject": "Cheap pills", "date": "2026-11-24T08:00:00+01:00", "message_id": "<spam-1@example.com>",
        "text": "Buy now at http://203.0.113.5/shop\r\n", "text_truncated": False,
        "received_ips": ["198.51.100.77", "2001:db8::bad"], "ips": ["198.51.100.77", "2001:db8::bad", "203.0.113.5"],
        "attachments": []}
    assert {str(ip) for ip in contracts.find_ips(mail.body_text)} == {"198.51.100.77", "2001:db8::bad", "203.0.113.5"}


def test_base64_encoded_attached_mail_is_decoded_first():
    # RFC 2046 allows only 7bit/8bit/binary for message/rfc822; some gateways base64 it anyway
    mail = parse_mail(forward(base64.encodebytes(INNER), cte="base64"), MAX)
    assert [(m["subject"], m["received_ips"]) for m in mail.attached_messages] == [
        ("Cheap pills", ["198.51.100.77", "2001:db8::bad"])]


def test_two_attached_mails_in_part_order():
    second = INNER.replace(b"Cheap pills", b"Second one").replace(b"<spam-1@", b"<spam-2@")
    extra = b"--O\r\nContent-Type: message/rfc822\r\n\r\n" + second + b"\r\n"
    mail = parse_mail(forward(INNER, extra), MAX)
    assert [(m["part"], m["subject"]) for m in mail.attached_messages] == [("2", "Cheap pills"), ("3", "Second one")]
    assert mail.body_text.index("(part 2)") < mail.body_text.index("(part 3)")


def test_attached_text_shares_the_body_budget():
    long_inner = INNER.replace(b"Buy now", b"x" * 500 + b" Buy now")
    mail = parse_mail(forward(long_inner), 300)
    (spam,) = mail.attached_messages
    assert (len(spam["text"]), spam["text_truncated"]) == (300, True)
    assert len(mail.body_text) == 300 and mail.body_truncated


def test_an_attached_mail_of_thousands_of_parts_is_listed_up_to_the_limit():
    parts = b"".join(b"--I\r\nContent-Type: application/octet-stream\r\n\r\nx%d\r\n" % i for i in range(500))
    inner = (b"From: a@example.com\r\nSubject: many\r\nContent-Type: multipart/mixed; boundary=\"I\"\r\n\r\n"
             + parts + b"--I--\r\n")
    raw = forward(inner)
    mail = parse_mail(raw, MAX)
    nested = [a for a in mail.attachments if a["part"].startswith("2.")]
    assert len(nested) == MAX_NESTED_PARTS
    assert mail.defects == ["TooManyNestedParts"]
    assert get_part(raw, "2.500").payload == b"x499"      # still fetched by number (the .eml is whole, too)


@pytest.mark.parametrize("name", ["flanker/messages/torture.eml", "mimekit/messages/multipart-digest.txt"])
def test_every_listed_part_of_a_torture_mail_is_fetched(name):
    raw = corpus(name)
    mail = parse_mail(raw, MAX)
    assert mail.attached_messages
    for att in mail.attachments:
        assert sha(get_part(raw, att["part"]).payload) == att["sha256"]
    for m in mail.attached_messages:
        assert all(p.startswith(m["part"] + ".") for p in m["attachments"])
