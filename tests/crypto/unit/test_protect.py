"""services/crypto/protect.py: outgoing mail signed and/or encrypted, checked by
unwrapping it again (and, for mail to others, by the recipients' own keys)."""
from __future__ import annotations

import subprocess
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from services.crypto import mime
from services.crypto.exceptions import BadRequest, NoUsableKey
from services.crypto.protect import protect
from services.crypto.unwrap import unwrap

CSIRT = "CSIRT <csirt@example.org>"
BINARY = bytes(range(256)) * 8


def outgoing(body: str = "Dear Alice,\n\nwe blocked 192.0.2.66.\n\n-- \nCSIRT\n", attach: bool = False,
             subject: str = "[Osprey #42] Your report") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = CSIRT
    msg["To"] = "Alice Reporter <alice@example.net>"
    msg["Subject"] = subject
    msg["Message-ID"] = "<out-42@example.org>"
    msg.set_content(body)
    if attach:
        msg.add_attachment(BINARY, maintype="application", subtype="octet-stream", filename="evidence.bin")
        msg.add_attachment("ip,seen\n192.0.2.66,today\n", subtype="csv", filename="iocs.csv")
    return msg


def parse(raw: bytes):
    return BytesParser(policy=policy.default).parsebytes(raw)


def text_of(raw: bytes) -> str:
    return parse(raw).get_body(preferencelist=("plain",)).get_content().replace("\r\n", "\n")


@pytest.mark.parametrize("attach", [False, True])
def test_pgp_mime_signed_round_trip(keyring, world, attach):
    out = protect(outgoing(attach=attach), keyring, sign_with_queue="general", scheme="pgp-mime")
    assert out["signed_by"] == world.people["csirt"].fpr and out["encrypted_to"] == []
    msg = parse(out["mime"])
    assert msg.get_content_type() == "multipart/signed"
    assert msg.get_param("protocol") == "application/pgp-signature" and msg.get_param("micalg").startswith("pgp-")
    r = unwrap(out["mime"], keyring)
    assert r["security"]["verdict"] == "verified", r["security"]
    assert "we blocked 192.0.2.66" in text_of(r["mime"])
    assert r["security"]["protected_headers"]["subject"] == "[Osprey #42] Your report"
    if attach:
        files = {p.get_filename(): p.get_payload(decode=True) for p in parse(r["mime"]).iter_attachments()}
        assert files["evidence.bin"] == BINARY


def test_signed_8bit_and_trailing_white_space_survive(keyring):
    body = "Grüße,\nline with trailing spaces   \nFrom the start of a line\n" + "x" * 1200 + "\n"
    msg = outgoing()
    msg.set_content(body, cte="8bit")
    assert b"Gr\xc3\xbc\xc3\x9fe" in msg.as_bytes()
    out = protect(msg, keyring, sign_with_queue="general")
    assert all(b < 128 for b in out["mime"])         # 7-bit safe on the wire
    r = unwrap(out["mime"], keyring)
    assert r["security"]["verdict"] == "verified"
    shown = text_of(r["mime"])
    assert "Grüße" in shown and "trailing spaces   \n" in shown and "\nFrom the start" in shown


def test_pgp_mime_encrypted_to_a_recipient(keyring, world):
    out = protect(outgoing(attach=True), keyring, sign_with_queue="general", encrypt_to=["alice@example.net"])
    alice, csirt = world.people["alice"], world.people["csirt"]
    assert {e["fingerprint"] for e in out["encrypted_to"]} == {alice.fpr, csirt.fpr}     # + the queue itself
    msg = parse(out["mime"])
    assert msg.get_content_type() == "multipart/encrypted" and msg["Subject"] == "..."
    assert b"192.0.2.66" not in out["mime"] and b"Your report" not in out["mime"]
    # Alice opens it with her own key
    armored = msg.get_payload()[1].get_payload(decode=True)
    res = world.gpg.decrypt(armored)
    assert res.decrypted and res.sigs and res.sigs[0].status == "good" and res.sigs[0].primary == csirt.fpr
    inner = mime.parse(res.data)
    assert inner.param("protected-headers") == "v1"
    assert inner.msg["Subject"] == "[Osprey #42] Your report"


def test_pgp_mime_encrypted_round_trip_via_own_key(keyring):
    out = protect(outgoing(), keyring, sign_with_queue="general", encrypt_to=["csirt@example.org"])
    r = unwrap(out["mime"], keyring)
    sec = r["security"]
    assert sec["verdict"] == "verified" and sec["encrypted"] and sec["fully_encrypted"]
    assert parse(r["mime"])["Subject"] == "[Osprey #42] Your report"      # protected header shown
    out = protect(outgoing(), keyring, encrypt_to=["csirt@example.org"])
    assert unwrap(out["mime"], keyring)["security"]["verdict"] == "encrypted-only"


def test_pgp_inline_sign_and_encrypt(keyring, world):
    out = protect(outgoing("Grüße, inline\n"), keyring, sign_with_queue="general", scheme="pgp-inline")
    assert b"-----BEGIN PGP SIGNED MESSAGE-----" in out["mime"]
    r = unwrap(out["mime"], keyring)
    assert r["security"]["verdict"] == "verified" and "Grüße, inline" in text_of(r["mime"])
    out = protect(outgoing("secret inline\n"), keyring, sign_with_queue="general", scheme="pgp-inline",
                  encrypt_to=["alice@example.net"])
    assert b"-----BEGIN PGP MESSAGE-----" in out["mime"] and b"secret inline" not in out["mime"]
    armored = parse(out["mime"]).get_payload(decode=True)
    res = world.gpg.decrypt(armored)
    assert res.decrypted and res.data.replace(b"\r\n", b"\n") == b"secret inline\n"
    assert res.sigs[0].status == "good"


def test_pgp_inline_refuses_multipart(keyring):
    with pytest.raises(BadRequest, match="inline PGP"):
        protect(outgoing(attach=True), keyring, sign_with_queue="general", scheme="pgp-inline")


@pytest.mark.parametrize("cipher", ["aes-256-cbc", "aes-256-gcm"])
def test_smime_sign_and_encrypt_round_trip(keyring, pki, cipher):
    out = protect(outgoing(attach=True), keyring, sign_with_queue="general", scheme="smime")
    assert parse(out["mime"]).get_param("protocol") == "application/pkcs7-signature"
    r = unwrap(out["mime"], keyring)
    assert r["security"]["verdict"] == "verified", r["security"]
    out = protect(outgoing(), keyring, sign_with_queue="general", scheme="smime", smime_cipher=cipher,
                  encrypt_to=["csirt@example.org"])
    stype = parse(out["mime"]).get_param("smime-type")
    assert stype == ("authEnveloped-data" if "gcm" in cipher else "enveloped-data")
    r = unwrap(out["mime"], keyring)
    assert r["security"]["verdict"] == "verified" and r["security"]["encrypted"]


def test_smime_encrypted_to_a_recipient(keyring, pki, tmp_path):
    out = protect(outgoing(), keyring, scheme="smime", encrypt_to=["Alice <alice@example.net>"])
    assert out["encrypted_to"] == [{"address": "alice@example.net", "fingerprint": pki.certs["alice"].fingerprint}]
    blob = parse(out["mime"]).get_payload(decode=True)
    (tmp_path / "m.der").write_bytes(blob)
    (tmp_path / "a.pem").write_bytes(pki.certs["alice"].cert)
    (tmp_path / "a.key").write_bytes(pki.certs["alice"].key)
    plain = subprocess.run(["openssl", "cms", "-decrypt", "-inform", "DER", "-in", str(tmp_path / "m.der"),
                            "-recip", str(tmp_path / "a.pem"), "-inkey", str(tmp_path / "a.key")],
                           capture_output=True, check=True).stdout
    assert b"we blocked 192.0.2.66" in plain


def test_no_key_for_a_recipient_is_an_error_naming_it(keyring):
    with pytest.raises(NoUsableKey, match="carol@example.net"):
        protect(outgoing(), keyring, sign_with_queue="general", encrypt_to=["alice@example.net",
                                                                            "carol@example.net"])
    with pytest.raises(NoUsableKey, match="old@example.net"):     # expired key: not usable
        protect(outgoing(), keyring, encrypt_to=["old@example.net"])
    with pytest.raises(NoUsableKey, match="bob@example.com"):     # no S/MIME certificate for bob
        protect(outgoing(), keyring, scheme="smime", encrypt_to=["bob@example.com"])


def test_signing_needs_a_queue_key(keyring):
    with pytest.raises(NoUsableKey, match="no OpenPGP signing key"):
        protect(outgoing(), keyring, sign_with_queue="nonexistent")
    with pytest.raises(BadRequest, match="nothing to do"):
        protect(outgoing(), keyring)
    with pytest.raises(BadRequest, match="unknown scheme"):
        protect(outgoing(), keyring, sign_with_queue="general", scheme="rot13")
