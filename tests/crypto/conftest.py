"""Fixtures of the crypto tests: a world of correspondents with real keys, a test PKI,
and the CSIRT's own keyring (a real SQLite database prepared by the service's
migrations, materialised into a real GnuPG home)."""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest
from sqlalchemy.orm import sessionmaker

from osprey.db import make_engine, prepare
from services.crypto.keys import Keyring
from services.crypto.models import MIGRATIONS

from services.crypto import mime

from .world import Pki, PgpWorld, text_part

CSIRT_PW_ENV = "OSPREY_TEST_CSIRT_PW"
CSIRT_PW = "csirt-secret-pw"


@pytest.fixture(scope="session")
def world():
    w = PgpWorld()
    w.make("alice", "Alice Reporter", "alice@example.net")
    w.make("bob", "Bob Other", "bob@example.com")
    w.make("mallory", "Mallory", "mallory@evil.example")
    w.make("carol", "Carol Unknown", "carol@example.net")          # never given to the CSIRT
    w.make("csirt", "CSIRT", "csirt@example.org", passphrase=CSIRT_PW)
    w.make("old", "Old Timer", "old@example.net", expire="1y", faked_time="20200101T000000!")
    rev = w.make("rev", "Revoked Person", "rev@example.net")
    # a signature made while the key was good; the key is revoked afterwards
    w.rev_entity = text_part("Signed before the key was revoked.\n")
    w.rev_signature = w.detach_sign(rev, mime.canonical(w.rev_entity))
    w.revoke(rev)
    yield w
    w.close()


@pytest.fixture(scope="session")
def pki():
    p = Pki()
    p.certs = {
        "alice": p.issue("alice", "Alice Reporter", "alice@example.net"),
        "bob": p.issue("bob", "Bob Other", "bob@example.com"),
        "csirt": p.issue("csirt", "CSIRT", "csirt@example.org"),
        "rita": p.issue("rita", "Rita Revoked", "rita@example.net"),
        "old": p.issue("old", "Old Timer", "old@example.net", startdate="20200101000000Z",
                       enddate="20210101000000Z"),
        "mallory": p.self_signed("mallory", "Mallory", "mallory@evil.example"),
    }
    p.revoke(p.certs["rita"])
    p.crl_pem = p.crl()
    yield p
    p.close()


def new_keyring(path) -> Keyring:
    engine = make_engine(f"sqlite:///{path}")
    prepare(engine, MIGRATIONS)
    return Keyring(sessionmaker(bind=engine, expire_on_commit=False))


@pytest.fixture(scope="session")
def csirt_pw():
    old = os.environ.get(CSIRT_PW_ENV)
    os.environ[CSIRT_PW_ENV] = CSIRT_PW
    yield CSIRT_PW
    if old is None:
        os.environ.pop(CSIRT_PW_ENV, None)
    else:
        os.environ[CSIRT_PW_ENV] = old


@pytest.fixture(scope="session")
def keyring(world, pki, csirt_pw):
    """The CSIRT's keyring: its own queue key (secret, passphrase from the
    environment), correspondents' public keys (alice, mallory, old, rev trusted;
    bob not), the test CA as trust anchor with its CRL, alice's certificate, its own
    S/MIME certificate and key."""
    folder = tempfile.mkdtemp(prefix="tkr", dir="/tmp")
    kr = new_keyring(os.path.join(folder, "crypto.db"))
    p = world.people
    kr.import_key(p["csirt"].secret, trusted=True, queue="general", passphrase_env=CSIRT_PW_ENV)
    for label in ("alice", "mallory", "old", "rev"):
        kr.import_key(p[label].public, trusted=True)
    kr.import_key(p["bob"].public)
    kr.import_key(pki.ca, trusted=True)
    kr.import_key(pki.crl_pem)
    kr.import_key(pki.certs["alice"].cert)
    kr.import_key(pki.certs["csirt"].cert + pki.certs["csirt"].key, queue="general")
    yield kr
    kr.close()
    shutil.rmtree(folder, ignore_errors=True)
