"""The keyring: keys, certificates and CRLs in the crypto service's database, and
the per-process material (a GnuPG home, PEM files) built from them.

- ``Keyring(session_factory, cache)``: import / list / delete / trust / queue keys
  (every change raises ``keyring_state.version`` in the same transaction), and
  ``material()``: the process's current ``Material``, rebuilt when the version moved,
  so every replica uses the keys in the database and nothing else.
- ``Material``: one short-lived GnuPG home (passphrases of secret keys preset into its
  agent, each secret key probed once) plus the S/MIME files: trust anchors with the
  CRLs (``-CAfile``), the other certificates (``-certfile``) and the unlocked private
  keys (mode 600, in RAM under /dev/shm). ``close()`` stops its gpg-agent.

Trust is the admin's: ``trusted`` on an OpenPGP key means its signatures can make a
mail "verified"; on a CA certificate it makes the CA a trust anchor; on an end-entity
certificate it pins that certificate.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import re
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from . import cms
from .exceptions import BadRequest, NotFound
from .gpg import GnuPG, KeyInfo, uid_address
from .models import Crl, Key, KeyringState
from .proc import private_dir

log = logging.getLogger(__name__)

# tunables (module constants; see docs/crypto.md)
EXPIRY_WARNING_DAYS = 30             # "expiring soon" within this many days
SECRETS_DIR = "/run/secrets"         # passphrase files: SECRETS_DIR/<name> when $<name> is unset
MAX_KEY_BYTES = 4 * 1024 * 1024      # largest key / certificate bundle accepted

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,199}$")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:   # SQLite drops the zone; stored as UTC
        value = value.replace(tzinfo=timezone.utc)
    return value


def _ts(value: int | None) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value else None


# --- passphrases -------------------------------------------------------------------

def check_passphrase_ref(ref: str | None) -> str | None:
    if ref in (None, ""):
        return None
    ref = str(ref)
    if ref.startswith("file:"):
        if not os.path.isabs(ref[5:]):
            raise BadRequest("a passphrase file must be an absolute path: file:/path/to/file")
        return ref
    if not _ENV_NAME.match(ref):
        raise BadRequest(f"{ref!r} is no environment variable name (or file:/absolute/path)")
    return ref


def passphrase_for(ref: str | None) -> str | None:
    """The passphrase a key record points to: ``NAME`` is the environment variable
    NAME, else the file SECRETS_DIR/NAME (a mounted secret); ``file:/path`` a file.
    None when it is not there."""
    if not ref:
        return None
    path = None
    if ref.startswith("file:"):
        path = ref[5:]
    else:
        value = os.environ.get(ref)
        if value is not None:
            return value
        path = os.path.join(SECRETS_DIR, ref)
    try:
        with open(path, "r", encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except OSError:
        return None


# --- OpenPGP blobs -------------------------------------------------------------------

_ARMOR = re.compile(rb"-----BEGIN PGP ([A-Z ,0-9/]+)-----\r?\n(.*?)-----END PGP \1-----", re.S)


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets from armored blocks (all of them, concatenated), or the
    data itself when it is binary already."""
    blocks = list(_ARMOR.finditer(data))
    if not blocks:
        return data
    out = []
    for m in blocks:
        body = m.group(2).replace(b"\r\n", b"\n")
        head, sep, rest = body.partition(b"\n\n")
        if not sep:              # no armor headers, no blank line
            rest = body
            if b":" in head.split(b"\n", 1)[0]:
                rest = body.split(b"\n", 1)[1] if b"\n" in body else b""
        lines = [ln.strip() for ln in rest.split(b"\n") if ln.strip() and not ln.strip().startswith(b"=")]
        try:
            out.append(base64.b64decode(b"".join(lines), validate=False))
        except Exception:
            raise BadRequest("the armored OpenPGP data is damaged") from None
    return b"".join(out)


def split_transferable(data: bytes) -> list[bytes]:
    """Binary OpenPGP data cut into one transferable key each (at every primary
    key packet: tag 5 secret, tag 6 public)."""
    keys: list[bytearray] = []
    pos, n = 0, len(data)
    while pos < n:
        b = data[pos]
        if not b & 0x80:
            raise BadRequest("not OpenPGP data (bad packet header)")
        if b & 0x40:
            tag = b & 0x3F
            if pos + 1 >= n:
                raise BadRequest("truncated OpenPGP data")
            l1 = data[pos + 1]
            if l1 < 192:
                hlen, length = 2, l1
            elif l1 < 224:
                if pos + 2 >= n:
                    raise BadRequest("truncated OpenPGP data")
                hlen, length = 3, ((l1 - 192) << 8) + data[pos + 2] + 192
            elif l1 == 255:
                hlen, length = 6, int.from_bytes(data[pos + 2:pos + 6], "big")
            else:
                raise BadRequest("OpenPGP keys may not use partial body lengths")
        else:
            tag = (b >> 2) & 0x0F
            ltype = b & 3
            if ltype == 3:
                hlen, length = 1, n - pos - 1
            else:
                size = (1, 2, 4)[ltype]
                hlen, length = 1 + size, int.from_bytes(data[pos + 1:pos + 1 + size], "big")
        end = pos + hlen + length
        if end > n:
            raise BadRequest("truncated OpenPGP data")
        if tag in (5, 6):
            keys.append(bytearray())
        if keys:
            keys[-1] += data[pos:end]
        pos = end
    return [bytes(k) for k in keys]


def _usage(caps: str) -> str:
    names = {"E": "encrypt", "S": "sign", "C": "certify", "A": "authenticate"}
    return ",".join(v for k, v in names.items() if k in caps.upper())


def _pgp_expiry(info: KeyInfo) -> datetime | None:
    """When the key stops being usable: the earliest expiry of the primary key and
    its valid subkeys (an encryption subkey often expires first)."""
    dates = [info.expires] + [s.expires for s in info.subkeys if s.validity not in ("r", "e")]
    dates = [d for d in dates if d]
    return _ts(min(dates)) if dates else None


# --- the material a process works with -----------------------------------------------

@dataclass
class Material:
    version: int
    gpg: GnuPG
    folder: str
    pgp: dict[str, KeyInfo] = field(default_factory=dict)          # primary fingerprint → listing
    pgp_secret: set[str] = field(default_factory=set)
    records: dict[str, dict] = field(default_factory=dict)          # fingerprint → key record (as_dict)
    smime: cms.SmimeStore = field(default_factory=cms.SmimeStore)
    certs: dict[str, cms.CertInfo] = field(default_factory=dict)   # x509 fingerprint → info
    problems: dict[str, str] = field(default_factory=dict)         # fingerprint → why it is unusable
    closed: bool = False

    def trusted(self, fingerprint: str | None) -> bool:
        rec = self.records.get((fingerprint or "").upper())
        return bool(rec and rec["trusted"])

    def pgp_addresses(self, primary: str) -> list[str]:
        info = self.pgp.get(primary.upper())
        if not info:
            return []
        return [a for a in (uid_address(u) for u in info.uids) if a]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.gpg.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def build_material(version: int, rows: list[Key], crls: list[Crl]) -> Material:
    gpg = GnuPG()
    folder = private_dir("ok")
    m = Material(version, gpg, folder)
    try:
        _build_pgp(m, [r for r in rows if r.kind == "openpgp"])
        _build_smime(m, [r for r in rows if r.kind == "x509"], crls)
        for r in rows:
            m.records[r.fingerprint] = key_dict(r, m)
    except Exception:
        m.close()
        raise
    return m


def _build_pgp(m: Material, rows: list[Key]) -> None:
    if not rows:
        return
    m.gpg.launch_agent()
    blob = b"".join(r.public for r in rows) + b"".join(r.secret for r in rows if r.secret)
    m.gpg.import_keys(blob)
    for info in m.gpg.list_keys():
        m.pgp[info.fingerprint] = info
    secrets_listed = {k.fingerprint: k for k in m.gpg.list_keys(secret=True)}
    m.pgp_secret = set(secrets_listed)
    for r in rows:
        if r.fingerprint not in m.pgp_secret:
            continue
        info = m.pgp.get(r.fingerprint)
        secret = secrets_listed[r.fingerprint]
        if r.passphrase_env:
            pw = passphrase_for(r.passphrase_env)
            if pw is None:
                m.problems[r.fingerprint] = f"passphrase not available (${r.passphrase_env} unset, no secret file)"
                continue
            for grip in secret.keygrips:
                m.gpg.preset_passphrase(grip, pw)
        problem = _probe(m.gpg, info)
        if problem:
            m.problems[r.fingerprint] = problem


def _probe(gpg: GnuPG, info: KeyInfo | None) -> str | None:
    """Use the secret key once, so that a missing or wrong passphrase shows now (in
    the key list) and not as a failed decryption later."""
    if info is None:
        return "the key is not usable by gpg"
    if info.can("e"):
        try:
            enc = gpg.encrypt(b"probe", [info.fingerprint], armor=False)
        except Exception as exc:
            return str(exc)
        res = gpg.decrypt(enc)
        return None if res.decrypted else f"secret key locked: {res.failure}"
    if info.can("s"):
        try:
            gpg.sign(b"probe", info.fingerprint)
        except Exception as exc:
            return str(exc)
    return None


def _build_smime(m: Material, rows: list[Key], crls: list[Crl]) -> None:
    anchors, intermediates, others = [], [], []
    for r in rows:
        try:
            info = cms.cert_info(r.public)
        except cms.CmsError as exc:
            m.problems[r.fingerprint] = str(exc)
            continue
        m.certs[r.fingerprint] = info
        if r.trusted and r.is_ca:
            anchors.append(r.public)
        elif r.is_ca and not info.self_signed:
            # an intermediate CA: openssl cms builds chains only from the message's
            # certificates and the -CAfile store, so it goes there too. Without
            # -partial_chain it vouches for nothing unless its chain ends at an anchor.
            intermediates.append(r.public)
        else:
            others.append(r.public)
        if r.secret:
            pw = passphrase_for(r.passphrase_env) if r.passphrase_env else None
            try:
                key_pem = cms.unlock_key(r.secret, pw)
            except cms.CmsError as exc:
                m.problems[r.fingerprint] = str(exc)
                continue
            cert_path = _write(m.folder, f"{r.fingerprint[:16]}.crt", r.public)
            key_path = _write(m.folder, f"{r.fingerprint[:16]}.key", key_pem)
            m.smime.keys.append((r.fingerprint, cert_path, key_path))
    if anchors:
        m.smime.anchors = _write(m.folder, "anchors.pem", b"".join(_nl(a) for a in anchors + intermediates)
                                 + b"".join(_nl(c.data) for c in crls))
        m.smime.has_crls = bool(crls)
    if others:
        m.smime.certs = _write(m.folder, "certs.pem", b"".join(_nl(o) for o in others))


def _nl(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _write(folder: str, name: str, data: bytes) -> str:
    path = os.path.join(folder, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return path


class MaterialCache:
    """The process's current Material, shared by its workers. A new one is built
    when the database's keyring version moved; the old one is closed (its agent
    stopped) as soon as no worker uses it any more."""

    def __init__(self):
        self._lock = threading.Lock()
        self._current: Material | None = None
        self._users: dict[int, int] = {}
        self._retired: list[Material] = []

    def acquire(self, version: int, rows: Callable[[], tuple[list[Key], list[Crl]]]) -> Material:
        with self._lock:
            cur = self._current
            if cur is None or cur.version != version:
                keys, crls = rows()
                new = build_material(version, keys, crls)
                if cur is not None:
                    self._retire(cur)
                self._current = cur = new
            self._users[id(cur)] = self._users.get(id(cur), 0) + 1
            return cur

    def _retire(self, m: Material) -> None:
        if self._users.get(id(m), 0) == 0:
            self._users.pop(id(m), None)
            m.close()
        else:
            self._retired.append(m)

    def release(self, m: Material) -> None:
        with self._lock:
            self._users[id(m)] = self._users.get(id(m), 1) - 1
            if m in self._retired and self._users[id(m)] <= 0:
                self._retired.remove(m)
                self._users.pop(id(m), None)
                m.close()

    @property
    def current(self) -> Material | None:
        return self._current

    def close(self) -> None:
        with self._lock:
            for m in [self._current, *self._retired]:
                if m is not None:
                    m.close()
            self._current, self._retired, self._users = None, [], {}


# --- records -------------------------------------------------------------------------

def key_dict(k: Key, material: Material | None = None) -> dict:
    now = utcnow()
    expires = _aware(k.expires_at)
    soon = expires is not None and now <= expires <= now + timedelta(days=EXPIRY_WARNING_DAYS)
    return {
        "fingerprint": k.fingerprint,
        "kind": k.kind,
        "key_id": k.fingerprint[-16:] if k.kind == "openpgp" else None,
        "uids": k.uid_list,
        "addresses": k.address_list,
        "algorithm": k.algorithm,
        "usage": [u for u in (k.usage or "").split(",") if u],
        "issuer": k.issuer,
        "is_ca": k.is_ca,
        "anchor": k.kind == "x509" and k.trusted and k.is_ca,
        "created": _iso(k.created_at),
        "expires": _iso(expires),
        "expired": expires is not None and expires < now,
        "expiring_soon": soon,
        "revoked": k.revoked,
        "trusted": k.trusted,
        "secret": k.secret is not None,
        "queue": k.queue,
        "passphrase_env": k.passphrase_env,
        "imported_at": _iso(k.imported_at),
        "problem": material.problems.get(k.fingerprint) if material else None,
    }


def crl_dict(c: Crl) -> dict:
    nxt = _aware(c.next_update)
    return {"fingerprint": c.fingerprint, "kind": "crl", "issuer": c.issuer,
            "last_update": _iso(c.last_update), "next_update": _iso(nxt),
            "expired": nxt is not None and nxt < utcnow(), "imported_at": _iso(c.imported_at)}


def _iso(value: datetime | None) -> str | None:
    value = _aware(value)
    return value.isoformat() if value else None


# --- the keyring -----------------------------------------------------------------------

class Keyring:
    def __init__(self, session_factory: Callable[[], Session], cache: MaterialCache | None = None):
        self._sessions = session_factory
        self.cache = cache or MaterialCache()

    # material -------------------------------------------------------------------------
    def version(self, session: Session) -> int:
        state = session.get(KeyringState, 1)
        return state.version if state else 0

    @contextmanager
    def material(self) -> Iterator[Material]:
        with self._sessions() as session:
            version = self.version(session)

            def rows():
                return (list(session.scalars(select(Key).order_by(Key.imported_at))),
                        list(session.scalars(select(Crl))))

            m = self.cache.acquire(version, rows)
        try:
            yield m
        finally:
            self.cache.release(m)

    def close(self) -> None:
        self.cache.close()

    def _bump(self, session: Session) -> None:
        state = session.get(KeyringState, 1)
        if state is None:
            session.add(KeyringState(id=1, version=1))
        else:
            state.version = state.version + 1

    # reading ---------------------------------------------------------------------------
    def list_keys(self) -> list[dict]:
        """Every key, certificate and CRL; ``problem`` says why a key is unusable in
        this process (e.g. its passphrase is missing or wrong)."""
        try:
            with self.material() as material:
                pass
        except Exception as exc:   # the list must still show what is there
            log.warning("the keyring could not be materialised: %s", exc)
            material = None
        with self._sessions() as session:
            keys = list(session.scalars(select(Key).order_by(Key.kind, Key.imported_at)))
            crls = list(session.scalars(select(Crl).order_by(Crl.imported_at)))
            return [key_dict(k, material) for k in keys] + [crl_dict(c) for c in crls]

    def get_key(self, fingerprint: str) -> dict:
        with self._sessions() as session:
            k = session.get(Key, _fpr(fingerprint))
            if k is None:
                raise NotFound(f"no key {fingerprint}")
            return key_dict(k)

    # changes ---------------------------------------------------------------------------
    def delete_key(self, fingerprint: str) -> dict:
        fpr = _fpr(fingerprint)
        with self._sessions() as session:
            row = session.get(Key, fpr) or session.get(Crl, fpr)
            if row is None:
                raise NotFound(f"no key, certificate or CRL {fingerprint}")
            out = key_dict(row) if isinstance(row, Key) else crl_dict(row)
            session.delete(row)
            self._bump(session)
            session.commit()
            return out

    def set_trust(self, fingerprint: str, trusted: bool) -> dict:
        with self._sessions() as session:
            k = session.get(Key, _fpr(fingerprint))
            if k is None:
                raise NotFound(f"no key {fingerprint}")
            k.trusted = bool(trusted)
            self._bump(session)
            session.commit()
            return key_dict(k)

    def set_queue(self, fingerprint: str, queue: str | None, passphrase_env: str | None = None) -> dict:
        """Make a secret key the signing key of ``queue`` (None: of no queue)."""
        ref = check_passphrase_ref(passphrase_env)
        with self._sessions() as session:
            k = session.get(Key, _fpr(fingerprint))
            if k is None:
                raise NotFound(f"no key {fingerprint}")
            if queue and k.secret is None:
                raise BadRequest(f"{fingerprint} has no secret key: it cannot sign for a queue")
            if queue:
                for other in session.scalars(select(Key).where(Key.queue == queue, Key.kind == k.kind,
                                                               Key.fingerprint != k.fingerprint)):
                    other.queue = None
            k.queue = queue or None
            if passphrase_env is not None:
                k.passphrase_env = ref
            self._bump(session)
            session.commit()
            return key_dict(k)

    def queue_key(self, queue: str, kind: str) -> dict | None:
        with self._sessions() as session:
            k = session.scalars(select(Key).where(Key.queue == queue, Key.kind == kind)).first()
            return key_dict(k) if k else None

    def import_key(self, data: bytes, trusted: bool = False, queue: str | None = None,
                   passphrase_env: str | None = None) -> list[dict]:
        """OpenPGP keys (armored or binary, public or secret), X.509 certificates and
        private keys (PEM or DER, PKCS#12 with the passphrase from ``passphrase_env``),
        CRLs (PEM or DER). Returns the records made or updated."""
        if not data:
            raise BadRequest("no key data")
        if len(data) > MAX_KEY_BYTES:
            raise BadRequest(f"key data larger than {MAX_KEY_BYTES} bytes")
        ref = check_passphrase_ref(passphrase_env)
        kind = sniff(data)
        if kind == "openpgp":
            found = _read_openpgp(data)
        elif kind in ("x509", "der"):
            found = _read_x509(data, ref, der_input=kind == "der")
        else:
            raise BadRequest("neither OpenPGP keys nor X.509 certificates, keys or CRLs")
        if not found["keys"] and not found["crls"]:
            raise BadRequest("no usable key, certificate or CRL found in the data")
        if queue and not any(f.get("secret") for f in found["keys"]):
            raise BadRequest("a queue signing key needs its secret key")
        with self._sessions() as session:
            out = []
            for item in found["keys"]:
                row = session.get(Key, item["fingerprint"])
                if row is None:
                    row = Key(fingerprint=item["fingerprint"], kind=item["kind"], public=item["public"],
                              trusted=bool(trusted))
                    session.add(row)
                elif trusted:
                    row.trusted = True
                for name in ("public", "uids", "addresses", "algorithm", "usage", "issuer", "is_ca", "revoked",
                             "created_at", "expires_at"):
                    setattr(row, name, item[name])
                if item.get("secret") is not None:
                    row.secret = item["secret"]
                if ref is not None:
                    row.passphrase_env = ref
                if queue and item.get("secret") is not None:
                    for other in session.scalars(select(Key).where(Key.queue == queue, Key.kind == item["kind"],
                                                                   Key.fingerprint != item["fingerprint"])):
                        other.queue = None
                    row.queue = queue
                session.flush()
                out.append(row)
            crl_rows = []
            for c in found["crls"]:
                row = session.get(Crl, c.fingerprint)
                if row is None:
                    row = Crl(fingerprint=c.fingerprint, issuer=c.issuer, data=c.pem,
                              last_update=c.last_update, next_update=c.next_update)
                    session.add(row)
                crl_rows.append(row)
            self._bump(session)
            session.commit()
            return [key_dict(k) for k in out] + [crl_dict(c) for c in crl_rows]


def _fpr(value: str) -> str:
    return re.sub(r"[\s:]", "", str(value or "")).upper()


def sniff(data: bytes) -> str:
    head = data.lstrip()[:64]
    if b"-----BEGIN PGP" in data:
        return "openpgp"
    if b"-----BEGIN " in data:
        return "x509"
    if head[:1] == b"\x30":
        return "der"
    if head[:1] and head[0] & 0x80:
        return "openpgp"
    return "unknown"


def _read_openpgp(data: bytes) -> dict:
    binary = dearmor(data)
    parts = split_transferable(binary)
    if not parts:
        raise BadRequest("no OpenPGP key in the data")
    keys: dict[str, dict] = {}
    with GnuPG() as scratch:
        for part in parts:
            infos = scratch.inspect(part)
            if len(infos) != 1:
                continue  # not a key gpg accepts (a lone subkey, garbage)
            info = infos[0]
            item = keys.get(info.fingerprint)
            if item is None:
                scratch.import_keys(part)
                listed = next((k for k in scratch.list_keys() if k.fingerprint == info.fingerprint), None)
                if listed is None:
                    continue  # gpg refused it (no valid self-signature, ...)
                public = scratch.run(["--export", info.fingerprint]).result.stdout
                addresses = []
                for a in (uid_address(u) for u in listed.uids):
                    if a and a not in addresses:
                        addresses.append(a)
                item = keys[info.fingerprint] = {
                    "kind": "openpgp", "fingerprint": info.fingerprint, "public": public, "secret": None,
                    "uids": json.dumps(listed.uids), "addresses": json.dumps(addresses),
                    "algorithm": listed.algo, "usage": _usage(listed.capabilities), "issuer": None,
                    "is_ca": False, "revoked": listed.revoked, "created_at": _ts(listed.created),
                    "expires_at": _pgp_expiry(listed),
                }
            if info.secret:
                item["secret"] = part
    if not keys:
        raise BadRequest("gpg accepted none of the OpenPGP keys (no valid self-signature?)")
    return {"keys": list(keys.values()), "crls": []}


def _read_x509(data: bytes, ref: str | None, der_input: bool) -> dict:
    certs: list[bytes] = []
    private: list[bytes] = []
    crls: list[bytes] = []
    if der_input:
        for kind, bucket in (("x509", certs), ("crl", crls)):
            try:
                bucket.append(cms.to_pem(data, kind))
                break
            except cms.CmsError:
                continue
        else:
            certs_p12, keys_p12 = _pkcs12(data, ref)
            certs += certs_p12
            private += keys_p12
    else:
        for kind, block in cms.pem_blocks(data):
            if kind in ("CERTIFICATE", "X509 CERTIFICATE", "TRUSTED CERTIFICATE"):
                certs.append(block)
            elif kind.endswith("PRIVATE KEY"):
                private.append(block)
            elif kind == "X509 CRL":
                crls.append(block)
    pw = passphrase_for(ref) if ref else None
    items = []
    for pem in certs:
        try:
            info = cms.cert_info(pem)
        except cms.CmsError as exc:
            raise BadRequest(str(exc)) from None
        usage = []
        ku = info.key_usage.lower()
        if not ku or "digital signature" in ku or "non repudiation" in ku:
            usage.append("sign")
        if not ku or "key encipherment" in ku or "key agreement" in ku:
            usage.append("encrypt")
        if info.is_ca:
            usage.append("certify")
        items.append({
            "kind": "x509", "fingerprint": info.fingerprint, "public": pem, "secret": None,
            "uids": json.dumps([info.subject]), "addresses": json.dumps(info.emails), "algorithm": None,
            "usage": ",".join(usage), "issuer": info.issuer, "is_ca": info.is_ca, "revoked": False,
            "created_at": info.not_before, "expires_at": info.not_after,
        })
    for key_pem in private:
        match = [it for it in items if cms.key_matches_cert(key_pem, it["public"], pw)]
        if not match:
            end_entity = [it for it in items if not it["is_ca"]]
            if len(end_entity) == 1 and b"ENCRYPTED" in key_pem and pw is None:
                match = end_entity   # cannot unlock now: checked when the keyring is built
            else:
                raise BadRequest("a private key matches none of the certificates given with it "
                                 "(or its passphrase is missing or wrong)")
        match[0]["secret"] = key_pem
    crl_infos = []
    for pem in crls:
        try:
            crl_infos.append(cms.crl_info(pem))
        except cms.CmsError as exc:
            raise BadRequest(str(exc)) from None
    return {"keys": items, "crls": crl_infos}


def _pkcs12(data: bytes, ref: str | None) -> tuple[list[bytes], list[bytes]]:
    from .proc import Scratch
    pw = passphrase_for(ref) if ref else ""
    env = {"PATH": "/usr/bin:/bin", "OSPREY_P12_PASS": pw or ""}
    with Scratch() as sc:
        res = sc.run(["openssl", "pkcs12", *cms.legacy_args(), "-passin", "env:OSPREY_P12_PASS",
                      "-passout", "env:OSPREY_P12_PASS", *([] if pw else ["-nodes"])], data, env=env, timeout=20)
    if not res.ok:
        raise BadRequest("not a certificate, CRL or PKCS#12 file (or its passphrase is missing or wrong)")
    certs, keys = [], []
    for kind, block in cms.pem_blocks(res.stdout):
        if kind == "CERTIFICATE":
            certs.append(block)
        elif kind.endswith("PRIVATE KEY"):
            keys.append(block)
    return certs, keys
