"""services/ingest/parse.py: raw bytes → headers, body, attachments, part numbers."""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path

import pytest

from osprey.testing import corpora_dir

from services.ingest.parse import (ParsedMail, Unparseable, find_part, get_part, header, parse_bytes, parse_mail,
                                   walk_leaves)

DATA = Path(__file__).resolve().parent.parent / "data"
CORPORA = corpora_dir()
MAX = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load(name: str) -> bytes:
    return (DATA / name).read_bytes()


def parsed(name: str, max_body_chars: int = MAX) -> dict:
    return asdict(parse_mail(load(name), max_body_chars))


# --- whole messages ------------------------------------------------------------

PLAIN = {
    "message_id": "<plain-1@example.net>",
    "in_reply_to": "<earlier@example.net>",
    "references": ["<first@example.net>", "<earlier@example.net>"],
    "subject": "Phishing site at 192.0.2.15",
    "sender": "Alice Reporter <alice@example.net>",
    "sender_address": "alice@example.net",
    "to": ["CSIRT <csirt@example.org>", "bob@example.org"],
    "cc": ["Carol <carol@example.com>"],
    "date": "2025-11-25T10:15:00+01:00",
    "body_text": "Hello,\n\nthe host 192.0.2.15 serves a phishing kit since 09:00 CET.\n\nRegards, Alice\n",
    "body_html": None,
    "body_truncated": False,
    "attachments": [],
    "attached_messages": [],
    "defects": [],
    "auto": {"automatic": False, "reasons": [], "bounce": False, "bounce_of": None},
}
NOT_AUTOMATIC = PLAIN["auto"]


def test_plain_text_mail():
    assert parsed("plain.eml") == PLAIN


def test_plain_text_mail_with_crlf_line_ends():
    raw = load("plain.eml").replace(b"\n", b"\r\n")
    assert asdict(parse_mail(raw, MAX)) == {**PLAIN, "body_text": PLAIN["body_text"].replace("\n", "\r\n")}


def test_multipart_alternative_gives_text_and_html():
    assert parsed("alternative.eml") == {
        "message_id": "<alt-1@example.com>",
        "in_reply_to": None,
        "references": [],
        "subject": "Scan from 198.51.100.23",
        "sender": "noc@example.com",
        "sender_address": "noc@example.com",
        "to": ["csirt@example.org"],
        "cc": [],
        "date": "2025-11-26T08:00:00+00:00",
        "body_text": "Port scan from 198.51.100.23 against our /24.",
        "body_html": "<p>Port scan from <b>198.51.100.23</b> against our /24.</p>",
        "body_truncated": False,
        "attachments": [],
        "attached_messages": [],
        "defects": [],
        "auto": NOT_AUTOMATIC,
    }


def test_html_only_mail_gets_its_text_from_the_html():
    # quoted-printable soft line break joined, tags dropped, script and style
    # content dropped, entities unescaped
    assert parsed("html-only.eml") == {
        "message_id": "<html-1@example.com>",
        "in_reply_to": None,
        "references": [],
        "subject": "Spam run",
        "sender": "Abuse Desk <abuse@example.com>",
        "sender_address": "abuse@example.com",
        "to": ["csirt@example.org"],
        "cc": [],
        "date": None,
        "body_text": "Spam from 203.0.113.9 & friends\n",
        "body_html": ("<html><head><style>p { color: red; }</style></head><body><p>Spam from "
                      "<b>203.0.113.9</b> &amp; friends</p><script>alert(1)</script></body></html>\n"),
        "body_truncated": False,
        "attachments": [],
        "attached_messages": [],
        "defects": [],
        "auto": NOT_AUTOMATIC,
    }


# attachments.eml: mixed[ related[ text (1.1), inline png (1.2) ], pdf (2), text attachment (3), text (4) ]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01"
PDF = b"%PDF-1.4\r\n%\xe2\xe3\xcf\xd3\r\n\x00\x01\x02\xff trailer\n%%EOF\n"
IOCS = b"evil.example.com\n203.0.113.9\nkey=value"     # quoted-printable decoded
SECOND_TEXT = b"A second text part, no disposition."


def test_attachments_are_listed_with_part_numbers_sizes_and_sha256():
    assert parsed("attachments.eml") == {
        "message_id": "<att-1@example.net>",
        "in_reply_to": None,
        "references": [],
        "subject": "Evidence attached",
        "sender": "reporter@example.net",
        "sender_address": "reporter@example.net",
        "to": ["csirt@example.org"],
        "cc": [],
        "date": "2025-11-27T12:00:00+00:00",
        "body_text": "See the logo and the report.",
        "body_html": None,
        "body_truncated": False,
        "attachments": [
            {"part": "1.2", "filename": "logo.png", "content_type": "image/png",
             "size": len(PNG), "sha256": sha(PNG)},
            {"part": "2", "filename": "report.pdf", "content_type": "application/pdf",
             "size": len(PDF), "sha256": sha(PDF)},
            {"part": "3", "filename": "iocs.txt", "content_type": "text/plain",
             "size": len(IOCS), "sha256": sha(IOCS)},
            {"part": "4", "filename": "part-4.txt", "content_type": "text/plain",
             "size": len(SECOND_TEXT), "sha256": sha(SECOND_TEXT)},
        ],
        "attached_messages": [],
        "defects": [],
        "auto": NOT_AUTOMATIC,
    }


@pytest.mark.parametrize("number, expected", [
    ("1.2", {"part": "1.2", "content_type": "image/png", "filename": "logo.png", "disposition": "inline",
             "payload": PNG}),
    ("2", {"part": "2", "content_type": "application/pdf", "filename": "report.pdf",
           "disposition": "attachment", "payload": PDF}),
    ("3", {"part": "3", "content_type": "text/plain", "filename": "iocs.txt", "disposition": "attachment",
           "payload": IOCS}),
    ("4", {"part": "4", "content_type": "text/plain", "filename": None, "disposition": None,
           "payload": SECOND_TEXT}),
    ("1.1", {"part": "1.1", "content_type": "text/plain", "filename": None, "disposition": None,
             "payload": b"See the logo and the report."}),
])
def test_get_part_returns_the_exact_decoded_bytes(number, expected):
    assert asdict(get_part(load("attachments.eml"), number)) == expected


@pytest.mark.parametrize("number", ["0", "1", "5", "1.3", "2.1", ""])
def test_get_part_of_a_missing_number_raises_key_error(number):
    with pytest.raises(KeyError):
        get_part(load("attachments.eml"), number)


def test_walk_leaves_numbers_parts_like_imap():
    leaves = [(n, p.get_content_type()) for n, p in walk_leaves(parse_bytes(load("attachments.eml")))]
    assert leaves == [("1.1", "text/plain"), ("1.2", "image/png"), ("2", "application/pdf"),
                      ("3", "text/plain"), ("4", "text/plain")]


def test_walk_leaves_of_a_single_part_mail_is_part_one():
    assert [n for n, _ in walk_leaves(parse_bytes(load("plain.eml")))] == ["1"]


INNER_MAIL = b"""From: phisher@example.com
To: victim@example.org
Subject: Your account is locked
Message-ID: <phish@example.com>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="INNER"

--INNER
Content-Type: text/plain; charset=us-ascii

Click the link.
--INNER
Content-Type: application/octet-stream; name="invoice.exe"
Content-Disposition: attachment; filename="invoice.exe"
Content-Transfer-Encoding: base64

TVqQAAMAAAAEAAAA
--INNER--
"""


INVOICE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00"     # TVqQAAMAAAAEAAAA


def test_attached_mail_is_one_attachment_then_its_own_parts():
    mail = parsed("forwarded.eml")
    assert mail["attachments"] == [
        {"part": "2", "filename": "part-2.eml", "content_type": "message/rfc822",
         "size": len(INNER_MAIL), "sha256": sha(INNER_MAIL)},
        {"part": "2.2", "filename": "invoice.exe", "content_type": "application/octet-stream",
         "size": len(INVOICE), "sha256": sha(INVOICE)},
    ]
    assert mail["attached_messages"] == [{
        "part": "2", "from": "phisher@example.com", "to": ["victim@example.org"], "cc": [],
        "subject": "Your account is locked", "date": None, "message_id": "<phish@example.com>",
        "text": "Click the link.", "text_truncated": False, "received_ips": [], "ips": [],
        "attachments": ["2.2"]}]
    # shown inline, below the mail's own text
    assert mail["body_text"] == (
        "Forwarding the phish as an attachment.\n\n"
        "----- Attached message (part 2) -----\n"
        "From: phisher@example.com\nTo: victim@example.org\nSubject: Your account is locked\n"
        "Message-ID: <phish@example.com>\n\nClick the link.")


def test_a_part_of_an_attached_mail_is_fetched_by_its_number():
    raw = load("forwarded.eml")
    assert asdict(get_part(raw, "2.2")) == {"part": "2.2", "content_type": "application/octet-stream",
                                           "filename": "invoice.exe", "disposition": "attachment",
                                           "payload": INVOICE}
    assert get_part(raw, "2.1").payload == b"Click the link."
    for missing in ("2.3", "2.0", "2.2.1", "1.1"):
        with pytest.raises(KeyError):
            get_part(raw, missing)


def test_attached_mail_is_fetched_whole_with_its_own_headers():
    part = get_part(load("forwarded.eml"), "2")
    assert (part.content_type, part.payload) == ("message/rfc822", INNER_MAIL)
    inner = parse_mail(part.payload, MAX)
    assert (inner.subject, inner.sender_address, inner.body_text, [a["filename"] for a in inner.attachments]) == (
        "Your account is locked", "phisher@example.com", "Click the link.", ["invoice.exe"])


def test_unknown_charset_does_not_raise():
    # x-unknown is no codec: the body is decoded as UTF-8 with replacement characters
    assert parsed("unknown-charset.eml") == {
        "message_id": None,
        "in_reply_to": None,
        "references": [],
        "subject": "odd charset",
        "sender": "someone@example.net",
        "sender_address": "someone@example.net",
        "to": ["csirt@example.org"],
        "cc": [],
        "date": None,
        "body_text": "caf\ufffd ok\n",
        "body_html": None,
        "body_truncated": False,
        "attachments": [],
        "attached_messages": [],
        "defects": [],
        "auto": NOT_AUTOMATIC,
    }


def test_unknown_charset_in_an_encoded_word_does_not_raise():
    raw = b"From: a@example.org\nSubject: =?x-unknown?q?caf=E9?=\n\nbody\n"
    assert parse_mail(raw, MAX).subject == "caf\ufffd"


def test_rfc2047_encoded_subject_and_sender_are_decoded():
    mail = parsed("encoded-subject.eml")
    assert (mail["subject"], mail["sender"], mail["sender_address"]) == (
        "Phishing: Kündigung Ihres Kontos (café)", "Jürgen Müller <juergen@example.de>", "juergen@example.de")


def test_body_longer_than_the_limit_is_truncated():
    mail = parse_mail(load("alternative.eml"), 20)
    assert (mail.body_text, mail.body_html, mail.body_truncated) == (
        "Port scan from 198.5", "<p>Port scan from <b", True)


def test_body_exactly_at_the_limit_is_not_truncated():
    text = "Port scan from 198.51.100.23 against our /24."
    html = "<p>Port scan from <b>198.51.100.23</b> against our /24.</p>"
    mail = parse_mail(load("alternative.eml"), len(html))
    assert (mail.body_text, mail.body_html, mail.body_truncated) == (text, html, False)


def test_only_the_html_over_the_limit_still_marks_the_body_truncated():
    text = "Port scan from 198.51.100.23 against our /24."
    html = "<p>Port scan from <b>198.51.100.23</b> against our /24.</p>"
    mail = parse_mail(load("alternative.eml"), len(text))
    assert (mail.body_text, mail.body_html, mail.body_truncated) == (text, html[:len(text)], True)


# --- header() ------------------------------------------------------------------

@pytest.mark.parametrize("line, name, expected", [
    (b"Subject: =?utf-8?q?caf=C3=A9?=", "Subject", "café"),
    (b"Subject: plain", "subject", "plain"),
    # the stdlib's structured parsers raise on these (IndexError, AttributeError):
    # header() falls back to the raw value
    (b"Message-ID: <<<>", "Message-ID", "<<<>"),
    (b"To: a@", "To", "a@"),
    (b"To: x@[", "To", "x@["),
])
def test_header_decodes_and_never_raises(line, name, expected):
    msg = parse_bytes(line + b"\nFrom: a@example.org\n\nbody\n")
    assert header(msg, name) == expected


def test_header_that_is_absent_is_none():
    assert header(parse_bytes(load("plain.eml")), "X-Not-There") is None


def test_mail_with_malformed_headers_is_still_parsed():
    raw = b"From: a@example.org\nTo: x@[\nMessage-ID: <<<>\nDate: not a date\nSubject: s\n\nbody\n"
    mail = parse_mail(raw, MAX)
    assert (mail.message_id, mail.date, mail.sender_address, mail.body_text) == (
        "<<<>", None, "a@example.org", "body\n")


# --- Unparseable ---------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"", b"   \r\n\t\n"], ids=["empty", "whitespace"])
def test_empty_bytes_are_unparseable(raw):
    with pytest.raises(Unparseable, match="^empty message: no bytes besides whitespace$"):
        parse_mail(raw, MAX)


@pytest.mark.parametrize("raw", [
    CORPORA / "flanker/messages/attachments/small.png",     # a real image, read in the test
    bytes(range(256)) * 16,
    b"\x00" * 100,
    b"just a line of text\nand another\n",
], ids=["png", "all-bytes", "nuls", "text"])
def test_bytes_that_are_no_mail_are_unparseable(raw):
    if isinstance(raw, Path):
        raw = raw.read_bytes()
    with pytest.raises(Unparseable, match="^not an RFC 5322 message: none of From, Sender, To, Subject, "
                                          "Date, Message-ID in its header$"):
        parse_mail(raw, MAX)


def nested_rfc822(depth: int) -> bytes:
    raw = b"From: a@example.org\nSubject: deep\n"
    raw += b"Content-Type: message/rfc822\n\nSubject: inner\n" * depth
    return raw + b"\nleaf\n"


@pytest.mark.parametrize("depth", [400, 1500])
def test_attached_mail_nested_too_deeply_is_unparseable(depth):
    # 1500: the parser itself gives up; 400: the parser copes but flattening the
    # attached mail again used to escape as RecursionError (fixed in parse.py)
    with pytest.raises(Unparseable):
        parse_mail(nested_rfc822(depth), MAX)


def test_attached_mail_nested_a_little_is_unpacked_three_levels_deep():
    raw = nested_rfc822(20)
    mail = parse_mail(raw, MAX)
    # MAX_NESTING = 3: the mail in part 1 and the two below it are read; the fourth
    # level is listed as the one part it is
    assert [(a["part"], a["content_type"]) for a in mail.attachments] == [
        ("1", "message/rfc822"), ("1.1", "message/rfc822"), ("1.1.1", "message/rfc822"),
        ("1.1.1.1", "message/rfc822")]
    assert [(m["part"], m["subject"]) for m in mail.attached_messages] == [
        ("1", "inner"), ("1.1", "inner"), ("1.1.1", "inner")]
    for att in mail.attachments:
        assert sha(get_part(raw, att["part"]).payload) == att["sha256"]
    with pytest.raises(KeyError):
        get_part(raw, "1.1.1.1.1")     # below MAX_NESTING: not listed, not fetched


# --- the torture corpora -------------------------------------------------------

CORPUS_DIRS = ("flanker", "mimekit", "cpython-email")
MAIL_SUFFIXES = (".eml", ".msg", ".txt")
CORPUS_FILES = sorted(
    p.relative_to(CORPORA).as_posix()
    for d in CORPUS_DIRS if (CORPORA / d).is_dir()
    for p in (CORPORA / d).rglob("*") if p.is_file() and p.suffix.lower() in MAIL_SUFFIXES
)

# Files that are not a mail by parse_mail's rule (no From/Sender/To/Subject/Date/
# Message-ID in the top header). Pinned so a change in the rule shows up here.
UNPARSEABLE = {
    # MIME fragments without any mail header
    "cpython-email/data/msg_18.txt",
    "cpython-email/data/msg_19.txt",
    "cpython-email/data/msg_37.txt",
    "cpython-email/data/msg_38.txt",
    "cpython-email/data/msg_39.txt",
    "cpython-email/data/msg_40.txt",
    "flanker/messages/bounce/delayed-broken.eml",
    "mimekit/messages/delivery-status-multiple-blank-lines.txt",   # only Received + Content-Type
    "mimekit/messages/multipart-related-mhtml.txt",                # a saved web page (MHTML)
}
# These start with a UTF-8 byte order mark; parse_bytes skips it (the raw keeps it).
BOM_STARTED = ("mimekit/messages/feedback-report.txt", "mimekit/mbox/unmunged.mbox.txt")


@pytest.mark.parametrize("name", BOM_STARTED)
def test_a_leading_byte_order_mark_does_not_hide_the_header(name):
    raw = (CORPORA / name).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    mail = parse_mail(raw, MAX)
    assert mail.subject and mail.sender


def test_corpora_are_all_there():
    # counts from each folder's PROVENANCE.md (mimekit: its .eml, .msg and .txt files)
    counts = {d: sum(1 for f in CORPUS_FILES if f.startswith(d + "/")) for d in CORPUS_DIRS}
    assert counts == {"flanker": 48, "mimekit": 54, "cpython-email": 48}


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_mail_parses_or_is_unparseable(name):
    raw = (CORPORA / name).read_bytes()
    try:
        mail = parse_mail(raw, MAX)
    except Unparseable:
        assert name in UNPARSEABLE
        return
    assert name not in UNPARSEABLE
    assert isinstance(mail, ParsedMail)
    msg = parse_bytes(raw)    # parsed once: get_part would parse it again for each part
    for att in mail.attachments:
        part = find_part(msg, att["part"])
        assert (part.part, part.content_type, len(part.payload), sha(part.payload)) == (
            att["part"], att["content_type"], att["size"], att["sha256"])
