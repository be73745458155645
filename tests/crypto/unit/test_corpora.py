"""Real samples from other projects (../shared/corpora, see each PROVENANCE.md):
RFC 4134's S/MIME examples, MimeKit's signed mail, keys and PKCS#12 files, and the
RIPE NCC whois mail-update tests (inline PGP, PGP/MIME, PKCS7). Asserted outcomes
are the real ones, each explained."""
from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import pytest

from osprey.testing import corpora_dir
from services.crypto import cms
from services.crypto.protect import protect
from services.crypto.unwrap import unwrap

from ..conftest import new_keyring

CORPORA = corpora_dir()
RFC = CORPORA / "smime-rfc4134" / "rfc4134"
MIMEKIT = CORPORA / "mimekit"
RIPE = CORPORA / "ripe-ncc-whois"
MIMEKIT_PW = "no.secret"          # mimekit/PROVENANCE.md: PFX and OpenPGP key password


def der_to_pem(path: Path, kind: str) -> bytes:
    return subprocess.run(["openssl", kind, "-inform", "DER", "-in", str(path)], capture_output=True,
                          check=True).stdout


def sec_of(raw: bytes, kr) -> dict:
    return unwrap(raw, kr)["security"]


def wrap_cms(blob: bytes, frm: str, smime_type: str) -> bytes:
    return (f"From: {frm}\r\nTo: User2@examples.com\r\nSubject: sample\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=smime.p7m\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n").encode() + base64.encodebytes(blob)


@pytest.fixture(scope="module")
def rfc_keyring(tmp_path_factory):
    """Carl's RSA and DSS roots as trust anchors; Carl's and Bob's private keys (for the
    enveloped examples); the RFC's keys are DER PKCS#8 files (.pri)."""
    kr = new_keyring(tmp_path_factory.mktemp("rfc") / "crypto.db")
    kr.import_key((RFC / "CarlRSASelf.cer").read_bytes(), trusted=True)
    kr.import_key((RFC / "CarlDSSSelf.cer").read_bytes(), trusted=True)
    kr.import_key(der_to_pem(RFC / "CarlRSASelf.cer", "x509") + der_to_pem(RFC / "CarlPrivRSASign.pri", "pkey"))
    kr.import_key(der_to_pem(RFC / "BobRSASignByCarl.cer", "x509") + der_to_pem(RFC / "BobPrivRSAEncrypt.pri", "pkey"))
    yield kr
    kr.close()


# --- RFC 4134 -----------------------------------------------------------------------------

def test_rfc4134_4_8_multipart_signed(rfc_keyring):
    """Good DSA signature chained to CarlDSS; but the certificate names
    AliceDSS@example.com and the mail says aliceDss@examples.com (sic): unverified."""
    r = unwrap((RFC / "4.8.eml").read_bytes(), rfc_keyring)
    sec = r["security"]
    assert sec["signature"] == "good" and sec["trusted"] is True and sec["covers_all"] is True
    assert sec["signer"]["subject"] == "CN=AliceDSS" and sec["signer"]["addresses"] == ["alicedss@example.com"]
    assert sec["signer_matches_from"] is False and sec["verdict"] == "unverified"
    assert r["mime"].endswith(b"This is some sample content.")


def test_rfc4134_4_9_opaque_signed(rfc_keyring):
    r = unwrap((RFC / "4.9.eml").read_bytes(), rfc_keyring)
    sec = r["security"]
    assert sec["signature"] == "good" and sec["trusted"] is True
    assert sec["signatures"][0]["where"] == "opaque"
    assert r["changed"] and r["mime"].endswith(b"This is some sample content.")


@pytest.mark.parametrize("sample,frm,status,verdict", [
    ("4.1", "AliceDSS@example.com", "good", "verified"),
    ("4.2", "AliceRSA@example.com", "good", "verified"),
    ("4.4", "AliceDSS@example.com", "good", "verified"),      # carries CRLs and a chain
    ("4.5", "AliceRSA@example.com", "good", "verified"),      # subjectKeyIdentifier signer
    ("4.7", "AliceDSS@example.com", "good", "verified"),
    ("4.10", "AliceDSS@example.com", "good", "verified"),
    ("4.6", "AliceDSS@example.com", "error", "unverified"),   # two signers, Diane's DSA key with
                                                              # inherited parameters is unusable
])
def test_rfc4134_signed_data_samples(rfc_keyring, sample, frm, status, verdict):
    sec = sec_of(wrap_cms((RFC / f"{sample}.bin").read_bytes(), frm, "signed-data"), rfc_keyring)
    assert (sec["signature"], sec["verdict"]) == (status, verdict), sec["warnings"]


def test_rfc4134_4_6_has_two_signers(rfc_keyring):
    sec = sec_of(wrap_cms((RFC / "4.6.bin").read_bytes(), "AliceDSS@example.com", "signed-data"), rfc_keyring)
    assert "the CMS signature has 2 signers" in sec["warnings"]


def test_rfc4134_4_3_detached_over_excontent(rfc_keyring):
    with rfc_keyring.material() as m:
        res = cms.verify((RFC / "4.3.bin").read_bytes(), (RFC / "ExContent.bin").read_bytes(), m.smime)
        assert res.status == "good" and res.chain_ok and res.signer.subject == "CN=AliceDSS"
        res = cms.verify((RFC / "4.3.bin").read_bytes(), b"Other content.", m.smime)
        assert res.status == "bad"


def test_rfc4134_4_11_certificates_only(rfc_keyring):
    sec = sec_of(wrap_cms((RFC / "4.11.bin").read_bytes(), "x@example.com", "certs-only"), rfc_keyring)
    assert sec["verdict"] == "none" and sec["warnings"] == ["an S/MIME part holds certificates only (no signature)"]


@pytest.mark.parametrize("sample", ["5.1", "5.2"])
def test_rfc4134_enveloped_to_bob(rfc_keyring, sample):
    """3DES enveloped-data to Bob (5.2 also to others); Bob's key is in the keyring."""
    r = unwrap(wrap_cms((RFC / f"{sample}.bin").read_bytes(), "AliceRSA@example.com", "enveloped-data"),
               rfc_keyring)
    assert r["security"]["verdict"] == "encrypted-only" and r["security"]["decrypted"]
    assert r["mime"].endswith(b"This is some sample content.")


def test_rfc4134_5_3_enveloped_mail_to_carl(rfc_keyring):
    r = unwrap((RFC / "5.3.eml").read_bytes(), rfc_keyring)
    sec = r["security"]
    assert sec["verdict"] == "encrypted-only" and sec["decrypted"]
    assert r["mime"].endswith(b"This is some sample content.")
    assert any("From address 'User1' is unusual" in w for w in sec["warnings"])   # "From: User1"


def test_rfc4134_crls(tmp_path):
    """With Carl's RSA CRL that revokes AliceRSA, her signature (4.2) is "revoked"."""
    kr = new_keyring(tmp_path / "crypto.db")
    try:
        kr.import_key((RFC / "CarlRSASelf.cer").read_bytes(), trusted=True)
        crl = kr.import_key((RFC / "CarlRSACRLForAll.crl").read_bytes())[0]
        assert crl["kind"] == "crl" and crl["issuer"] == "CN=CarlRSA"
        sec = sec_of(wrap_cms((RFC / "4.2.bin").read_bytes(), "AliceRSA@example.com", "signed-data"), kr)
        assert sec["signature"] == "revoked" and sec["verdict"] == "unverified"
        kr.delete_key(crl["fingerprint"])
        kr.import_key((RFC / "CarlRSACRLEmpty.crl").read_bytes())
        sec = sec_of(wrap_cms((RFC / "4.2.bin").read_bytes(), "AliceRSA@example.com", "signed-data"), kr)
        assert sec["signature"] == "good" and sec["verdict"] == "verified"
    finally:
        kr.close()


# --- MimeKit ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def mimekit_keyring(tmp_path_factory):
    import os
    os.environ["OSPREY_TEST_MIMEKIT_PW"] = MIMEKIT_PW
    kr = new_keyring(tmp_path_factory.mktemp("mk") / "crypto.db")
    yield kr
    kr.close()
    os.environ.pop("OSPREY_TEST_MIMEKIT_PW", None)


def test_mimekit_thunderbird_signed_with_expired_startcom_certificate(mimekit_keyring):
    kr = mimekit_keyring
    raw = (MIMEKIT / "smime" / "thunderbird-signed.txt").read_bytes()
    sec = sec_of(raw, kr)
    assert sec["signature"] == "good" and sec["trusted"] is False      # no anchor yet
    kr.import_key((MIMEKIT / "smime" / "StartComCertificationAuthority.crt").read_bytes(), trusted=True)
    kr.import_key((MIMEKIT / "smime" / "StartComClass1PrimaryIntermediateClientCA.crt").read_bytes())
    r = unwrap(raw, kr)
    sec = r["security"]
    assert sec["signature"] == "expired" and sec["verdict"] == "unverified"     # valid 2013-2014
    assert sec["signer"]["addresses"] == ["fejj@gnome.org"] and sec["signer_matches_from"]
    assert [(p["content_type"], p["signatures"]) for p in r["parts"]] == [("text/plain", [1]), ("image/jpeg", [1])]


def test_mimekit_gnupg_announcement(mimekit_keyring):
    """Signed by Werner Koch (key not in the keyring), inside a multipart/mixed with
    the mailing list's footer: unknown key, and not all of it is signed."""
    sec = sec_of((MIMEKIT / "openpgp" / "[Announce] GnuPG 2.1.20 released.eml").read_bytes(), mimekit_keyring)
    assert sec["signature"] == "unknown-key" and sec["verdict"] == "unverified"
    assert sec["covers_all"] is False and sec["signer"]["key_id"] == "4F0540D577F95F95"


def test_mimekit_openpgp_key_pair_round_trip(mimekit_keyring):
    kr = mimekit_keyring
    made = kr.import_key((MIMEKIT / "openpgp" / "mimekit.gpg.sec").read_bytes(), trusted=True, queue="mk",
                         passphrase_env="OSPREY_TEST_MIMEKIT_PW")
    assert made[0]["secret"] and made[0]["addresses"] == ["mimekit@example.com"]
    assert all(k["problem"] is None for k in kr.list_keys())
    raw = (b"From: MimeKit <mimekit@example.com>\r\nTo: x@example.org\r\nSubject: round trip\r\n"
           b"Content-Type: text/plain\r\n\r\nsigned with MimeKit's test key\r\n")
    out = protect(raw, kr, sign_with_queue="mk", encrypt_to=["mimekit@example.com"])
    r = unwrap(out["mime"], kr)
    assert r["security"]["verdict"] == "verified" and r["security"]["encrypted"]
    assert r["mime"].endswith(b"signed with MimeKit's test key\r\n")


@pytest.mark.parametrize("folder,address,verdict", [("rsa", "rsa@mimekit.net", "verified"),
                                                    ("ec", "ec@mimekit.net", "unverified")])
def test_mimekit_pkcs12_round_trip(mimekit_keyring, folder, address, verdict):
    """PKCS#12 with RC2-40 (needs openssl's legacy provider) holding the key and the
    chain; verified once the admin trusts MimeKit's root. The EC certificate carries
    explicit curve parameters, which OpenSSL 3 refuses in a chain (RFC 5480): its
    signature is good, its chain is not accepted."""
    kr = mimekit_keyring
    made = kr.import_key((MIMEKIT / "smime" / folder / "smime.pfx").read_bytes(), queue=folder,
                         passphrase_env="OSPREY_TEST_MIMEKIT_PW")
    assert [m["secret"] for m in made].count(True) == 1 and len(made) == 4
    root = next(m for m in made if m["uids"][0].startswith("emailAddress=root@"))
    raw = (f"From: MimeKit <{address}>\r\nTo: x@example.org\r\nSubject: pfx\r\n"
           "Content-Type: text/plain\r\n\r\nS/MIME with MimeKit's key\r\n").encode()
    out = protect(raw, kr, sign_with_queue=folder, scheme="smime", encrypt_to=[address])
    sec = sec_of(out["mime"], kr)
    assert sec["signature"] == "good" and sec["decrypted"] and sec["trusted"] is False
    kr.set_trust(root["fingerprint"], True)
    sec = sec_of(out["mime"], kr)
    assert sec["verdict"] == verdict, sec["warnings"]
    if folder == "ec":
        assert sec["signature"] == "good" and any("explicit ECC parameters" in w for w in sec["warnings"])


# --- RIPE NCC whois test mail ---------------------------------------------------------------

def keycert(path: Path) -> bytes:
    """The OpenPGP key block inside an RPSL key-cert object (``certif:`` lines)."""
    lines = [line.split(":", 1)[1].strip() for line in path.read_text().splitlines() if line.startswith("certif:")]
    return "\n".join(lines).encode()


@pytest.fixture(scope="module")
def ripe_keyring(tmp_path_factory):
    kr = new_keyring(tmp_path_factory.mktemp("ripe") / "crypto.db")
    made = kr.import_key(keycert(RIPE / "keycerts" / "PGPKEY-MULTIPLE-PUBLIC-KEYS.TXT"), trusted=True)
    assert {m["fingerprint"] for m in made} == {"EDDF375AB830D1BB26E5ED3B76CA91EF81CCF97D",
                                                "884F8E2369E5E6F19FB363F4BBCCBB2D5763950D"}
    yield kr
    kr.close()


def ripe_mail(name: str) -> bytes:
    return (RIPE / "testMail" / f"{name}.mail").read_bytes()


def test_ripe_inline_signed(ripe_keyring):
    """Good signature by noreply@ripe.net; the mail is From bitbucket@ripe.net."""
    r = unwrap(ripe_mail("inlinePgpSigned"), ripe_keyring)
    sec = r["security"]
    assert sec["signature"] == "good" and sec["trusted"] and sec["covers_all"]
    assert sec["signer"]["addresses"] == ["noreply@ripe.net"] and sec["signer_matches_from"] is False
    assert sec["verdict"] == "unverified"
    assert b"BEGIN PGP" not in r["mime"] and b"route:          99.13.0.0/16" in r["mime"]


def test_ripe_inline_signed_in_multipart_alternative(ripe_keyring):
    """The text/plain alternative is clearsigned (quoted-printable); the HTML one is
    not signed at all."""
    sec = sec_of(ripe_mail("multipartAlternativePgpSigned"), ripe_keyring)
    assert sec["signature"] == "good" and sec["verdict"] == "signed-partially"
    assert any("text/html" in w for w in sec["warnings"])


def test_ripe_pgp_mime_signed_content_was_edited(ripe_keyring):
    """The sample's signed part was edited after signing (certif lines emptied)."""
    sec = sec_of(ripe_mail("multipartPgpSigned"), ripe_keyring)
    assert sec["signature"] == "bad" and sec["verdict"] == "bad"


def test_ripe_pkcs7_signed_sample_is_truncated(ripe_keyring):
    sec = sec_of(ripe_mail("multipartPkcs7Signed"), ripe_keyring)
    assert sec["signature"] == "error" and "malformed" in sec["signatures"][0]["reason"]


def test_ripe_signature_by_unknown_key(ripe_keyring):
    sec = sec_of(ripe_mail("testParseFailure"), ripe_keyring)
    assert sec["signature"] == "unknown-key" and sec["signer"]["key_id"] == "BD493CA1C5424D19"


def test_ripe_unsigned_mail(ripe_keyring):
    for name in ("simplePlainTextUnsigned", "multipartMixedUnsigned", "permanentFailureMessageRfc822Real"):
        r = unwrap(ripe_mail(name), ripe_keyring)
        assert r["security"]["verdict"] == "none" and r["mime"] == ripe_mail(name)
