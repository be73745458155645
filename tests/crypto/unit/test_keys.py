"""services/crypto/keys.py: the keyring in the service's SQL database, and the
per-process GnuPG home / PEM files built from it."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest

from services.crypto import keys as keys_mod
from services.crypto.exceptions import BadRequest, NotFound
from services.crypto.keys import Keyring, dearmor, split_transferable
from services.crypto.unwrap import unwrap

from ..conftest import CSIRT_PW_ENV, new_keyring
from ..world import headers, mail, pgp_encrypted, pgp_signed, smime_signed, text_part

ALICE = "Alice Reporter <alice@example.net>"


@pytest.fixture
def kr(tmp_path):
    k = new_keyring(tmp_path / "crypto.db")
    yield k
    k.close()


def by_fpr(kr: Keyring) -> dict:
    return {k["fingerprint"]: k for k in kr.list_keys()}


def agent_running(home: str) -> bool:
    out = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home}"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def test_import_armored_and_binary_public_keys(kr, world):
    alice, bob = world.people["alice"], world.people["bob"]
    made = kr.import_key(alice.public)
    assert [m["fingerprint"] for m in made] == [alice.fpr]
    binary = dearmor(bob.public)
    assert binary[:1] != b"-"
    made = kr.import_key(binary, trusted=True)
    listed = by_fpr(kr)
    a, b = listed[alice.fpr], listed[bob.fpr]
    assert a["kind"] == "openpgp" and a["uids"] == ["Alice Reporter <alice@example.net>"]
    assert a["addresses"] == ["alice@example.net"] and a["key_id"] == alice.fpr[-16:]
    assert set(a["usage"]) == {"sign", "certify", "encrypt"}
    assert a["trusted"] is False and b["trusted"] is True
    assert a["secret"] is False and a["expires"] is None and a["expired"] is False
    assert a["algorithm"] == "ed25519"


def test_import_two_keys_at_once_and_again(kr, world):
    blob = world.people["alice"].public + world.people["bob"].public
    assert len(kr.import_key(blob)) == 2
    assert len(kr.import_key(blob)) == 2          # importing again updates, no duplicates
    assert len([k for k in kr.list_keys() if k["kind"] == "openpgp"]) == 2


def test_secret_key_with_queue_and_passphrase(kr, world, csirt_pw):
    csirt = world.people["csirt"]
    made = kr.import_key(csirt.secret, queue="abuse", passphrase_env=CSIRT_PW_ENV)
    assert made[0]["secret"] is True and made[0]["queue"] == "abuse"
    assert made[0]["passphrase_env"] == CSIRT_PW_ENV
    assert kr.queue_key("abuse", "openpgp")["fingerprint"] == csirt.fpr
    with kr.material() as m:
        assert m.problems == {}
        assert csirt.fpr in m.pgp_secret
    # a mail encrypted to the queue key decrypts
    raw = mail(headers(ALICE), pgp_encrypted(world, [csirt], text_part("for the queue\n")))
    assert unwrap(raw, kr)["security"]["verdict"] == "encrypted-only"


def test_wrong_passphrase_is_reported_not_hung(kr, world, monkeypatch):
    csirt = world.people["csirt"]
    monkeypatch.setenv("OSPREY_TEST_WRONG_PW", "not-the-passphrase")
    kr.import_key(csirt.secret, passphrase_env="OSPREY_TEST_WRONG_PW")
    t = time.monotonic()
    with kr.material() as m:
        assert "locked" in m.problems[csirt.fpr]
    assert "locked" in by_fpr(kr)[csirt.fpr]["problem"]      # the key list tells the admin
    raw = mail(headers(ALICE), pgp_encrypted(world, [csirt], text_part("x\n")))
    sec = unwrap(raw, kr)["security"]
    assert time.monotonic() - t < 15
    assert sec["verdict"] == "undecryptable" and "passphrase" in sec["errors"][0]


def test_missing_passphrase_and_secrets_file(kr, world, tmp_path, monkeypatch):
    csirt = world.people["csirt"]
    monkeypatch.delenv("OSPREY_TEST_PW_FILE", raising=False)
    monkeypatch.setattr(keys_mod, "SECRETS_DIR", str(tmp_path))
    kr.import_key(csirt.secret, passphrase_env="OSPREY_TEST_PW_FILE")
    with kr.material() as m:
        assert "not available" in m.problems[csirt.fpr]
    (tmp_path / "OSPREY_TEST_PW_FILE").write_text(csirt.passphrase + "\n")
    kr.set_trust(csirt.fpr, True)                 # any change rebuilds the material
    with kr.material() as m:
        assert m.problems == {}
    secret_file = tmp_path / "pw.txt"
    secret_file.write_text(csirt.passphrase)
    kr.set_queue(csirt.fpr, "general", passphrase_env=f"file:{secret_file}")
    with kr.material() as m:
        assert m.problems == {}
        assert m.records[csirt.fpr]["queue"] == "general"


def test_trust_flag_decides_verified(kr, world):
    alice = world.people["alice"]
    kr.import_key(alice.public)
    raw = mail(headers(ALICE), pgp_signed(world, alice, text_part("hello\n")))
    assert unwrap(raw, kr)["security"]["verdict"] == "unverified"
    assert kr.set_trust(alice.fpr, True)["trusted"] is True
    assert unwrap(raw, kr)["security"]["verdict"] == "verified"
    kr.set_trust(alice.fpr, False)
    assert unwrap(raw, kr)["security"]["verdict"] == "unverified"


def test_delete_key(kr, world):
    alice = world.people["alice"]
    kr.import_key(alice.public, trusted=True)
    raw = mail(headers(ALICE), pgp_signed(world, alice, text_part("hello\n")))
    assert unwrap(raw, kr)["security"]["verdict"] == "verified"
    assert kr.delete_key(alice.fpr.lower())["fingerprint"] == alice.fpr
    assert alice.fpr not in by_fpr(kr)
    assert unwrap(raw, kr)["security"]["signature"] == "unknown-key"
    with pytest.raises(NotFound):
        kr.delete_key(alice.fpr)
    with pytest.raises(NotFound):
        kr.set_trust("00" * 20, True)


def test_expiry_flags(kr, world):
    soon = world.make("soon", "Soon Expiring", "soon@example.net", expire="10d")
    later = world.make("later", "Later Expiring", "later@example.net", expire="400d")
    kr.import_key(soon.public + later.public + world.people["old"].public)
    listed = by_fpr(kr)
    s, l, o = listed[soon.fpr], listed[later.fpr], listed[world.people["old"].fpr]
    assert s["expiring_soon"] is True and s["expired"] is False
    exp = datetime.fromisoformat(s["expires"])
    assert timedelta(days=9) < exp - datetime.now(timezone.utc) < timedelta(days=11)
    assert l["expiring_soon"] is False and l["expires"] is not None
    assert o["expired"] is True and o["expiring_soon"] is False


def test_revoked_key_is_listed_as_revoked(kr, world):
    rev = world.people["rev"]
    kr.import_key(rev.public)
    assert by_fpr(kr)[rev.fpr]["revoked"] is True


def test_replicas_share_the_database_not_the_home(tmp_path, world):
    """Two processes = two Keyrings with their own caches over one database: a key
    imported through one is used by the other; each has its own GnuPG home, and
    closing a replica stops its agent and removes its home."""
    db = tmp_path / "crypto.db"
    one, two = new_keyring(db), new_keyring(db)
    try:
        alice = world.people["alice"]
        raw = mail(headers(ALICE), pgp_signed(world, alice, text_part("hello\n")))
        assert unwrap(raw, two)["security"]["signature"] == "unknown-key"
        one.import_key(alice.public, trusted=True)
        assert unwrap(raw, two)["security"]["verdict"] == "verified"
        with one.material() as m1, two.material() as m2:
            assert m1.gpg.home != m2.gpg.home and len(m1.gpg.home) < 40
            home = m2.gpg.home
        assert agent_running(home)
    finally:
        one.close()
        two.close()
    assert not os.path.exists(home)
    assert not agent_running(home)


def test_old_material_is_closed_after_a_change(kr, world):
    kr.import_key(world.people["alice"].public)
    with kr.material() as m:
        first = m.gpg.home
    kr.import_key(world.people["bob"].public)
    with kr.material() as m:
        assert m.gpg.home != first
    assert not os.path.exists(first)


def test_smime_certificates_anchor_crl_and_private_key(kr, pki, tmp_path):
    c = pki.certs
    made = kr.import_key(pki.ca, trusted=True)
    assert made[0]["anchor"] is True and made[0]["is_ca"] is True
    made = kr.import_key(pki.crl_pem)
    assert made[0]["kind"] == "crl" and made[0]["issuer"] == "CN=Osprey Test CA"
    der = subprocess.run(["openssl", "x509", "-outform", "DER"], input=c["alice"].cert, capture_output=True,
                         check=True).stdout
    made = kr.import_key(der)
    assert made[0]["fingerprint"] == c["alice"].fingerprint and made[0]["addresses"] == ["alice@example.net"]
    assert made[0]["anchor"] is False and "sign" in made[0]["usage"]
    made = kr.import_key(c["csirt"].cert + c["csirt"].key, queue="general")
    assert made[0]["secret"] is True and made[0]["queue"] == "general"
    with pytest.raises(BadRequest):
        kr.import_key(c["bob"].cert + c["alice"].key)     # key of another certificate
    listed = kr.list_keys()
    assert {k["kind"] for k in listed} == {"x509", "crl"}
    raw = mail(headers(ALICE), smime_signed(pki, c["alice"], text_part("hello\n")))
    assert unwrap(raw, kr)["security"]["verdict"] == "verified"
    crl = next(k for k in listed if k["kind"] == "crl")
    kr.delete_key(crl["fingerprint"])
    assert all(k["kind"] != "crl" for k in kr.list_keys())


def test_encrypted_private_key_needs_its_passphrase(kr, pki, monkeypatch):
    c = pki.certs["csirt"]
    enc = subprocess.run(["openssl", "pkey", "-aes256", "-passout", "pass:p12pw"], input=c.key,
                         capture_output=True, check=True).stdout
    monkeypatch.setenv("OSPREY_TEST_SMIME_PW", "p12pw")
    made = kr.import_key(c.cert + enc, passphrase_env="OSPREY_TEST_SMIME_PW")
    assert made[0]["secret"] is True
    with kr.material() as m:
        assert m.problems == {} and m.smime.keys
    monkeypatch.setenv("OSPREY_TEST_SMIME_PW", "wrong")
    kr.set_trust(c.fingerprint, False)
    with kr.material() as m:
        assert "passphrase" in m.problems[c.fingerprint] and not m.smime.keys


def test_bad_input(kr):
    for data in (b"", b"hello world", b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n!!!!\n-----END PGP PUBLIC KEY BLOCK-----\n",
                 b"\x30\x03\x02\x01\x01", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(BadRequest):
            kr.import_key(data)
    with pytest.raises(BadRequest):
        kr.import_key(b"\x99\x00\x05abc")       # truncated packet
    with pytest.raises(BadRequest):
        kr.import_key(b"x" * (keys_mod.MAX_KEY_BYTES + 1))


def test_passphrase_reference_is_checked(kr, world):
    for ref in ("not a name", "file:relative/path", "$(reboot)"):
        with pytest.raises(BadRequest):
            kr.import_key(world.people["csirt"].secret, passphrase_env=ref)
    with pytest.raises(BadRequest):
        kr.import_key(world.people["alice"].public, queue="general")     # no secret key to sign with


def test_split_transferable_keys(world):
    blob = dearmor(world.people["alice"].public + world.people["bob"].secret)
    parts = split_transferable(blob)

    def tag(b: int) -> int:
        return b & 0x3F if b & 0x40 else (b >> 2) & 0x0F
    assert [tag(p[0]) for p in parts] == [6, 5]          # public key, secret key
    assert b"".join(parts) == blob


def test_sweep_removes_what_a_killed_replica_left():
    """A replica killed with SIGKILL leaves its GnuPG home (with a running agent) and
    key files behind; the next start sweeps them. Live processes' folders stay.
    (Swept here in a folder of this test's own, not the machine's /dev/shm.)"""
    from services.crypto.gpg import GnuPG
    from services.crypto.proc import OWNER_FILE, sweep_stale
    root = tempfile.mkdtemp(prefix="tsw", dir="/tmp")
    dead = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True).stdout.strip()
    folders = {name: os.path.join(root, name) for name in ("ogdead", "okdead", "ogalive", "other")}
    for name, path in folders.items():
        os.mkdir(path, 0o700)
        with open(os.path.join(path, OWNER_FILE), "w") as fh:
            fh.write(str(os.getpid()) if "alive" in name else dead)
    orphan = GnuPG(folders["ogdead"])
    orphan.launch_agent()
    alive = GnuPG(folders["ogalive"])
    try:
        assert agent_running(orphan.home)
        assert sorted(sweep_stale(root)) == [folders["ogdead"], folders["okdead"]]
        assert not agent_running(orphan.home)
        assert os.path.exists(folders["ogalive"]) and os.path.exists(folders["other"])
    finally:
        alive.close()
        orphan.close()
        shutil.rmtree(root, ignore_errors=True)
