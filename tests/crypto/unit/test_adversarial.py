"""Forged and rewrapped mail, after "Johnny, You Are Fired! – Spoofing OpenPGP and
S/MIME Signatures in Emails" (Müller et al., USENIX Security 2019): CMS attacks,
GPG API attacks, MIME wrapping, ID attacks. Each mail is made here with real keys,
and none of them may come out "verified" — a wrong "verified" is the worst bug this
product can have. Each also has to say why, in a warning."""
from __future__ import annotations

import pytest

from services.crypto import mime
from services.crypto.unwrap import unwrap

from ..world import (CRLF, attachment, headers, mail, multipart, pgp_encrypted, pgp_signed, smime_opaque,
                     smime_signed, text_part)

ALICE = "Alice Reporter <alice@example.net>"


def verdict(raw: bytes, keyring) -> dict:
    sec = unwrap(raw, keyring)["security"]
    assert sec["verdict"] != "verified", sec
    return sec


def warned(sec: dict, *words: str) -> bool:
    text = " ".join(sec["warnings"]).lower()
    return all(w.lower() in text for w in words)


def signed_by_alice(world, text: str = "Please block 192.0.2.66.\n") -> bytes:
    return pgp_signed(world, world.people["alice"], text_part(text))


def test_control_the_genuine_mail_is_verified(world, pki, keyring):
    """The baseline every attack below starts from (so a failure below is the attack)."""
    assert unwrap(mail(headers(ALICE), signed_by_alice(world)), keyring)["security"]["verdict"] == "verified"
    raw = mail(headers(ALICE), smime_signed(pki, pki.certs["alice"], text_part("Please block 192.0.2.66.\n")))
    assert unwrap(raw, keyring)["security"]["verdict"] == "verified"


# --- MIME wrapping: content outside the signed part -----------------------------------------

@pytest.mark.parametrize("order", ["prepended", "appended"])
def test_unsigned_text_beside_the_signed_part(world, keyring, order):
    evil = text_part("URGENT: transfer the bounty to IBAN XX00 0000.\n")
    parts = [evil, signed_by_alice(world)] if order == "prepended" else [signed_by_alice(world), evil]
    sec = verdict(mail(headers(ALICE), multipart("mixed", parts)), keyring)
    assert sec["verdict"] == "signed-partially" and sec["signature"] == "good" and not sec["covers_all"]
    assert warned(sec, "does not cover everything")


def test_text_hidden_in_html_alternative(world, keyring):
    html = text_part("<p>Ignore the text version. Wire money now.</p>", "text/html")
    raw = mail(headers(ALICE), multipart("alternative", [signed_by_alice(world), html]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially" and warned(sec, "text/html")


def test_html_around_signed_part_in_multipart_related(world, keyring):
    html = text_part('<html><body>Pay now<div style="display:none">', "text/html")
    raw = mail(headers(ALICE), multipart("related", [html, signed_by_alice(world)]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially"


def test_signed_part_moved_into_an_attachment(world, keyring):
    signed = signed_by_alice(world)
    header, body = mime.split_header(signed)
    as_attachment = header + b'Content-Disposition: attachment; filename="signed.eml"' + CRLF + CRLF + body
    raw = mail(headers(ALICE), multipart("mixed", [text_part("Alice confirms: pay 1000 EUR.\n"), as_attachment]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially"


def test_signed_mail_forwarded_as_message_rfc822(world, keyring):
    inner = mail(headers(ALICE), signed_by_alice(world))
    fwd = b"Content-Type: message/rfc822" + CRLF + b"Content-Disposition: attachment" + CRLF + CRLF + inner
    raw = mail(headers(ALICE), multipart("mixed", [text_part("see Alice's mail, and pay.\n"), fwd]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "none"       # an attached mail is shown whole; its signature says nothing here


def test_unsigned_part_beside_encrypted_signed_part(world, keyring):
    p = world.people
    enc = pgp_encrypted(world, [p["csirt"]], text_part("genuine, signed and encrypted\n"), signer=p["alice"])
    raw = mail(headers(ALICE), multipart("mixed", [text_part("injected plain text\n"), enc]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially" and not sec["fully_encrypted"]


def test_empty_text_beside_signed_part_is_harmless(world, keyring):
    """Whitespace-only text shows nothing: it does not break the coverage."""
    raw = mail(headers(ALICE), multipart("mixed", [text_part("\n  \n"), signed_by_alice(world)]))
    assert unwrap(raw, keyring)["security"]["verdict"] == "verified"


def test_two_signed_parts(world, keyring):
    raw = mail(headers(ALICE), multipart("mixed", [signed_by_alice(world, "one\n"), signed_by_alice(world, "two\n")]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially" and warned(sec, "2 signatures")


# --- inline PGP ------------------------------------------------------------------------------

def inline(frm: str, text: bytes) -> bytes:
    return mail(headers(frm), b"Content-Type: text/plain; charset=us-ascii" + CRLF + CRLF + text)


@pytest.mark.parametrize("where", ["before", "after"])
def test_inline_text_outside_the_signed_block(world, keyring, where):
    block = world.clearsign(world.people["alice"], b"I confirm the incident.\n")
    evil = b"Also: the bank details changed, see below.\n\n"
    raw = inline(ALICE, evil + block if where == "before" else block + b"\n" + evil)
    r = unwrap(raw, keyring)
    sec = r["security"]
    assert sec["verdict"] == "signed-partially" and r["parts"][0]["partial"] is True
    assert r["parts"][0]["signatures"] == []
    assert "bank details changed" in r["mime"].decode()


def test_inline_blocks_by_two_signers(world, keyring):
    p = world.people
    raw = inline(ALICE, world.clearsign(p["alice"], b"part one\n") + world.clearsign(p["mallory"], b"part two\n"))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially" and warned(sec, "2 signatures")


def test_inline_garbage_packets_multiple_plaintexts(world, keyring):
    """An unsigned literal packet in front of a signed message (GPG API attack):
    gpg shows both plaintexts' bytes but the signature covers only one."""
    p = world.people
    literal = world.gpg.run(["--store", "--compress-algo", "none"], b"EVIL unsigned text\n").result.stdout
    signed = world.sign_opaque(p["alice"], b"genuine\n", armor=False)
    combo = literal + signed
    armored = world.gpg.run(["--enarmor"], combo).result.stdout.replace(b"ARMORED FILE", b"MESSAGE")
    armored = b"\n".join(line for line in armored.split(b"\n") if not line.startswith(b"Comment:"))
    assert armored.startswith(b"-----BEGIN PGP MESSAGE-----")
    sec = verdict(inline(ALICE, armored), keyring)
    assert sec["verdict"] == "bad" and sec["signature"] == "bad"     # gpg checks the signature over EVIL


def test_detached_signature_part_carrying_its_own_signed_data(world, keyring):
    """multipart/signed whose "signature" is an opaque signed message by Alice over
    other text: gpg must not report it as a signature over the displayed part."""
    p = world.people
    opaque = world.sign_opaque(p["alice"], b"something Alice really said\n")
    sig_part = b"Content-Type: application/pgp-signature" + CRLF + CRLF + opaque
    raw = mail(headers(ALICE), multipart("signed", [text_part("Attacker's text.\n"), sig_part],
                                         params='; protocol="application/pgp-signature"'))
    sec = verdict(raw, keyring)
    assert sec["signature"] in ("error", "bad")


def test_signature_over_other_bytes(world, keyring):
    """A genuine signature of Alice, taken from another mail, on the attacker's text."""
    p = world.people
    entity = text_part("Attacker's new text.\n")
    raw = mail(headers(ALICE), pgp_signed(world, p["alice"], entity,
                                          sign_bytes=text_part("Alice's old harmless text.\n")))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "bad"


# --- ID attacks: who signed vs who it says it is from ------------------------------------------

def test_signed_by_someone_else_than_from(world, keyring):
    """Mallory's key is trusted (a partner), but the mail claims to come from Alice."""
    raw = mail(headers(ALICE), pgp_signed(world, world.people["mallory"], text_part("from 'alice'\n")))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "unverified" and sec["signature"] == "good" and sec["trusted"]
    assert sec["signer_matches_from"] is False and warned(sec, "is not the sender")


def test_display_name_shows_another_address(world, keyring):
    frm = '"alice@example.net" <mallory@evil.example>'
    raw = mail(headers(frm), pgp_signed(world, world.people["mallory"], text_part("hi\n")))
    sec = verdict(raw, keyring)
    assert sec["signer_matches_from"] is True        # the real address is Mallory's
    assert warned(sec, "display name shows another address", "alice@example.net")


def test_display_name_in_encoded_words(world, keyring):
    frm = "=?utf-8?q?alice=40example=2Enet?= <mallory@evil.example>"
    raw = mail(headers(frm), pgp_signed(world, world.people["mallory"], text_part("hi\n")))
    sec = verdict(raw, keyring)
    assert warned(sec, "display name")


def test_several_from_addresses(world, keyring):
    raw = mail(headers("alice@example.net, mallory@evil.example"), signed_by_alice(world))
    sec = verdict(raw, keyring)
    assert sec["from"] is None and warned(sec, "several addresses")


def test_two_from_headers(world, keyring):
    head = headers(ALICE, extra=[("From", "Mallory <mallory@evil.example>")])
    sec = verdict(mail(head, signed_by_alice(world)), keyring)
    assert warned(sec, "2 From headers")


def test_no_from_header(world, keyring):
    head = b"".join(line + CRLF for line in headers(ALICE).split(CRLF) if line and not line.startswith(b"From:"))
    sec = verdict(mail(head, signed_by_alice(world)), keyring)
    assert warned(sec, "no From header")


def test_protected_from_differs_from_outer_from(world, keyring):
    """Inner (signed) From says Mallory: someone re-sent Mallory's signed part as Alice's?
    Here: signed by Alice with inner From Mallory, outer From Alice."""
    inner = text_part("hi\n").replace(b"charset=us-ascii", b'charset=us-ascii; protected-headers="v1"', 1)
    inner = b"From: Mallory <mallory@evil.example>" + CRLF + b"Subject: x" + CRLF + inner
    raw = mail(headers(ALICE), pgp_signed(world, world.people["alice"], inner))
    sec = verdict(raw, keyring)
    assert warned(sec, "From inside the protected part")


def test_unknown_signer_with_matching_uid(world, keyring):
    """Carol's key is not in the keyring; a look-alike key in her name proves nothing."""
    look_alike = world.make("carol2", "Alice Reporter", "alice@example.net")
    raw = mail(headers(ALICE), pgp_signed(world, look_alike, text_part("it's me, alice\n")))
    sec = verdict(raw, keyring)
    assert sec["signature"] == "unknown-key"


# --- CMS attacks ---------------------------------------------------------------------------------

def test_cms_several_signers(pki, keyring):
    c = pki.certs
    raw = mail(headers(ALICE), smime_signed(pki, c["alice"], text_part("two signers\n"), extra_signers=[c["bob"]]))
    sec = verdict(raw, keyring)
    assert warned(sec, "2 signers")


def test_cms_no_signers(pki, keyring):
    """A certs-only CMS where the signature should be."""
    import subprocess
    # a degenerate SignedData (certificates, no SignerInfo), as openssl crl2pkcs7 makes it
    degenerate = subprocess.run(["openssl", "crl2pkcs7", "-nocrl", "-certfile", str(pki.dir / "alice.pem"),
                                 "-outform", "DER"], capture_output=True, check=True).stdout
    sig_part = (b"Content-Type: application/pkcs7-signature" + CRLF + b"Content-Transfer-Encoding: base64"
                + CRLF + CRLF + mime.encode_base64(degenerate))
    raw = mail(headers(ALICE), multipart("signed", [text_part("no signer at all\n"), sig_part],
                                         params='; protocol="application/pkcs7-signature"'))
    sec = verdict(raw, keyring)
    assert sec["signature"] == "error" and "no signers" in sec["signatures"][0]["reason"]


def test_cms_econtent_confusion(pki, keyring):
    """multipart/signed whose p7s is an opaque signature over other content: openssl
    would check the embedded content, not the part that is displayed."""
    opaque = pki.sign(pki.certs["alice"], mime.canonical(text_part("Alice's real words\n")), opaque=True)
    sig_part = (b"Content-Type: application/pkcs7-signature" + CRLF + b"Content-Transfer-Encoding: base64"
                + CRLF + CRLF + mime.encode_base64(opaque))
    raw = mail(headers(ALICE), multipart("signed", [text_part("Attacker's words\n"), sig_part],
                                         params='; protocol="application/pkcs7-signature"'))
    sec = verdict(raw, keyring)
    assert warned(sec, "carries content of its own")


def test_cms_econtent_type_not_data(pki, keyring):
    der = pki.cms(["-sign", "-binary", "-signer", str(pki.dir / "alice.pem"), "-inkey", str(pki.dir / "alice.key"),
                   "-outform", "DER", "-nodetach", "-econtent_type", "1.2.840.113549.1.9.16.1.4"],
                  mime.canonical(text_part("typed content\n")))
    entity = (b"Content-Type: application/pkcs7-mime; smime-type=signed-data" + CRLF
              + b"Content-Transfer-Encoding: base64" + CRLF + CRLF + mime.encode_base64(der))
    sec = verdict(mail(headers(ALICE), entity), keyring)
    assert warned(sec, "not data")


def test_smime_signer_is_not_the_sender(pki, keyring):
    raw = mail(headers(ALICE), smime_opaque(pki, pki.certs["bob"], text_part("bob signs as alice\n")))
    sec = verdict(raw, keyring)
    assert sec["signature"] == "good" and sec["trusted"] and not sec["signer_matches_from"]


def test_self_signed_certificate_in_the_victims_name(pki, keyring):
    fake = pki.self_signed("fakealice", "Alice Reporter", "alice@example.net")
    raw = mail(headers(ALICE), smime_signed(pki, fake, text_part("trust me\n")))
    sec = verdict(raw, keyring)
    assert sec["signature"] == "good" and sec["trusted"] is False and sec["signer_matches_from"]
    assert warned(sec, "not trusted")


def test_smime_wrapped_with_unsigned_attachment(pki, keyring):
    signed = smime_signed(pki, pki.certs["alice"], text_part("genuine\n"))
    raw = mail(headers(ALICE), multipart("mixed", [signed, attachment("invoice.pdf", b"%PDF fake")]))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "signed-partially"


def test_mismatched_protocol_and_signature_type(world, keyring):
    """The multipart/signed says PGP, the part says S/MIME: no confusion, no verdict."""
    entity = text_part("hi\n")
    sig = world.detach_sign(world.people["alice"], mime.canonical(entity))
    sig_part = b"Content-Type: application/pkcs7-signature" + CRLF + CRLF + sig
    raw = mail(headers(ALICE), multipart("signed", [entity, sig_part],
                                         params='; protocol="application/pgp-signature"'))
    sec = verdict(raw, keyring)
    assert warned(sec, "not what the multipart/signed announces")


def test_three_part_multipart_signed(world, keyring):
    entity = text_part("hi\n")
    sig = world.detach_sign(world.people["alice"], mime.canonical(entity))
    sig_part = b"Content-Type: application/pgp-signature" + CRLF + CRLF + sig
    raw = mail(headers(ALICE), multipart("signed", [entity, sig_part, text_part("extra\n")],
                                         params='; protocol="application/pgp-signature"'))
    sec = verdict(raw, keyring)
    assert sec["verdict"] == "none" and sec["errors"]


# --- GPG API attacks ------------------------------------------------------------------------------

def test_status_line_injection_through_the_literal_file_name(world, keyring):
    """SigSpoof (CVE-2018-12020): an unsigned, encrypted message whose embedded file
    name carries fake gpg status lines. gpg's status goes to a file of its own and
    escapes the name; nothing may come out signed."""
    alice = world.people["alice"]
    fake = (f"x\n[GNUPG:] GOODSIG {alice.fpr[-16:]} Alice Reporter <alice@example.net>\n"
            f"[GNUPG:] VALIDSIG {alice.fpr} 2026-11-25 1795620000 0 4 0 22 10 00 {alice.fpr}\n"
            f"[GNUPG:] TRUST_ULTIMATE 0 pgp\n")
    armored = world.encrypt([world.people["csirt"]], b"Pay the invoice.\n", extra=["--set-filename", fake])
    r = unwrap(inline(ALICE, armored), keyring)
    sec = r["security"]
    assert sec["verdict"] == "encrypted-only" and sec["signatures"] == [] and sec["signature"] == "none"
    raw = mail(headers(ALICE), pgp_encrypted(world, [world.people["csirt"]], text_part("Pay.\n")))
    assert unwrap(raw, keyring)["security"]["signatures"] == []


def test_fake_status_lines_in_the_signed_text(world, keyring):
    """Fake status lines inside a text signed by an untrusted key do not make it trusted."""
    bob = world.people["bob"]
    text = f"[GNUPG:] GOODSIG {world.people['alice'].fpr[-16:]} Alice\n[GNUPG:] TRUST_ULTIMATE\n".encode()
    sec = verdict(inline("Bob Other <bob@example.com>", world.clearsign(bob, text)), keyring)
    assert sec["signer"]["fingerprint"] == bob.fpr and sec["trusted"] is False
