"""Outgoing mail bytes: the ticket tag, threading headers, and forwards whose attached
original is the stored mail byte for byte — its DKIM and OpenPGP signatures still
verify on the copy the receiver gets."""
from __future__ import annotations

import email
import email.policy
import os
import shutil
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pytest

from osprey.testing import corpora_dir
from services.notify import compose

DKIM = corpora_dir() / "mimekit" / "dkim"
WHEN = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def headers(**extra):
    return compose.envelope_headers(from_name="Osprey abuse", from_address="abuse@csirt.example",
                                    to=["noc@isp.example"], cc=["soc@reporter.example"],
                                    subject="[Osprey #42] Fwd: Scanning", msg_id="<osprey.abc@csirt.example>",
                                    date=WHEN, extra=extra)


@pytest.mark.parametrize("subject, expected", [
    ("Scanning", "[Osprey #42] Scanning"),
    ("Re: [Osprey #42] Scanning", "Re: [Osprey #42] Scanning"),
    ("Re: [osprey  # 42 ] Scanning", "Re: [osprey # 42 ] Scanning"),
    ("[Osprey #4] other ticket", "[Osprey #42] [Osprey #4] other ticket"),
    ("", "[Osprey #42]"),
    ("  many   spaces\n folded ", "[Osprey #42] many spaces folded"),
])
def test_tag_subject(subject, expected):
    assert compose.tag_subject(subject, "Osprey", 42) == expected


def test_reply_subject_does_not_pile_up_prefixes():
    assert compose.reply_subject("AW: Re: Fwd: Scanning") == "Re: Scanning"
    assert compose.reply_subject("Scanning", "Fwd") == "Fwd: Scanning"


def test_threading_headers_continue_the_references():
    original = (b"From: a@b.example\r\nMessage-ID: <3@b.example>\r\nIn-Reply-To: <2@b.example>\r\n"
                b"References: <1@b.example>\r\n <2@b.example>\r\n\r\nbody\r\n")
    assert compose.threading_headers(original, "<3@b.example>") == {
        "In-Reply-To": "<3@b.example>", "References": "<1@b.example> <2@b.example> <3@b.example>"}
    assert compose.threading_headers(None, "<3@b.example>") == {"In-Reply-To": "<3@b.example>",
                                                                 "References": "<3@b.example>"}
    assert compose.threading_headers(original, None) == {}


def test_a_text_mail_whole():
    mail = compose.text_mail(headers(**{"In-Reply-To": "<r1@reporter.example>", "X-Osprey-Loop": "csirt.example"}),
                             "Dear NOC,\n\nplease stop it.\n")
    assert mail == (b"From: Osprey abuse <abuse@csirt.example>\r\nTo: noc@isp.example\r\n"
                    b"Cc: soc@reporter.example\r\nSubject: [Osprey #42] Fwd: Scanning\r\n"
                    b"Date: Wed, 25 Nov 2026 12:00:00 +0000\r\nMessage-ID: <osprey.abc@csirt.example>\r\n"
                    b"In-Reply-To: <r1@reporter.example>\r\nX-Osprey-Loop: csirt.example\r\nMIME-Version: 1.0\r\n"
                    b"Content-Type: text/plain; charset=\"us-ascii\"\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
                    b"Dear NOC,\r\n\r\nplease stop it.\r\n")


def test_non_ascii_text_is_quoted_printable_and_headers_encoded():
    mail = compose.text_mail(compose.envelope_headers(
        from_name="CSIRT Zürich", from_address="abuse@csirt.example", to=["noc@isp.example"], cc=[],
        subject="[Osprey #1] Größe", msg_id="<x@csirt.example>", date=WHEN), "Grüße\n")
    assert mail.isascii()
    msg = email.message_from_bytes(mail, policy=email.policy.default)
    assert (str(msg["From"]), str(msg["Subject"]), msg.get_content().replace("\r\n", "\n")) == (
        "CSIRT Zürich <abuse@csirt.example>", "[Osprey #1] Größe", "Grüße\n")
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"


def corpus_mails():
    return sorted(p for p in DKIM.glob("*.msg"))


@pytest.mark.parametrize("path", corpus_mails(), ids=lambda p: p.name)
def test_forward_attaches_the_original_byte_exact(path):
    original = path.read_bytes()
    mail, eight_bit = compose.forward_attached(headers(), "See the attached report.\n", original)
    attached = compose.extract_attached(mail)
    assert attached == compose.canonical(original)
    if b"\r\n" in original:
        assert attached == original            # arrived over SMTP: not one byte differs
    # any MIME parser finds the same: a message/rfc822 part whose headers are the original's
    msg = email.message_from_bytes(mail, policy=email.policy.default)
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "message/rfc822"]
    inner = parts[1].get_content()
    assert inner["Message-ID"] == email.message_from_bytes(original)["Message-ID"]
    assert eight_bit is (not original.isascii())


def _dkim_dns(name, timeout=5):
    pub = (DKIM / "gmail.pub").read_text()
    key = "".join(line for line in pub.splitlines() if "-----" not in line)
    assert name == b"20120113._domainkey.gmail.com."
    return f"v=DKIM1; k=rsa; p={key}".encode()


@pytest.mark.parametrize("path", [p for p in corpus_mails() if b"d=gmail.com" in p.read_bytes()],
                         ids=lambda p: p.name)
def test_dkim_still_verifies_on_the_forwarded_copy(path):
    import dkim                              # dkimpy (a pinned test dependency)
    original = path.read_bytes()
    assert dkim.verify(original, dnsfunc=_dkim_dns)
    mail, _ = compose.forward_attached(headers(), "See the attached report.\n", original)
    attached = compose.extract_attached(mail)
    assert dkim.verify(attached, dnsfunc=_dkim_dns)
    # and the check is real: one changed byte in the attached copy breaks it
    tampered = attached.replace(b"Subject: ", b"Subject: X", 1) if b"Subject: " in attached else attached + b"x"
    assert not dkim.verify(tampered, dnsfunc=_dkim_dns)


@pytest.fixture(scope="module")
def gpg_home():
    assert shutil.which("gpg"), "gpg is missing: scripts/bootstrap.sh installs gnupg"
    home = tempfile.mkdtemp(prefix="ng", dir="/tmp")
    os.chmod(home, 0o700)
    subprocess.run(["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                    "--quick-gen-key", "Reporter <soc@reporter.example>", "ed25519", "sign", "never"],
                   check=True, capture_output=True)
    yield home
    subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True)
    shutil.rmtree(home, ignore_errors=True)


def pgp_signed_mail(home: str) -> bytes:
    """A PGP/MIME signed report as a mail client writes it (RFC 3156), CRLF."""
    content = (b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"
               b"We saw 192.0.2.7 scanning our network.\r\n-- \r\nSOC\r\n")
    sig = subprocess.run(["gpg", "--homedir", home, "--batch", "--armor", "--detach-sign", "--digest-algo", "SHA256"],
                         input=content, check=True, capture_output=True).stdout.replace(b"\n", b"\r\n")
    return (b"From: SOC <soc@reporter.example>\r\nTo: abuse@csirt.example\r\nSubject: Scanning\r\n"
            b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <signed1@reporter.example>\r\nMIME-Version: 1.0\r\n"
            b'Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; '
            b'boundary="sig"\r\n\r\n--sig\r\n' + content + b"\r\n--sig\r\n"
            b"Content-Type: application/pgp-signature; name=signature.asc\r\n\r\n" + sig + b"\r\n--sig--\r\n")


def verify_pgp_mime(home: str, mail: bytes) -> bool:
    """Verify a multipart/signed mail over the exact bytes of its first part."""
    import re
    head, _, body = mail.partition(b"\r\n\r\n")
    boundary = b"--" + re.search(rb'boundary="?([^";\r\n]+)"?', head).group(1)
    pieces = (b"\r\n" + body).split(b"\r\n" + boundary)   # [preamble, part 1, part 2, "--" epilogue]
    signed = pieces[1][2:]
    signature = pieces[2][2:].split(b"\r\n\r\n", 1)[1]
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "sig.asc").write_bytes(signature)
        Path(tmp, "data").write_bytes(signed)
        proc = subprocess.run(["gpg", "--homedir", home, "--batch", "--verify", f"{tmp}/sig.asc", f"{tmp}/data"],
                              capture_output=True)
    return proc.returncode == 0


def test_pgp_signature_still_verifies_on_the_forwarded_copy(gpg_home):
    original = pgp_signed_mail(gpg_home)
    assert verify_pgp_mime(gpg_home, original)
    mail, _ = compose.forward_attached(headers(), "Forwarding the signed report.\n", original)
    attached = compose.extract_attached(mail)
    assert attached == original
    assert verify_pgp_mime(gpg_home, attached)
    assert not verify_pgp_mime(gpg_home, attached.replace(b"192.0.2.7", b"192.0.2.8"))


def test_an_lf_original_is_attached_with_crlf_and_8bit_when_it_must():
    original = "From: a@b.example\nSubject: Grüße\nMessage-ID: <lf@b.example>\n\nÄrger mit 192.0.2.1\n".encode()
    mail, eight_bit = compose.forward_attached(headers(), "fwd\n", original)
    assert compose.extract_attached(mail) == original.replace(b"\n", b"\r\n")
    assert eight_bit is True
    assert b"Content-Transfer-Encoding: 8bit" in mail


def test_an_original_with_overlong_lines_goes_as_base64_file_with_the_same_bytes():
    original = b"From: a@b.example\r\nSubject: long\r\n\r\n" + b"x" * 2000 + b"\r\n"
    mail, eight_bit = compose.forward_attached(headers(), "fwd\n", original)
    msg = email.message_from_bytes(mail, policy=email.policy.default)
    att = list(msg.iter_parts())[1]
    assert (att.get_content_type(), att.get_filename(), eight_bit) == ("application/octet-stream",
                                                                       "forwarded-message.eml", False)
    assert att.get_content() == original
    assert all(len(line) <= 998 for line in mail.split(b"\r\n"))


def test_the_boundary_never_occurs_in_the_original():
    original = b"From: a@b.example\r\n\r\n--=_osprey_ looks like ours\r\n"
    mail, _ = compose.forward_attached(headers(), "fwd\n", original)
    assert compose.extract_attached(mail) == original


def test_inline_forward_quotes_headers_and_text():
    text = compose.inline_forward_text("FYI.\n", {"from": "SOC <soc@reporter.example>", "date": "Wed, 25 Nov 2026",
                                                 "subject": "Scanning", "to": ["abuse@csirt.example"], "cc": [],
                                                 "body_text": "We saw 192.0.2.7.\n"})
    assert text == ("FYI.\n\n---------- Forwarded message ----------\nFrom: SOC <soc@reporter.example>\n"
                    "Date: Wed, 25 Nov 2026\nSubject: Scanning\nTo: abuse@csirt.example\n\nWe saw 192.0.2.7.\n")


def test_addresses():
    assert compose.addresses(["NOC <noc@isp.example>", "a@b.example, c@d.example", "noc@isp.example"], "to") == [
        "noc@isp.example", "a@b.example", "c@d.example"]
    from services.notify.exceptions import BadRequest
    with pytest.raises(BadRequest, match="not a mail address in to"):
        compose.addresses(["alice"], "to")

