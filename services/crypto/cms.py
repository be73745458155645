"""S/MIME through ``openssl cms`` (OpenSSL 3): verify, decrypt, sign, encrypt, and
reading certificates and CRLs.

``cryptography`` cannot verify CMS nor decrypt AuthEnvelopedData (AES-GCM), 3DES or
RC2; openssl does all of them. Every run goes through proc.Scratch (deadline, output
cap). Certificate chains are checked against the configured trust anchors only
(never the system store), with CRLs when there are any.
"""
from __future__ import annotations

import functools
import hashlib
import re
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone

from . import der
from .proc import MAX_OUTPUT, Scratch

OPENSSL = "openssl"

PEM_RE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.S)


class CmsError(Exception):
    """openssl could not do what was asked; the message is for people."""


@functools.lru_cache(maxsize=1)
def legacy_args() -> tuple[str, ...]:
    """``-provider legacy -provider default`` where the legacy provider exists (RC2,
    which old S/MIME mail and PKCS#12 files use)."""
    try:
        proc = subprocess.run([OPENSSL, "list", "-providers", "-provider", "legacy", "-provider", "default"],
                              capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ()
    return ("-provider", "legacy", "-provider", "default") if proc.returncode == 0 else ()


# --- certificates and CRLs -------------------------------------------------------

@dataclass
class CertInfo:
    fingerprint: str            # sha256 of the DER, hex upper case
    subject: str
    issuer: str
    serial: str
    not_before: datetime | None
    not_after: datetime | None
    emails: list[str] = field(default_factory=list)
    is_ca: bool = False
    key_usage: str = ""
    ext_key_usage: str = ""
    pem: bytes = b""

    @property
    def self_signed(self) -> bool:
        return self.subject == self.issuer

    def as_dict(self) -> dict:
        return {"fingerprint": self.fingerprint, "subject": self.subject, "issuer": self.issuer,
                "serial": self.serial, "addresses": list(self.emails),
                "not_before": _iso(self.not_before), "not_after": _iso(self.not_after), "is_ca": self.is_ca}


@dataclass
class CrlInfo:
    fingerprint: str
    issuer: str
    last_update: datetime | None
    next_update: datetime | None
    pem: bytes


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _date(text: str) -> datetime | None:
    try:
        return datetime.strptime(" ".join(text.split()), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def pem_blocks(data: bytes) -> list[tuple[str, bytes]]:
    return [(m.group(1).decode(), m.group(0) + b"\n") for m in PEM_RE.finditer(data)]


def _openssl(sc: Scratch, args: list[str], stdin: bytes = b"", timeout: float = 20):
    return sc.run([OPENSSL, *args], stdin, timeout=timeout, max_output=MAX_OUTPUT)


def to_pem(data: bytes, kind: str = "x509") -> bytes:
    """A DER certificate (kind x509) or CRL (kind crl) as PEM; PEM passes through."""
    if b"-----BEGIN" in data:
        return data
    with Scratch() as sc:
        res = _openssl(sc, [kind, "-inform", "DER", "-outform", "PEM"], data)
    if not res.ok:
        raise CmsError(f"not a DER {'certificate' if kind == 'x509' else 'CRL'}")
    return res.stdout


def cert_info(pem: bytes) -> CertInfo:
    """The fields of a PEM certificate (cached: the same signers come back)."""
    info = _cert_info(bytes(pem).strip())
    return CertInfo(**{**info.__dict__, "emails": list(info.emails)})


@functools.lru_cache(maxsize=512)
def _cert_info(pem: bytes) -> CertInfo:
    pem = pem + b"\n"
    with Scratch() as sc:
        res = _openssl(sc, ["x509", "-noout", "-fingerprint", "-sha256", "-subject", "-issuer", "-serial",
                            "-startdate", "-enddate", "-nameopt", "RFC2253",
                            "-ext", "subjectAltName,basicConstraints,keyUsage,extendedKeyUsage"], pem)
    if not res.ok:
        raise CmsError("not a readable X.509 certificate")
    info = CertInfo("", "", "", "", None, None, pem=pem)
    ext = None
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        if line.startswith("    ") and ext:
            value = line.strip()
            if ext == "Subject Alternative Name":
                for item in value.split(","):
                    item = item.strip()
                    if item.lower().startswith("email:"):
                        info.emails.append(item[6:].strip().lower())
            elif ext == "Basic Constraints":
                info.is_ca = "CA:TRUE" in value
            elif ext == "Key Usage":
                info.key_usage = value
            elif ext == "Extended Key Usage":
                info.ext_key_usage = value
            continue
        ext = None
        key, _, value = line.partition("=")
        if line.startswith("X509v3 "):
            ext = line[7:].split(":")[0].strip()
        elif key.lower().endswith("fingerprint"):
            info.fingerprint = value.replace(":", "").upper()
        elif key == "subject":
            info.subject = value.strip()
        elif key == "issuer":
            info.issuer = value.strip()
        elif key == "serial":
            info.serial = value.strip()
        elif key == "notBefore":
            info.not_before = _date(value)
        elif key == "notAfter":
            info.not_after = _date(value)
    for m in re.finditer(r"(?:^|,)emailAddress=([^,+]+)", info.subject):
        addr = m.group(1).strip().lower()
        if addr not in info.emails:
            info.emails.append(addr)
    return info


def crl_info(pem: bytes) -> CrlInfo:
    with Scratch() as sc:
        res = _openssl(sc, ["crl", "-noout", "-issuer", "-lastupdate", "-nextupdate", "-nameopt", "RFC2253"], pem)
    if not res.ok:
        raise CmsError("not a readable CRL")
    info = CrlInfo(hashlib.sha256(pem.strip()).hexdigest().upper(), "", None, None, pem)
    for line in res.stdout.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition("=")
        if key == "issuer":
            info.issuer = value.strip()
        elif key == "lastUpdate":
            info.last_update = _date(value)
        elif key == "nextUpdate":
            info.next_update = _date(value)
    return info


def key_matches_cert(key_pem: bytes, cert_pem: bytes, passphrase: str | None = None) -> bool:
    with Scratch() as sc:
        a = _openssl(sc, ["x509", "-noout", "-pubkey"], cert_pem)
        b = _unlock(sc, key_pem, passphrase, ["-pubout"])
    return a.ok and b.ok and a.stdout.strip() == b.stdout.strip()


def _unlock(sc: Scratch, key_pem: bytes, passphrase: str | None, extra: list[str]):
    env = {"PATH": "/usr/bin:/bin", "OSPREY_KEY_PASS": passphrase or ""}
    return sc.run([OPENSSL, "pkey", "-passin", "env:OSPREY_KEY_PASS", *extra], key_pem, env=env, timeout=20)


def unlock_key(key_pem: bytes, passphrase: str | None) -> bytes:
    """The private key as unencrypted PEM (for the process's private key folder)."""
    with Scratch() as sc:
        res = _unlock(sc, key_pem, passphrase, [])
    if not res.ok:
        raise CmsError("the private key could not be read: passphrase missing or wrong")
    return res.stdout


# --- verify ----------------------------------------------------------------------

@dataclass
class SmimeSig:
    status: str                        # good | bad | unknown-key | expired | revoked | error
    chain_ok: bool = False             # verified to a configured trust anchor
    signer: CertInfo | None = None
    reason: str | None = None
    content: bytes | None = None       # opaque signed-data: the signed content
    info: der.CmsInfo | None = None
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)


@dataclass
class SmimeStore:
    """Where a materialised keyring keeps its PEM files (keys.Material fills it)."""
    anchors: str | None = None        # trusted CA certificates + CRLs, for -CAfile
    has_crls: bool = False
    certs: str | None = None          # every other known certificate, for -certfile
    keys: list[tuple[str, str, str]] = field(default_factory=list)   # (fingerprint, cert path, key path)


def _errors(text: str) -> str:
    m = re.search(r"Verify error: ?(.*)", text)
    if m:
        return m.group(1).strip()
    for pat, msg in (("no signers", "no signers"), ("content verify error", "content verify error"),
                     ("signer certificate not found", "signer certificate not found")):
        if pat in text:
            return msg
    lines = [ln for ln in text.splitlines() if ln.strip() and "CMS Verification" not in ln]
    if lines:
        parts = lines[-1].split(":")
        return parts[-3] if len(parts) >= 5 else lines[-1][:200]
    return "unknown error"


def verify(signature: bytes, content: bytes | None, store: SmimeStore) -> SmimeSig:
    """Check a CMS SignedData: detached over ``content`` (multipart/signed), or
    opaque (``content`` None; the signed content is returned in ``.content``)."""
    try:
        blob = der.to_der(signature)
        info = der.inspect(blob)
    except der.Malformed as exc:
        return SmimeSig("error", reason=f"the S/MIME signature is malformed ({exc})")
    sig = SmimeSig("error", info=info)
    if info.content_type != der.OID_SIGNED:
        sig.reason = f"not a signature but {info.kind}"
        return sig
    if info.econtent_type != der.OID_DATA:
        sig.blockers.append(f"the signed content is of type {info.econtent_type}, not data")
    if content is not None and info.econtent_present:
        sig.blockers.append("the detached signature carries content of its own, which is not what is displayed")
    if content is None and not info.econtent_present:
        sig.reason = "the signed-data carries no content (a detached signature without its content)"
        return sig
    if info.signers == 0:
        sig.reason = "the CMS signature has no signers"
        return sig
    if info.signers > 1:
        sig.blockers.append(f"the CMS signature has {info.signers} signers")

    with Scratch() as sc:
        in_path = sc.file(blob, "sig.der")
        content_path = sc.file(content, "content") if content is not None else None

        def attempt(mode: str):
            signer_path, out_path = sc.name("signer.pem"), sc.name("out")
            args = ["cms", "-verify", "-binary", "-inform", "DER", "-in", in_path, "-no-CApath", "-no-CAstore",
                    "-signer", signer_path, "-out", out_path]
            if content_path:
                args += ["-content", content_path]
            if store.certs:
                args += ["-certfile", store.certs]
            if mode == "noverify":
                args += ["-noverify"]
            elif store.anchors:
                args += ["-CAfile", store.anchors]
                if mode == "crl" and store.has_crls:
                    args += ["-crl_check"]
            else:
                args += ["-no-CAfile"]
            res = _openssl(sc, args)
            signer = None
            try:
                with open(signer_path, "rb") as fh:
                    pem = fh.read(1 << 20)
                blocks = pem_blocks(pem)
                if blocks:
                    signer = cert_info(blocks[0][1])
            except (OSError, CmsError):
                signer = None
            out = None
            if res.ok and content_path is None:
                try:
                    with open(out_path, "rb") as fh:
                        out = fh.read(MAX_OUTPUT + 1)
                except OSError:
                    out = None
            return res, signer, out

        res, signer, out = attempt("crl")
        err = _errors(res.text) if not res.ok else ""
        if not res.ok and err == "unable to get certificate CRL":
            res, signer, out = attempt("plain")
            if res.ok:
                sig.warnings.append("revocation not checked: there is no CRL for the issuer of the signer's certificate")
            err = _errors(res.text) if not res.ok else ""
        if res.ok:
            sig.status, sig.chain_ok, sig.signer, sig.content = "good", True, signer, out
            return _checked_size(sig)
        if res.timed_out:
            sig.reason = "openssl took too long (time limit reached)"
            return sig
        if not _chain_problem(res.text):
            return _failure(sig, err, res.text)
        chain_reason = err
        res2, signer2, out2 = attempt("noverify")
        if not res2.ok:
            return _failure(sig, _errors(res2.text), res2.text)
        sig.signer, sig.content = signer2, out2
        low = chain_reason.lower()
        if "revoked" in low:
            sig.status, sig.reason = "revoked", "the signer's certificate is revoked"
        elif "expired" in low:
            sig.status, sig.reason = "expired", "the signer's certificate has expired"
        elif "not yet valid" in low:
            sig.status, sig.reason = "error", "the signer's certificate is not yet valid"
        else:
            sig.status = "good"
            sig.warnings.append(f"certificate chain not trusted: {chain_reason}")
        return _checked_size(sig)


def _checked_size(sig: SmimeSig) -> SmimeSig:
    if sig.content is not None and len(sig.content) > MAX_OUTPUT:
        sig.status, sig.content = "error", None
        sig.reason = f"the signed content is larger than {MAX_OUTPUT // (1024 * 1024)} MiB"
    return sig


def _chain_problem(text: str) -> bool:
    return "Verify error" in text or "certificate verify error" in text


def _failure(sig: SmimeSig, err: str, text: str = "") -> SmimeSig:
    low = err.lower()
    if "unsupported algorithm" in text or "X509_PUBKEY_get0:decode error" in text:
        sig.status, sig.reason = "error", "the signer's public key cannot be used (unsupported or damaged key)"
    elif "content verify error" in low or "verification failure" in low or "digest" in low or "signature failure" in low:
        sig.status, sig.reason = "bad", "the signature does not match the content"
    elif "signer certificate not found" in low:
        sig.status, sig.reason = "unknown-key", "the signer's certificate is neither in the message nor in the keyring"
    elif "no signers" in low:
        sig.status, sig.reason = "error", "the CMS signature has no signers"
    else:
        sig.status, sig.reason = "error", f"the signature could not be checked: {err}"
    return sig


# --- decrypt ---------------------------------------------------------------------

@dataclass
class SmimeDecrypted:
    data: bytes | None
    kind: str
    failure: str | None = None
    key: str | None = None       # fingerprint of the certificate whose key worked


def decrypt(blob: bytes, store: SmimeStore) -> SmimeDecrypted:
    try:
        data = der.to_der(blob)
        info = der.inspect(data)
    except der.Malformed as exc:
        return SmimeDecrypted(None, "unknown", f"the S/MIME data is malformed ({exc})")
    if info.content_type not in (der.OID_ENVELOPED, der.OID_AUTH_ENVELOPED):
        return SmimeDecrypted(None, info.kind, f"not encrypted data but {info.kind}")
    if not store.keys:
        return SmimeDecrypted(None, info.kind, "no S/MIME private key in the keyring")
    last = "no private key in the keyring matches the recipients"
    with Scratch() as sc:
        in_path = sc.file(data, "msg.der")
        for fpr, cert_path, key_path in store.keys:
            out_path = sc.name("plain")
            res = _openssl(sc, ["cms", "-decrypt", "-binary", "-inform", "DER", "-in", in_path, "-recip", cert_path,
                                "-inkey", key_path, "-out", out_path, *legacy_args()])
            if res.timed_out:
                return SmimeDecrypted(None, info.kind, "openssl took too long (time limit reached)")
            if res.too_large:
                return SmimeDecrypted(None, info.kind, "the content is larger than the limit")
            if res.ok:
                with open(out_path, "rb") as fh:
                    plain = fh.read(MAX_OUTPUT + 1)
                if len(plain) > MAX_OUTPUT:
                    return SmimeDecrypted(None, info.kind, "the content is larger than the limit")
                return SmimeDecrypted(plain, info.kind, None, fpr)
            text = res.text
            low = text.lower()
            # openssl says "Error decrypting CMS using private key" when -recip matches no
            # RecipientInfo, too: try the next key
            if "no matching recipient" in low or "no recipient" in low or "using private key" in low:
                continue
            last = "decryption failed: " + _errors(text)
    return SmimeDecrypted(None, info.kind, last)


# --- sign / encrypt ----------------------------------------------------------------

def sign(data: bytes, cert_path: str, key_path: str, chain_path: str | None = None) -> bytes:
    """A detached CMS signature (DER) over ``data`` exactly as given."""
    with Scratch() as sc:
        in_path, out_path = sc.file(data, "data"), sc.name("sig.der")
        args = ["cms", "-sign", "-binary", "-md", "sha256", "-signer", cert_path, "-inkey", key_path,
                "-outform", "DER", "-in", in_path, "-out", out_path]
        if chain_path:
            args += ["-certfile", chain_path]
        res = _openssl(sc, args)
        if not res.ok:
            raise CmsError("openssl could not sign: " + _errors(res.text))
        with open(out_path, "rb") as fh:
            return fh.read()


def encrypt(data: bytes, cert_pems: list[bytes], cipher: str = "aes-256-cbc") -> bytes:
    """EnvelopedData (CBC ciphers) or AuthEnvelopedData (``aes-256-gcm``), DER."""
    if cipher not in ("aes-128-cbc", "aes-256-cbc", "aes-128-gcm", "aes-256-gcm"):
        raise CmsError(f"unsupported cipher {cipher}")
    with Scratch() as sc:
        in_path, out_path = sc.file(data, "data"), sc.name("enc.der")
        recips = [sc.file(pem, f"r{i}.pem") for i, pem in enumerate(cert_pems)]
        res = _openssl(sc, ["cms", "-encrypt", "-binary", f"-{cipher}", "-outform", "DER", "-in", in_path,
                            "-out", out_path, *recips])
        if not res.ok:
            raise CmsError("openssl could not encrypt: " + _errors(res.text))
        with open(out_path, "rb") as fh:
            return fh.read()
