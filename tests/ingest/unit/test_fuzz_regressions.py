"""What the fuzzer (fuzz/fuzz_ingest.py) found, as minimised inputs in data/fuzz/.

Every file there must go through what the fuzz target checks: parse_mail gives a
ParsedMail or raises Unparseable, and get_part returns, for every listed attachment,
exactly the bytes the listing describes."""
from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import pytest

from services.ingest.parse import MAX_HEADER_CHARS, Unparseable, get_part, parse_mail

FUZZ = Path(__file__).resolve().parent.parent / "data" / "fuzz"
MAX = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("name", sorted(p.name for p in FUZZ.iterdir()))
def test_fuzz_finding_parses_and_its_attachments_download(name):
    raw = (FUZZ / name).read_bytes()
    try:
        mail = parse_mail(raw, MAX)
    except Unparseable:
        return
    for att in mail.attachments:
        payload = get_part(raw, att["part"]).payload
        assert (len(payload), sha(payload)) == (att["size"], att["sha256"])


@pytest.mark.parametrize("name", [
    # the attached mail is a multipart whose start boundary is missing, with an 8-bit
    # byte in its body: the stdlib's BytesGenerator wrote that body via get_payload(),
    # which turns the byte into U+FFFD, then failed to encode it
    "rfc822-multipart-no-start-boundary-8bit.eml",
    # the attached mail's boundary parameter has a stray 8-bit byte after the quotes:
    # compat32 read the boundary as '"b"' + U+FFFD, which cannot be written as bytes
    "rfc822-boundary-with-8bit-byte.eml",
    # the attached mail's Subject has a \x1c (which str.splitlines() breaks at):
    # compat32's folding saw "an embedded header" and raised HeaderParseError
    "rfc822-subject-with-file-separator.eml",
])
def test_attached_mail_with_odd_bytes_is_written_back_as_its_exact_bytes(name):
    # before the fix: UnicodeEncodeError from parse_mail (the intake message was
    # requeued for ever) and from get_part (the download failed)
    raw = (FUZZ / name).read_bytes()
    inner = raw[raw.index(b"\n\n") + 2:]
    mail = parse_mail(raw, MAX)
    # the attached mail, whole; after it, its own parts (numbered below it)
    assert mail.attachments[0] == {"part": "1", "filename": "part-1.eml", "content_type": "message/rfc822",
                                   "size": len(inner), "sha256": sha(inner)}
    assert all(a["part"].startswith("1.") for a in mail.attachments[1:])
    assert [m["part"] for m in mail.attached_messages] == ["1"]
    assert get_part(raw, "1").payload == inner


@pytest.mark.parametrize("name, field, expected", [
    # a NUL inside the charset name: bytes.decode raised ValueError("embedded null character")
    ("html-charset-with-nul.eml", "body_html", "<p>caf\ufffd</p>\n"),
    # a codec that refuses errors="replace": bytes.decode raised UnicodeError
    ("text-charset-idna.eml", "body_text", "caf\ufffd\n"),
])
def test_body_in_a_charset_that_cannot_decode_is_read_as_utf8(name, field, expected):
    mail = parse_mail((FUZZ / name).read_bytes(), MAX)
    assert getattr(mail, field) == expected


def test_to_header_with_a_thousand_colons_names_nobody():
    # the registry cannot parse this To (AttributeError inside the stdlib), so header()
    # gives the decoded text, whose ~1200 colons each open a group inside a group for
    # email.utils.getaddresses: RecursionError from parse_mail
    mail = parse_mail((FUZZ / "to-with-a-thousand-colons.eml").read_bytes(), MAX)
    assert (mail.to, mail.sender_address) == ([], "fuzz@example.net")


def test_return_path_of_deeply_nested_groups_is_no_null_sender():
    # autoreply.classify's parseaddr(Return-Path) raised RecursionError
    mail = parse_mail((FUZZ / "return-path-nested-groups.eml").read_bytes(), MAX)
    assert mail.auto == {"automatic": False, "reasons": [], "bounce": False, "bounce_of": None}


def test_sender_the_registry_cannot_parse_is_valid_unicode():
    # the registry fails on a group in From (AttributeError in the stdlib); header()'s
    # fallback kept the 8-bit bytes as surrogate escapes, and the intake ledger's SQLite
    # refused the sender (UnicodeEncodeError at commit: the message was requeued for ever)
    mail = parse_mail((FUZZ / "from-group-with-8bit-bytes.eml").read_bytes(), MAX)
    assert (mail.sender, mail.sender_address) == ("Team: a@example.net; café \ufffd", "a@example.net")


def test_utf7_that_decodes_to_lone_surrogates_is_valid_unicode():
    # body: get_content() decoded "+2AA-" to "\ud800", which SQLite refuses;
    # filename*=utf-7''%2B2AA-x.bin: get_content_disposition() raised UnicodeEncodeError
    raw = (FUZZ / "utf7-lone-surrogates.eml").read_bytes()
    mail = parse_mail(raw, MAX)
    assert mail.body_text == "\ufffd"
    assert [(a["part"], a["filename"], a["size"]) for a in mail.attachments] == [("2", "\ufffdx.bin", 2)]
    assert get_part(raw, "2").payload == b"zz"


def test_huge_headers_of_encoded_words_take_bounded_memory():
    # found by the fuzzer's memory figures, not a crash: the stdlib's header parser
    # needs memory quadratic in a value's tokens (a 270 KB To took 1.4 GB; 512 KiB:
    # 5 GB). Values are now parsed up to parse.MAX_HEADER_CHARS.
    word = "\t=?utf-8?Q?date=3E2017-08-20T10:08:28.617=3C/pr?=\n"
    many = word * (256 * 1024 // len(word))
    raw = f'From: a@example.net\nTo: "T" <t@example.org>,\n{many}Subject: s\n{many}\nhi\n'.encode()
    tracemalloc.start()
    try:
        mail = parse_mail(raw, MAX)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 300 * 2**20
    assert mail.subject.startswith("s\tdate>2017-08-20T10:08:28.617</prdate>2017")
    assert len(mail.subject) < MAX_HEADER_CHARS


def test_encoded_word_decoding_to_a_lone_surrogate_in_a_mime_header_is_survived():
    # Content-Transfer-Encoding: =?utf-7?q?+2AA-?= - the header registry's own
    # sanitizing raised UnicodeEncodeError, from get_payload(decode=True) in parse_mail
    raw = (FUZZ / "cte-utf7-lone-surrogate.eml").read_bytes()
    mail = parse_mail(raw, MAX)
    assert [(a["part"], a["content_type"], a["size"]) for a in mail.attachments] == [
        ("1", "application/octet-stream", 2)]
    assert get_part(raw, "1").payload == b"zz"


def test_rfc2231_charset_whose_own_charset_has_a_nul_still_shows_the_body():
    # charset*=us-ascii\x01\x00''us-ascii: the header registry raised ValueError inside
    # the parser (the whole mail was Unparseable); with the registry's failure caught,
    # get_content_charset() raised the same ValueError (str(bytes, "...\0")) in parse_mail
    mail = parse_mail((FUZZ / "text-rfc2231-charset-with-nul.eml").read_bytes(), MAX)
    assert mail.body_text == "café\n"
