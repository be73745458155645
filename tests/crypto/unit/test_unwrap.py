"""services/crypto/unwrap.py on mail written by real gpg and openssl: PGP/MIME,
inline PGP, S/MIME; and bad input, which must become a status, never an exception."""
from __future__ import annotations

import hashlib
import os
import time
from email import policy
from email.parser import BytesParser

import pytest

from services.crypto import mime, proc, unwrap as unwrap_mod
from services.crypto.unwrap import VERDICTS, unwrap

from ..world import (CRLF, attachment, headers, mail, multipart, pgp_encrypted, pgp_signed, smime_enveloped,
                     smime_opaque, smime_signed, text_part)

ALICE = "Alice Reporter <alice@example.net>"
BINARY = bytes(range(256)) * 40 + b"\x00\xff\r\n\r\x00"


def parsed(result: dict):
    return BytesParser(policy=policy.default).parsebytes(result["mime"])


def body_text(result: dict) -> str:
    msg = parsed(result)
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content().replace("\r\n", "\n") if part is not None else ""


def attachments(result: dict) -> dict[str, bytes]:
    return {p.get_filename(): p.get_payload(decode=True) for p in parsed(result).iter_attachments()}


def check(result: dict, verdict: str):
    sec = result["security"]
    assert sec["verdict"] == verdict, (sec["verdict"], sec["warnings"], sec["errors"])
    assert sec["verdict"] in VERDICTS
    return sec


def rich_entity(text: str = "Hello CSIRT,\nthe host 192.0.2.10 serves malware.\n") -> bytes:
    return multipart("mixed", [text_part(text), attachment("notes.txt", b"log line 1\nlog line 2\n", "text/plain"),
                               attachment("sample.bin", BINARY)])


# --- PGP/MIME ------------------------------------------------------------------------------

def test_pgp_mime_signed_text_is_verified(world, keyring):
    raw = mail(headers(ALICE), pgp_signed(world, world.people["alice"], text_part("Host 192.0.2.1 is bad.\n")))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["signature"] == "good" and sec["trusted"] and sec["covers_all"] and sec["signer_matches_from"]
    assert sec["signer"]["fingerprint"] == world.people["alice"].fpr
    assert sec["signer"]["addresses"] == ["alice@example.net"]
    assert sec["warnings"] == [] and sec["encrypted"] is False
    assert r["changed"] is True
    assert body_text(r) == "Host 192.0.2.1 is bad.\n"
    assert r["parts"] == [{"part": "1", "content_type": "text/plain", "filename": None, "attachment": False,
                           "encrypted": False, "signatures": [1], "partial": False}]
    msg = parsed(r)
    assert msg["Subject"] == "Incident report" and msg["From"] == ALICE


def test_pgp_mime_signed_with_text_and_binary_attachments(world, keyring):
    raw = mail(headers(ALICE), pgp_signed(world, world.people["alice"], rich_entity()))
    r = unwrap(raw, keyring)
    check(r, "verified")
    assert [(p["part"], p["content_type"], p["signatures"]) for p in r["parts"]] == [
        ("1", "text/plain", [1]), ("2", "text/plain", [1]), ("3", "application/octet-stream", [1])]
    files = attachments(r)
    assert files["notes.txt"] == b"log line 1\nlog line 2\n"
    assert files["sample.bin"] == BINARY
    assert "192.0.2.10" in body_text(r)


def test_pgp_mime_encrypted_only(world, keyring):
    csirt = world.people["csirt"]
    raw = mail(headers(ALICE, subject="..."), pgp_encrypted(world, [csirt], rich_entity()))
    r = unwrap(raw, keyring)
    sec = check(r, "encrypted-only")
    assert sec["encrypted"] and sec["decrypted"] and sec["fully_encrypted"]
    assert sec["signature"] == "none" and sec["signer"] is None
    assert attachments(r)["sample.bin"] == BINARY
    assert all(p["encrypted"] for p in r["parts"]) and len(r["parts"]) == 3


def test_pgp_mime_signed_and_encrypted_combined(world, keyring):
    p = world.people
    raw = mail(headers(ALICE), pgp_encrypted(world, [p["csirt"]], rich_entity(), signer=p["alice"]))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["encrypted"] and sec["decrypted"] and sec["signatures"][0]["where"] == "encrypted"
    assert attachments(r)["sample.bin"] == BINARY
    assert all(p["encrypted"] and p["signatures"] == [1] for p in r["parts"])


def test_pgp_mime_signed_then_encrypted_nested(world, keyring):
    p = world.people
    signed = pgp_signed(world, p["alice"], text_part("Nested method: signed, then encrypted.\n"))
    raw = mail(headers(ALICE), pgp_encrypted(world, [p["csirt"]], signed))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["encrypted"] and sec["signatures"][0]["where"] == "multipart/signed"
    assert body_text(r) == "Nested method: signed, then encrypted.\n"


def test_pgp_mime_protected_headers_give_the_real_subject(world, keyring):
    p = world.people
    inner = text_part("Secret details.\n", extra=[])
    inner = inner.replace(b"charset=us-ascii", b'charset=us-ascii; protected-headers="v1"', 1)
    inner = b"Subject: Breach at ACME, case 7\r\nFrom: " + ALICE.encode() + CRLF + inner
    raw = mail(headers(ALICE, subject="..."), pgp_encrypted(world, [p["csirt"]], inner, signer=p["alice"]))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["protected_headers"]["subject"] == "Breach at ACME, case 7"
    assert parsed(r)["Subject"] == "Breach at ACME, case 7"


def test_pgp_mime_tampered_content_is_bad(world, keyring):
    raw = mail(headers(ALICE), pgp_signed(world, world.people["alice"], text_part("Pay 100 EUR to account 1.\n")))
    raw = raw.replace(b"Pay 100 EUR", b"Pay 900 EUR")
    r = unwrap(raw, keyring)
    sec = check(r, "bad")
    assert sec["signature"] == "bad"
    assert "Pay 900 EUR" in body_text(r)      # shown, marked bad


def test_pgp_mime_signature_by_key_not_in_keyring(world, keyring):
    carol = world.people["carol"]
    raw = mail(headers("Carol <carol@example.net>"), pgp_signed(world, carol, text_part("hi\n")))
    sec = check(unwrap(raw, keyring), "unverified")
    assert sec["signature"] == "unknown-key" and not sec["trusted"]
    assert sec["signer"]["key_id"] == carol.fpr[-16:]


def test_pgp_mime_untrusted_key_is_not_verified(world, keyring):
    bob = world.people["bob"]
    raw = mail(headers("Bob Other <bob@example.com>"), pgp_signed(world, bob, text_part("hi\n")))
    sec = check(unwrap(raw, keyring), "unverified")
    assert sec["signature"] == "good" and sec["signer_matches_from"] and sec["covers_all"]
    assert sec["trusted"] is False
    assert any("not trusted" in w for w in sec["warnings"])


def test_pgp_signature_by_expired_key(world, keyring):
    old = world.people["old"]
    entity = text_part("Written in 2020.\n")
    sig = world.detach_sign(old, mime.canonical(entity), faked_time="20200601T000000!")
    sig_part = b"Content-Type: application/pgp-signature" + CRLF + CRLF + sig
    raw = mail(headers("Old Timer <old@example.net>"),
               multipart("signed", [entity, sig_part], params='; protocol="application/pgp-signature"'))
    sec = check(unwrap(raw, keyring), "unverified")
    assert sec["signature"] == "expired" and sec["signer_matches_from"]


def test_pgp_signature_by_revoked_key(world, keyring):
    sig_part = b"Content-Type: application/pgp-signature" + CRLF + CRLF + world.rev_signature
    raw = mail(headers("Revoked Person <rev@example.net>"),
               multipart("signed", [world.rev_entity, sig_part], params='; protocol="application/pgp-signature"'))
    sec = check(unwrap(raw, keyring), "unverified")
    assert sec["signature"] == "revoked"


def test_pgp_mime_encrypted_to_someone_else(world, keyring):
    raw = mail(headers(ALICE), pgp_encrypted(world, [world.people["bob"]], text_part("not for you\n")))
    r = unwrap(raw, keyring)
    sec = check(r, "undecryptable")
    assert sec["encrypted"] and not sec["decrypted"]
    assert any("no secret key" in e for e in sec["errors"])
    assert r["mime"] == raw and r["changed"] is False


# --- inline PGP ------------------------------------------------------------------------------

def inline_mail(frm: str, text: bytes, charset: str = "us-ascii", cte: str = "7bit") -> bytes:
    body = text if cte != "quoted-printable" else mime.encode_qp(text)
    entity = (f"Content-Type: text/plain; charset={charset}".encode() + CRLF
              + f"Content-Transfer-Encoding: {cte}".encode() + CRLF + CRLF + body)
    return mail(headers(frm), entity)


def test_inline_clearsigned(world, keyring):
    text = world.clearsign(world.people["alice"], b"route: 192.0.2.0/24\norigin: AS64500\n")
    r = unwrap(inline_mail(ALICE, text), keyring)
    check(r, "verified")
    shown = body_text(r)
    assert shown.strip() == "route: 192.0.2.0/24\norigin: AS64500"
    assert "BEGIN PGP" not in shown


def test_inline_clearsigned_utf8_quoted_printable(world, keyring):
    text = world.clearsign(world.people["alice"], "Grüße aus Zürich: 198.51.100.7\n".encode())
    r = unwrap(inline_mail(ALICE, text, charset="utf-8", cte="quoted-printable"), keyring)
    check(r, "verified")
    assert "Grüße aus Zürich: 198.51.100.7" in body_text(r)


def test_inline_encrypted(world, keyring):
    armored = world.encrypt([world.people["csirt"]], "Vertraulich: 203.0.113.9\n".encode())
    r = unwrap(inline_mail(ALICE, armored), keyring)
    sec = check(r, "encrypted-only")
    assert sec["fully_encrypted"]
    assert body_text(r).strip() == "Vertraulich: 203.0.113.9"


def test_inline_signed_and_encrypted(world, keyring):
    p = world.people
    armored = world.encrypt([p["csirt"]], b"Signed and sealed.\n", signer=p["alice"])
    r = unwrap(inline_mail(ALICE, armored), keyring)
    sec = check(r, "verified")
    assert sec["encrypted"] and r["parts"][0]["encrypted"] and r["parts"][0]["signatures"] == [1]


def test_inline_encrypted_clearsigned_text(world, keyring):
    """Some clients encrypt a clearsigned text: the signature inside is checked too."""
    p = world.people
    signed = world.clearsign(p["alice"], b"clearsigned inside\n")
    armored = world.encrypt([p["csirt"]], signed)
    r = unwrap(inline_mail(ALICE, armored), keyring)
    sec = check(r, "verified")
    assert sec["encrypted"] and body_text(r).strip() == "clearsigned inside"


def test_inline_old_style_signed_message(world, keyring):
    """``gpg --sign --armor``: a PGP MESSAGE that is signed, not encrypted."""
    armored = world.sign_opaque(world.people["alice"], b"old style signed text\n")
    assert b"BEGIN PGP MESSAGE" in armored
    r = unwrap(inline_mail(ALICE, armored), keyring)
    check(r, "verified")
    assert body_text(r).strip() == "old style signed text"


def test_inline_quoted_signature_is_just_text(world, keyring):
    signed = world.clearsign(world.people["alice"], b"original statement\n")
    quoted = b"".join(b"> " + line for line in signed.splitlines(keepends=True))
    raw = inline_mail("Mallory <mallory@evil.example>", b"Alice wrote:\n" + quoted + b"\nI agree.\n")
    r = unwrap(raw, keyring)
    sec = check(r, "none")
    assert sec["signatures"] == [] and r["mime"] == raw


def test_inline_nested_signature_is_covered_by_the_outer_one(world, keyring):
    p = world.people
    inner = world.clearsign(p["bob"], b"inner statement by bob\n")
    outer = world.clearsign(p["alice"], b"Forwarding Bob's signed note:\n" + inner)
    r = unwrap(inline_mail(ALICE, outer), keyring)
    sec = check(r, "verified")
    assert len(sec["signatures"]) == 1 and sec["signer"]["fingerprint"] == p["alice"].fpr
    assert "-----BEGIN PGP SIGNED MESSAGE-----" in body_text(r)   # bob's, shown as text alice signed


@pytest.mark.parametrize("name,ctype,armor", [("report.pdf.gpg", "application/octet-stream", False),
                                              ("report.pdf.pgp", "application/pgp-encrypted", False),
                                              ("report.pdf.asc", "text/plain", True)])
def test_encrypted_attachments(world, keyring, name, ctype, armor):
    data = b"%PDF-1.4 fake " + BINARY
    blob = world.encrypt([world.people["csirt"]], data, armor=armor)
    raw = mail(headers(ALICE), multipart("mixed", [text_part("see attachment\n"), attachment(name, blob, ctype)]))
    r = unwrap(raw, keyring)
    sec = check(r, "encrypted-only")
    assert attachments(r) == {"report.pdf": data}
    assert r["parts"][1]["encrypted"] and r["parts"][1]["filename"] == "report.pdf"
    assert r["parts"][1]["content_type"] == "application/pdf"
    assert not sec["fully_encrypted"]        # the body text was not encrypted


def test_signed_binary_attachment_old_style(world, keyring):
    """A .gpg attachment that is signed (gpg --sign), not encrypted."""
    data = BINARY
    blob = world.sign_opaque(world.people["alice"], data, armor=False)
    raw = mail(headers(ALICE), multipart("mixed", [attachment("dump.bin.gpg", blob)]))
    r = unwrap(raw, keyring)
    check(r, "verified")
    assert attachments(r) == {"dump.bin": data}


def test_detached_signature_over_an_attachment(world, keyring):
    data = b"indicator list\n198.51.100.1\n"
    sig = world.detach_sign(world.people["alice"], data)
    raw = mail(headers(ALICE), multipart("mixed", [text_part("list attached\n"),
                                                   attachment("iocs.txt", data, "text/plain"),
                                                   attachment("iocs.txt.asc", sig, "application/pgp-signature")]))
    r = unwrap(raw, keyring)
    sec = check(r, "none")       # the mail itself is not signed
    assert sec["signatures"][0]["attachment"] is True and sec["signatures"][0]["status"] == "good"
    by_name = {p["filename"]: p for p in r["parts"]}
    assert by_name["iocs.txt"]["signatures"] == [1]
    assert by_name["iocs.txt.asc"]["signatures"] == []


# --- S/MIME ----------------------------------------------------------------------------------

def test_smime_multipart_signed(pki, keyring):
    raw = mail(headers(ALICE), smime_signed(pki, pki.certs["alice"], rich_entity()))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["signer"]["fingerprint"] == pki.certs["alice"].fingerprint
    assert sec["signer"]["issuer"] == "CN=Osprey Test CA"
    assert attachments(r)["sample.bin"] == BINARY


def test_smime_opaque_signed(pki, keyring):
    raw = mail(headers(ALICE), smime_opaque(pki, pki.certs["alice"], text_part("opaque signed text\n")))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["signatures"][0]["where"] == "opaque"
    assert body_text(r) == "opaque signed text\n"


@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-128-gcm"])
def test_smime_enveloped(pki, keyring, cipher):
    raw = mail(headers(ALICE), smime_enveloped(pki, [pki.certs["csirt"]], rich_entity(), cipher))
    r = unwrap(raw, keyring)
    sec = check(r, "encrypted-only")
    assert sec["decrypted"] and sec["fully_encrypted"]
    assert attachments(r)["sample.bin"] == BINARY


def test_smime_signed_inside_enveloped(pki, keyring):
    signed = smime_signed(pki, pki.certs["alice"], text_part("signed, then enveloped\n"))
    raw = mail(headers(ALICE), smime_enveloped(pki, [pki.certs["csirt"]], signed, "aes-256-gcm"))
    r = unwrap(raw, keyring)
    sec = check(r, "verified")
    assert sec["encrypted"] and body_text(r) == "signed, then enveloped\n"


def test_smime_opaque_inside_enveloped(pki, keyring):
    signed = smime_opaque(pki, pki.certs["alice"], text_part("opaque in enveloped\n"))
    raw = mail(headers(ALICE), smime_enveloped(pki, [pki.certs["csirt"]], signed))
    check(unwrap(raw, keyring), "verified")


def test_smime_revoked_expired_and_untrusted_certificates(pki, keyring):
    c = pki.certs
    cases = [(c["rita"], "Rita Revoked <rita@example.net>", "revoked"),
             (c["old"], "Old Timer <old@example.net>", "expired"),
             (c["mallory"], "Mallory <mallory@evil.example>", "good")]
    for cert, frm, status in cases:
        sec = check(unwrap(mail(headers(frm), smime_signed(pki, cert, text_part("hi\n"))), keyring), "unverified")
        assert sec["signature"] == status, (frm, sec)
        assert sec["trusted"] is False
        assert sec["signer_matches_from"] is True


def test_smime_encrypted_to_someone_else(pki, keyring):
    raw = mail(headers(ALICE), smime_enveloped(pki, [pki.certs["bob"]], text_part("for bob\n")))
    sec = check(unwrap(raw, keyring), "undecryptable")
    assert sec["errors"] and "no private key" in sec["errors"][0]


def test_smime_tampered_is_bad(pki, keyring):
    raw = mail(headers(ALICE), smime_signed(pki, pki.certs["alice"], text_part("Transfer 100 EUR\n")))
    raw = raw.replace(b"Transfer 100 EUR", b"Transfer 999 EUR")
    assert check(unwrap(raw, keyring), "bad")["signature"] == "bad"


# --- plain mail, and bad input -----------------------------------------------------------------

def test_plain_mail_is_left_alone(keyring):
    raw = mail(headers(ALICE), text_part("no crypto here\n"))
    r = unwrap(raw, keyring)
    sec = check(r, "none")
    assert r["mime"] == raw and r["changed"] is False and r["parts"] == []
    assert sec["signature"] == "none" and sec["from"] == "alice@example.net"


@pytest.mark.parametrize("raw", [b"", b"\x00\xff" * 100, b"no header at all", b"Content-Type: multipart/mixed\r\n\r\n",
                                 b"Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n--x--\r\n",
                                 b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!"])
def test_garbage_never_raises(keyring, raw):
    r = unwrap(raw, keyring)
    assert r["security"]["verdict"] in ("none", "undecryptable", "unverified")
    assert isinstance(r["mime"], bytes)


def test_corrupt_inline_armor(world, keyring):
    text = world.clearsign(world.people["alice"], b"statement\n")
    broken = text.replace(b"-----END PGP SIGNATURE-----", b"")[:-30] + b"\n-----END PGP SIGNATURE-----\n"
    sec = unwrap(inline_mail(ALICE, broken), keyring)["security"]
    assert sec["verdict"] == "unverified" and sec["signature"] == "error"
    armored = world.encrypt([world.people["csirt"]], b"secret\n")
    lines = armored.splitlines(keepends=True)
    truncated = b"".join(lines[:4]) + b"-----END PGP MESSAGE-----\n"
    sec = unwrap(inline_mail(ALICE, truncated), keyring)["security"]
    assert sec["verdict"] == "undecryptable" and sec["errors"]


def test_truncated_pgp_mime_and_cms(world, pki, keyring):
    enc = pgp_encrypted(world, [world.people["csirt"]], text_part("x\n"))
    cut = enc[: enc.index(b"-----END PGP MESSAGE-----") - 200] + b"\r\n-----END PGP MESSAGE-----\r\n"
    sec = unwrap(mail(headers(ALICE), cut), keyring)["security"]
    assert sec["verdict"] == "undecryptable" and sec["errors"]
    cms = smime_enveloped(pki, [pki.certs["csirt"]], text_part("x\n"))
    cut = cms[: len(cms) // 2] + CRLF
    sec = unwrap(mail(headers(ALICE), cut), keyring)["security"]
    assert sec["verdict"] == "undecryptable" and "damaged" in sec["errors"][0]
    signed = smime_opaque(pki, pki.certs["alice"], text_part("x\n"))
    sec = unwrap(mail(headers(ALICE), signed[: len(signed) // 2] + CRLF), keyring)["security"]
    assert sec["verdict"] != "verified" and sec["errors"]


def test_symmetric_encryption_fails_fast(world, keyring):
    st = world.gpg.run(["--armor", "--symmetric", "--pinentry-mode", "loopback", "--passphrase", "pw"], b"hidden\n")
    t = time.monotonic()
    sec = unwrap(inline_mail(ALICE, st.result.stdout), keyring)["security"]
    assert time.monotonic() - t < 5
    assert sec["verdict"] == "undecryptable" and "password" in sec["errors"][0]


def test_decryption_bomb_is_capped(world, keyring):
    zeros = b"\0" * (proc.MAX_OUTPUT + 8 * 1024 * 1024)
    bomb = world.encrypt([world.people["csirt"]], zeros, armor=False, extra=["--compress-level", "9"])
    assert len(bomb) < 1024 * 1024
    del zeros
    raw = mail(headers(ALICE), multipart("mixed", [attachment("zeros.bin.gpg", bomb)]))
    t = time.monotonic()
    r = unwrap(raw, keyring)
    assert time.monotonic() - t < 20
    sec = check(r, "undecryptable")
    assert any("larger than" in e for e in sec["errors"])
    assert len(r["mime"]) == len(raw)


def test_subprocess_limits():
    with proc.Scratch() as sc:
        t = time.monotonic()
        res = sc.run(["sleep", "10"], timeout=0.5)
        assert res.timed_out and time.monotonic() - t < 5
        res = sc.run(["head", "-c", "5000000", "/dev/zero"], max_output=1000)
        assert res.too_large and len(res.stdout) == 1000
        folder = sc.path
    assert not os.path.exists(folder)


def test_too_many_protected_parts_are_capped(world, keyring):
    block = world.clearsign(world.people["alice"], b"one of many\n")
    raw = inline_mail(ALICE, block * (unwrap_mod.MAX_OPERATIONS + 10))
    t = time.monotonic()
    sec = unwrap(raw, keyring)["security"]
    assert time.monotonic() - t < 20
    assert sec["verdict"] != "verified"
    assert any("too many protected parts" in w for w in sec["warnings"])


def test_deep_nesting_does_not_break(world, keyring):
    entity = text_part("deep\n")
    for i in range(120):
        entity = multipart("mixed", [entity], boundary=f"b{i}")
    r = unwrap(mail(headers(ALICE), entity), keyring)
    assert r["security"]["verdict"] == "none"
    nested = pgp_encrypted(world, [world.people["csirt"]], text_part("x\n"))
    for _ in range(unwrap_mod.MAX_LAYERS + 2):
        nested = pgp_encrypted(world, [world.people["csirt"]], nested)
    sec = unwrap(mail(headers(ALICE), nested), keyring)["security"]
    assert any("layers" in e for e in sec["errors"])


def test_part_numbers_match_ingest_numbering(world, keyring):
    """The parts list numbers leaves of "mime" as ingest's walk_leaves does."""
    p = world.people
    inner = multipart("mixed", [text_part("a\n"), multipart("alternative", [text_part("b\n"),
                                                                             text_part("<p>b</p>", "text/html")]),
                                attachment("x.bin", b"\x01\x02")])
    raw = mail(headers(ALICE), pgp_encrypted(world, [p["csirt"]], inner, signer=p["alice"]))
    r = unwrap(raw, keyring)
    check(r, "verified")

    def walk(m, prefix=""):
        if m.is_multipart():
            for i, sub in enumerate(m.get_payload(), start=1):
                yield from walk(sub, f"{prefix}{i}." if prefix else f"{i}.")
            return
        yield (prefix[:-1] if prefix else "1"), m.get_content_type()
    theirs = list(walk(BytesParser(policy=policy.compat32).parsebytes(r["mime"])))
    assert theirs == [(x["part"], x["content_type"]) for x in r["parts"]]
    assert theirs == [("1", "text/plain"), ("2.1", "text/plain"), ("2.2", "text/html"),
                      ("3", "application/octet-stream")]
    assert hashlib.sha256(attachments(r)["x.bin"]).hexdigest() == hashlib.sha256(b"\x01\x02").hexdigest()
