"""Crypto figures: how many incoming mails per second ``unwrap`` verifies and
decrypts on this machine, for PGP/MIME and S/MIME, in this process (no broker).

Keys are made here (ed25519/cv25519 for OpenPGP, RSA-2048 under a test CA for
S/MIME), the mails are a 4 KiB text body plus a 64 KiB attachment (and a 1 MiB
attachment for the "large" rows). Each row runs for ``--seconds``, one after the
other (1 worker) and with ``--workers`` threads (gpg/openssl run as subprocesses,
so threads use several cores). Every result is checked (verdict) while measured.

    cd /work/main && .venv/bin/python bench/crypto.py [--seconds 5] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

import warnings  # noqa: E402

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

from _common import print_machine  # noqa: E402
from sqlalchemy.orm import sessionmaker  # noqa: E402

from osprey.db import make_engine, prepare  # noqa: E402
from services.crypto.keys import Keyring  # noqa: E402
from services.crypto.models import MIGRATIONS  # noqa: E402
from services.crypto.unwrap import unwrap  # noqa: E402
from tests.crypto.world import (Pki, PgpWorld, attachment, headers, mail, multipart, pgp_encrypted,  # noqa: E402
                                pgp_signed, smime_enveloped, smime_signed, text_part)

ALICE = "Alice Reporter <alice@example.net>"


def entity(attach_bytes: int) -> bytes:
    body = ("Dear CSIRT,\n\nthe host 192.0.2.15 serves a phishing kit since 09:00 CET.\n" * 60)[:4096]
    return multipart("mixed", [text_part(body), attachment("evidence.bin", os.urandom(attach_bytes))])


def measure(name: str, raw: bytes, keyring, verdict: str, seconds: float, workers: int) -> None:
    assert unwrap(raw, keyring)["security"]["verdict"] == verdict          # warm up + check
    for n in (1, workers):
        done = 0
        deadline = time.monotonic() + seconds
        start = time.monotonic()

        def loop():
            count = 0
            while time.monotonic() < deadline:
                res = unwrap(raw, keyring)
                assert res["security"]["verdict"] == verdict, res["security"]
                count += 1
            return count
        with ThreadPoolExecutor(n) as pool:
            done = sum(f.result() for f in [pool.submit(loop) for _ in range(n)])
        elapsed = time.monotonic() - start
        print(f"{name:<44} workers={n}  {done / elapsed:7.1f} mails/s  ({1000 * elapsed / done:6.1f} ms each, "
              f"{len(raw) // 1024} KiB mail)")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print_machine("crypto: unwrap (verify / decrypt) throughput")
    world, pki = PgpWorld(), Pki()
    tmp = tempfile.mkdtemp(prefix="bcr", dir="/tmp")
    engine = make_engine(f"sqlite:///{tmp}/crypto.db")
    prepare(engine, MIGRATIONS)
    kr = Keyring(sessionmaker(bind=engine, expire_on_commit=False))
    try:
        t = time.monotonic()
        alice = world.make("alice", "Alice Reporter", "alice@example.net")
        csirt = world.make("csirt", "CSIRT", "csirt@example.org")
        a_cert = pki.issue("alice", "Alice Reporter", "alice@example.net")
        c_cert = pki.issue("csirt", "CSIRT", "csirt@example.org")
        kr.import_key(alice.public, trusted=True)
        kr.import_key(csirt.secret, queue="general")
        kr.import_key(pki.ca, trusted=True)
        kr.import_key(a_cert.cert)
        kr.import_key(c_cert.cert + c_cert.key, queue="general")
        with kr.material():
            pass
        print(f"setup (keys, CA, keyring materialised): {time.monotonic() - t:.2f} s")
        small, large = entity(64 * 1024), entity(1024 * 1024)
        rows = [
            ("PGP/MIME signed: verify", mail(headers(ALICE), pgp_signed(world, alice, small)), "verified"),
            ("PGP/MIME signed+encrypted: decrypt+verify", mail(headers(ALICE),
             pgp_encrypted(world, [csirt], small, signer=alice)), "verified"),
            ("PGP/MIME encrypted, 1 MiB: decrypt", mail(headers(ALICE), pgp_encrypted(world, [csirt], large)),
             "encrypted-only"),
            ("S/MIME signed: verify", mail(headers(ALICE), smime_signed(pki, a_cert, small)), "verified"),
            ("S/MIME signed+enveloped (AES-CBC): decrypt+verify", mail(headers(ALICE), smime_enveloped(
                pki, [c_cert], smime_signed(pki, a_cert, small))), "verified"),
            ("S/MIME enveloped, 1 MiB (AES-GCM): decrypt", mail(headers(ALICE), smime_enveloped(
                pki, [c_cert], large, "aes-256-gcm")), "encrypted-only"),
            ("plain mail (no crypto)", mail(headers(ALICE), small), "none"),
        ]
        for name, raw, verdict in rows:
            measure(name, raw, kr, verdict, args.seconds, args.workers)
    finally:
        kr.close()
        world.close()
        pki.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
