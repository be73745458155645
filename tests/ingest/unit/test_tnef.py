"""TNEF (winmail.dat) unpacking: services/ingest/tnef.py and its use in parse.py.

The samples are MimeKit's (../shared/corpora/mimekit/tnef, PROVENANCE.md). The
expected file names and sizes below were checked byte for byte against Debian's
``tnef`` 1.4.18 (``tnef --save-body -f FILE``): all 44 files it writes are
identical to ours (for an attached Outlook item, after the 16-byte IMessage
signature that tnefparse strips, so that the item can be unpacked in turn).
"""
from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict

import pytest

from osprey.testing import corpora_dir
from services.ingest import tnef
from services.ingest.parse import find_part, get_part, parse_bytes, parse_mail

TNEF_DIR = corpora_dir() / "mimekit" / "tnef"
MAX = 1024 * 1024

# sample → [(file name, size)] in sub-part order (attachments, then the body parts)
EXPECTED = {
    "MAPI_ATTACH_DATA_OBJ": [("VIA_Nytt_1402.doc", 61952), ("VIA_Nytt_1402.pdf", 213685),
                             ("VIA_Nytt_14021.htm", 68919), ("body.rtf", 2429)],
    "MAPI_OBJECT": [("Untitled_Attachment", 628240), ("body.rtf", 732)],
    "attachments": [("zappa_av1.jpg", 2937), ("bookmark.htm", 85805), ("body.rtf", 443)],
    "body": [("body.html", 5358)],
    "christmas": [("kitten-playing-with-a-christmas-tree.jpg", 375081), ("Untitled Attachment", 6508),
                  ("Untitled Attachment", 385301), ("body.rtf", 15237)],
    "data-before-name": [("AUTOEXEC.BAT", 0), ("CONFIG.SYS", 0), ("boot.ini", 289), ("body.rtf", 163)],
    "garbage-at-end": [],
    "long-filename": [("allproductsmar2000.dat", 279), ("body.rtf", 1066)],
    "missing-filenames": [("generpts.src", 61210), ("TechlibDEC99.doc", 33792), ("TechlibDEC99-JAN00.doc", 34304),
                          ("TechlibNOV99.doc", 33792), ("body.rtf", 1367)],
    "multi-name-property": [],
    "multi-value-attribute": [("208225__5_seconds__Voice_Mail.mp3", 10656), ("body.rtf", 1796)],
    "one-file": [("AUTHORS", 244)],
    "panic": [("image001.jpg", 11250), ("image002.jpg", 9583), ("image003.png", 7147), ("body.txt", 253),
              ("body.html", 10632)],
    "rtf": [("body.rtf", 593)],
    "triples": [("body.txt", 20), ("body.rtf", 247)],
    "two-files": [("AUTHORS", 244), ("README", 893)],
    "unicode-mapi-attr-name": [("spaconsole2.cfg", 8387), ("image001.png", 3815), ("image002.png", 3573),
                               ("image003.png", 3792), ("body.html", 6389)],
    "unicode-mapi-attr": [("example.dat", 1024), ("body.txt", 14), ("body.html", 1226)],
    "winmail": [("Untitled Attachment", 29200), ("Untitled Attachment", 68624), ("body.rtf", 13412)],
}
SHA256 = {   # of Debian tnef's output files
    ("MAPI_ATTACH_DATA_OBJ", "VIA_Nytt_1402.doc"): "9955935516d1407e0f833d91242f7416c68a66eae69e73d855ae17724e04fe60",
    ("attachments", "zappa_av1.jpg"): "bea844f30e0fcc20fad419a0d11032a6465da93c1da185a1196949955994409a",
    ("two-files", "README"): "d0f163180d6ad5d8d3b4e7c6bc0cc948d05888bff0f69dba375b946ea4c6b0fa",
    ("christmas", "kitten-playing-with-a-christmas-tree.jpg"):
        "f79d79bf20d19d17f4bbc92bc59485be362df93deaa92b71cc0d490d3b7ac935",
}


def sample(name: str) -> bytes:
    return (TNEF_DIR / f"{name}.tnef").read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_every_sample_is_covered():
    assert sorted(p.stem for p in TNEF_DIR.glob("*.tnef")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tnef_sample_unpacks_into_its_real_files(name):
    subs = tnef.subparts(sample(name))
    assert [(s.filename, len(s.payload)) for s in subs] == EXPECTED[name]
    for s in subs:
        if (name, s.filename) in SHA256:
            assert sha(s.payload) == SHA256[(name, s.filename)]


def test_binary_attachment_keeps_its_trailing_zero_bytes():
    # tnefparse alone strips trailing NULs off MAPI binary values: this Word file (an
    # OLE2 compound file, a whole number of 512-byte sectors) came out 418 bytes short
    doc = tnef.subparts(sample("MAPI_ATTACH_DATA_OBJ"))[0].payload
    assert doc.startswith(bytes.fromhex("d0cf11e0a1b11ae1")) and len(doc) % 512 == 0
    assert doc.endswith(b"\x00" * 418)


def test_content_types_come_from_the_mapi_tag_or_the_name():
    types = {(s.filename, s.content_type) for s in tnef.subparts(sample("panic"))}
    assert types == {("image001.jpg", "image/jpeg"), ("image002.jpg", "image/jpeg"), ("image003.png", "image/png"),
                     ("body.txt", "text/plain"), ("body.html", "text/html")}
    assert [s.content_type for s in tnef.subparts(sample("multi-value-attribute"))] == ["audio/mp3", "text/rtf"]
    assert tnef.subparts(sample("MAPI_ATTACH_DATA_OBJ"))[0].content_type == "application/msword"


def test_an_attached_outlook_item_is_tnef_again():
    subs = tnef.subparts(sample("christmas"))
    item = subs[1]
    assert (item.filename, item.content_type) == ("Untitled Attachment", "application/ms-tnef")
    assert tnef.is_tnef(item.content_type, item.filename, item.payload)
    assert [(s.filename, len(s.payload)) for s in tnef.subparts(item.payload)] == [("body.txt", 58),
                                                                                   ("body.rtf", 10202)]


def test_rtf_body_becomes_plain_text():
    body = tnef.subparts(sample("rtf"))[0]
    assert (body.filename, body.body) == ("body.rtf", True)
    assert body.payload.startswith(b"{\\rtf1")
    assert "Greg Allen\nSenior Engineer/QADirector Team\nCompuware Corporation" in body.text
    # the RTF's code page (ansicpg1252) decodes the Norwegian letters
    assert tnef.subparts(sample("MAPI_ATTACH_DATA_OBJ"))[-1].text.startswith(
        "Det er jo en velkjent sak at bodødamene er noe mer jålete/velkledde")


@pytest.mark.parametrize("data", [b"\x78\x9f\x3e\x22", b"\x78\x9f\x3e\x22\x01"])
def test_truncated_tnef_is_an_error_not_a_crash(data):
    with pytest.raises(tnef.TnefError):
        tnef.subparts(data)


@pytest.mark.parametrize("ctype, filename, data, expected", [
    ("application/ms-tnef", "winmail.dat", b"\x78\x9f\x3e\x22rest", True),
    ("application/vnd.ms-tnef", None, b"\x78\x9f\x3e\x22rest", True),
    ("application/octet-stream", "WINMAIL.DAT", b"\x78\x9f\x3e\x22rest", True),   # as some gateways send it
    ("application/ms-tnef", "winmail.dat", b"not tnef at all", False),          # no signature: a plain file
    ("application/octet-stream", "other.dat", b"\x78\x9f\x3e\x22rest", False),
])
def test_what_counts_as_tnef(ctype, filename, data, expected):
    assert tnef.is_tnef(ctype, filename, data) is expected


# --- in a mail ---------------------------------------------------------------------

def mail_with(tnef_bytes: bytes, body: str | None = "See the attachment.",
              ctype: str = "application/ms-tnef", filename: str = "winmail.dat") -> bytes:
    """A mail as Outlook sends one: [text/plain] + winmail.dat."""
    head = (b"From: Outlook User <user@example.com>\r\nTo: csirt@example.org\r\nSubject: TNEF\r\n"
            b"Message-ID: <tnef@example.com>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=\"B\"\r\n\r\n")
    text = (b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body.encode() + b"\r\n") if body else b""
    att = (f"--B\r\nContent-Type: {ctype}; name=\"{filename}\"\r\n"
           f"Content-Disposition: attachment; filename=\"{filename}\"\r\n"
           "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(tnef_bytes)
    return head + text + att + b"--B--\r\n"


def listing(mail) -> list[tuple]:
    return [(a["part"], a["filename"], a["content_type"], a["size"]) for a in mail.attachments]


def test_outlook_mail_lists_the_files_inside_winmail_dat():
    raw = mail_with(sample("MAPI_ATTACH_DATA_OBJ"))
    mail = parse_mail(raw, MAX)
    assert mail.body_text == "See the attachment."
    # winmail.dat (part 2) is replaced by what it holds; the RTF body is kept as a
    # file because the mail has a text of its own
    assert listing(mail) == [("2.1", "VIA_Nytt_1402.doc", "application/msword", 61952),
                             ("2.2", "VIA_Nytt_1402.pdf", "application/pdf", 213685),
                             ("2.3", "VIA_Nytt_14021.htm", "text/html", 68919),
                             ("2.4", "body.rtf", "text/rtf", 2429)]
    doc = get_part(raw, "2.1")
    assert (doc.part, doc.filename, doc.content_type, sha(doc.payload)) == (
        "2.1", "VIA_Nytt_1402.doc", "application/msword", SHA256[("MAPI_ATTACH_DATA_OBJ", "VIA_Nytt_1402.doc")])
    assert get_part(raw, "2").payload == sample("MAPI_ATTACH_DATA_OBJ")   # the winmail.dat itself, still
    for att in mail.attachments:
        assert sha(get_part(raw, att["part"]).payload) == att["sha256"]
    with pytest.raises(KeyError):
        get_part(raw, "2.5")


def test_a_body_only_in_winmail_dat_becomes_the_text():
    mail = parse_mail(mail_with(sample("rtf"), body=None), MAX)
    assert "Greg Allen\nSenior Engineer/QADirector Team" in mail.body_text
    assert mail.attachments == []            # the RTF body is the text now
    both = parse_mail(mail_with(sample("panic"), body=None), MAX)
    assert both.body_text.startswith("________________________________\r\nFrom: Andreas Wallenberg")
    assert both.body_html.startswith("<html>")
    assert listing(both) == [("1.1", "image001.jpg", "image/jpeg", 11250), ("1.2", "image002.jpg", "image/jpeg", 9583),
                             ("1.3", "image003.png", "image/png", 7147)]


def test_winmail_dat_sent_as_octet_stream_is_unpacked_too():
    mail = parse_mail(mail_with(sample("two-files"), ctype="application/octet-stream"), MAX)
    assert listing(mail) == [("2.1", "AUTHORS", "application/octet-stream", 244),
                             ("2.2", "README", "application/octet-stream", 893)]


def test_undecodable_or_empty_winmail_dat_stays_one_file():
    broken = b"\x78\x9f\x3e\x22"          # the signature and nothing else
    mail = parse_mail(mail_with(broken), MAX)
    assert listing(mail) == [("2", "winmail.dat", "application/ms-tnef", 4)]
    assert mail.defects == ["TnefUndecodable"]
    empty = parse_mail(mail_with(sample("garbage-at-end")), MAX)
    assert listing(empty) == [("2", "winmail.dat", "application/ms-tnef", len(sample("garbage-at-end")))]


def test_outlook_items_inside_winmail_dat_are_unpacked_below_it():
    raw = (TNEF_DIR / "rich-text.eml").read_bytes()
    mail = parse_mail(raw, MAX)
    assert mail.body_text.lstrip().startswith("You've made this a Christmas to remember")
    assert listing(mail) == [
        ("2.1", "kitten-playing-with-a-christmas-tree.jpg", "image/jpeg", 375081),
        ("2.2.1", "body.txt", "text/plain", 58), ("2.2.2", "body.rtf", "text/rtf", 10202),
        ("2.3.1", "kitten-playing-with-a-christmas-tree.jpg", "image/jpeg", 375081),
        ("2.3.2", "body.txt", "text/plain", 58), ("2.3.3", "body.rtf", "text/rtf", 337),
        ("2.4", "body.rtf", "text/rtf", 15237)]
    msg = parse_bytes(raw)
    for att in mail.attachments:
        part = find_part(msg, att["part"])
        assert (part.filename, sha(part.payload)) == (att["filename"], att["sha256"])
    assert sha(find_part(msg, "2.1").payload) == SHA256[("christmas", "kitten-playing-with-a-christmas-tree.jpg")]


def test_koi8_mail_with_a_tnef_beside_its_text():
    mail = parse_mail((TNEF_DIR / "ukr.eml").read_bytes(), MAX)
    assert mail.body_text.startswith("шостий")
    assert listing(mail) == [("2.1", "body.txt", "text/plain", 51), ("2.2", "body.html", "text/html", 836)]
    assert get_part((TNEF_DIR / "ukr.eml").read_bytes(), "2.1").payload.decode("utf-8").startswith("шостий")


def test_winmail_dat_inside_a_forwarded_mail():
    inner = mail_with(sample("one-file"))
    raw = (b"From: analyst@example.org\r\nSubject: Fwd: TNEF\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=\"O\"\r\n\r\n--O\r\nContent-Type: text/plain\r\n\r\nfwd\r\n"
           b"--O\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--O--\r\n")
    mail = parse_mail(raw, MAX)
    assert listing(mail) == [("2", "part-2.eml", "message/rfc822", len(get_part(raw, "2").payload)),
                             ("2.2.1", "AUTHORS", "application/octet-stream", 244)]
    assert [m["attachments"] for m in mail.attached_messages] == [["2.2.1"]]
    assert asdict(get_part(raw, "2.2.1"))["payload"] == tnef.subparts(sample("one-file"))[0].payload


def test_a_crafted_tnef_cannot_make_unpacking_quadratic():
    """tnefparse copies the rest of the stream for every object: 60,000 tiny objects
    before a 60 MB one would copy 3.6 TB. Such a stream is refused at once (and the
    mail keeps it as one winmail.dat file)."""
    import struct
    import time

    def obj(name: int, data: bytes) -> bytes:
        return struct.pack("<BHHI", 1, name, 6, len(data)) + data + b"\x00\x00"
    crafted = tnef.SIGNATURE + b"\x01\x00" + obj(1, b"abcd") * 60_000 + obj(0x800C, b"x" * 60_000_000)
    start = time.process_time()
    with pytest.raises(tnef.TnefError, match="too many objects for its size"):
        tnef.subparts(crafted)
    assert time.process_time() - start < 1
    # the samples, which copy 3 to 22 times their size, are far from the limit
    for name in EXPECTED:
        tnef._check_cost(sample(name))
