"""The world outside the CSIRT, for crypto tests: people with real OpenPGP keys and
S/MIME certificates (made here, now), and helpers that write mail the way their
mail clients would — including the forged and rewrapped mail of the 2019 paper
"Johnny, You Are Fired!" (Müller et al., USENIX Security).

Everything is real gpg / openssl; nothing is mocked. Keys: ed25519/cv25519 (fast);
S/MIME: RSA-2048 under a test CA made with ``openssl req`` / ``openssl ca``.
"""
from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services.crypto import mime
from services.crypto.gpg import GnuPG

CRLF = b"\r\n"


@dataclass
class Person:
    name: str
    email: str
    fpr: str
    public: bytes       # armored
    secret: bytes       # armored, protected by ``passphrase`` ("" = none)
    passphrase: str = ""

    @property
    def uid(self) -> str:
        return f"{self.name} <{self.email}>"


class PgpWorld:
    """One GnuPG home holding everybody's secret keys: it writes their mail."""

    def __init__(self):
        # a throwaway GNUPGHOME: short path in RAM (agent socket limit), s2k-count 65536,
        # marked with this process's pid (a killed test run's home is swept later)
        self.gpg = GnuPG()
        self.people: dict[str, Person] = {}

    def close(self):
        self.gpg.close()

    def make(self, label: str, name: str, email: str, passphrase: str = "", expire: str = "never",
             faked_time: str | None = None) -> Person:
        args = ["--pinentry-mode", "loopback", "--passphrase", passphrase]
        if faked_time:
            args = ["--faked-system-time", faked_time] + args
        st = self.gpg.run(args + ["--quick-gen-key", f"{name} <{email}>", "future-default", "default", expire])
        created = st.get("KEY_CREATED")
        assert created, st.result.text
        fpr = created[0][1]
        public = self.gpg.run(["--armor", "--export", fpr]).result.stdout
        secret = self.gpg.run(["--pinentry-mode", "loopback", "--passphrase", passphrase, "--armor",
                               "--export-secret-keys", fpr]).result.stdout
        assert b"PRIVATE KEY" in secret
        p = Person(name, email, fpr, public, secret, passphrase)
        self.people[label] = p
        return p

    def revoke(self, person: Person) -> bytes:
        """Import the revocation certificate gpg made with the key: the public key
        is revoked from now on. Returns the revoked public key."""
        rev = Path(self.gpg.home, "openpgp-revocs.d", f"{person.fpr}.rev").read_text()
        rev = rev.replace(":-----BEGIN PGP PUBLIC KEY BLOCK-----", "-----BEGIN PGP PUBLIC KEY BLOCK-----")
        self.gpg.import_keys(rev.encode())
        person.public = self.gpg.run(["--armor", "--export", person.fpr]).result.stdout
        return person.public

    def _unlock(self, person: Person) -> list[str]:
        return ["--pinentry-mode", "loopback", "--passphrase", person.passphrase]

    # signatures -----------------------------------------------------------------------
    def detach_sign(self, person: Person, data: bytes, faked_time: str | None = None) -> bytes:
        args = self._unlock(person) + ["--armor", "--local-user", person.fpr + "!", "--detach-sign"]
        if faked_time:
            args = ["--faked-system-time", faked_time] + args
        st = self.gpg.run(args, data)
        assert st.result.returncode == 0, st.result.text
        return st.result.stdout

    def clearsign(self, person: Person, text: bytes) -> bytes:
        st = self.gpg.run(self._unlock(person) + ["--local-user", person.fpr + "!", "--clearsign"], text)
        assert st.result.returncode == 0, st.result.text
        return st.result.stdout

    def sign_opaque(self, person: Person, data: bytes, armor: bool = True) -> bytes:
        args = self._unlock(person) + ["--local-user", person.fpr + "!", "--sign"]
        st = self.gpg.run((["--armor"] if armor else []) + args, data)
        assert st.result.returncode == 0, st.result.text
        return st.result.stdout

    def encrypt(self, recipients: list[Person], data: bytes, signer: Person | None = None,
                armor: bool = True, extra: list[str] = ()) -> bytes:
        args = ["--encrypt", *extra]
        for r in recipients:
            args += ["--recipient", r.fpr]
        if signer:
            args = self._unlock(signer) + ["--local-user", signer.fpr + "!", "--sign"] + args
        st = self.gpg.run((["--armor"] if armor else []) + args, data)
        assert st.result.returncode == 0, st.result.text
        return st.result.stdout


# --- S/MIME ---------------------------------------------------------------------------------

CA_CNF = """\
[ ca ]
default_ca = test
[ test ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/newcerts
serial = $dir/serial
crlnumber = $dir/crlnumber
default_md = sha256
policy = anything
default_crl_days = 30
unique_subject = no
copy_extensions = copy
[ anything ]
commonName = supplied
emailAddress = optional
[ user ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, nonRepudiation, keyEncipherment
extendedKeyUsage = emailProtection
"""


@dataclass
class Cert:
    name: str
    email: str
    cert: bytes        # PEM
    key: bytes         # PEM, unencrypted
    fingerprint: str = ""


class Pki:
    """A test CA with a CRL, and certificates made by it (or self-signed)."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="tpki", dir="/tmp"))
        (self.dir / "newcerts").mkdir()
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        (self.dir / "ca.cnf").write_text(CA_CNF.format(dir=self.dir))
        self._run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
                   "-subj", "/CN=Osprey Test CA", "-days", "3650", "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        self.ca = (self.dir / "ca.pem").read_bytes()

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self, args: list[str], stdin: bytes = b"") -> bytes:
        proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, cwd=self.dir, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        return proc.stdout

    def issue(self, label: str, name: str, email: str, startdate: str | None = None,
              enddate: str | None = None, days: int = 365) -> Cert:
        key, csr, out = f"{label}.key", f"{label}.csr", f"{label}.pem"
        self._run(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                   "-subj", f"/CN={name}/emailAddress={email}", "-addext", f"subjectAltName=email:{email}"])
        args = ["ca", "-batch", "-config", "ca.cnf", "-extensions", "user", "-cert", "ca.pem", "-keyfile", "ca.key",
                "-in", csr, "-out", out, "-notext"]
        if startdate:
            args += ["-startdate", startdate, "-enddate", enddate]
        else:
            args += ["-days", str(days)]
        self._run(args)
        return self._cert(name, email, out, key)

    def self_signed(self, label: str, name: str, email: str) -> Cert:
        key, out = f"{label}.key", f"{label}.pem"
        self._run(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", out, "-days", "365",
                   "-subj", f"/CN={name}/emailAddress={email}", "-addext", f"subjectAltName=email:{email}",
                   "-addext", "keyUsage=digitalSignature,keyEncipherment",
                   "-addext", "extendedKeyUsage=emailProtection"])
        return self._cert(name, email, out, key)

    def _cert(self, name, email, out, key) -> Cert:
        pem = (self.dir / out).read_bytes()
        fpr = self._run(["x509", "-noout", "-fingerprint", "-sha256", "-in", out]).decode().split("=")[1]
        return Cert(name, email, pem, (self.dir / key).read_bytes(), fpr.strip().replace(":", "").upper())

    def revoke(self, cert: Cert) -> None:
        path = self.dir / "revoke.pem"
        path.write_bytes(cert.cert)
        self._run(["ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-revoke", "revoke.pem"])

    def crl(self) -> bytes:
        self._run(["ca", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-gencrl", "-out", "crl.pem"])
        return (self.dir / "crl.pem").read_bytes()

    # mail -------------------------------------------------------------------------------
    def cms(self, args: list[str], data: bytes, trailing: list[str] = ()) -> bytes:
        d = Path(tempfile.mkdtemp(prefix="tcms", dir="/tmp"))
        try:
            (d / "in").write_bytes(data)
            proc = subprocess.run(["openssl", "cms", *args, "-in", str(d / "in"), "-out", str(d / "out"), *trailing],
                                  capture_output=True, cwd=self.dir, timeout=60)
            assert proc.returncode == 0, proc.stderr.decode()
            return (d / "out").read_bytes()
        finally:
            shutil.rmtree(d, ignore_errors=True)

    def _files(self, *certs: Cert) -> list[str]:
        out = []
        for c in certs:
            p = self.dir / f"tmp-{c.fingerprint[:12]}"
            p.with_suffix(".crt").write_bytes(c.cert)
            p.with_suffix(".key").write_bytes(c.key)
            out += [str(p.with_suffix(".crt")), str(p.with_suffix(".key"))]
        return out

    def sign(self, signer: Cert, data: bytes, opaque: bool = False, extra_signers: list[Cert] = ()) -> bytes:
        crt, key = self._files(signer)
        args = ["-sign", "-binary", "-md", "sha256", "-signer", crt, "-inkey", key, "-outform", "DER"]
        for other in extra_signers:
            c2, k2 = self._files(other)
            args += ["-signer", c2, "-inkey", k2]
        if opaque:
            args.append("-nodetach")
        return self.cms(args, data)

    def encrypt(self, recipients: list[Cert], data: bytes, cipher: str = "aes-256-cbc") -> bytes:
        paths = []
        for r in recipients:
            paths.append(self._files(r)[0])
        return self.cms(["-encrypt", "-binary", f"-{cipher}", "-outform", "DER"], data, trailing=paths)


# --- writing mail --------------------------------------------------------------------------

def headers(frm: str, to: str = "CSIRT <csirt@example.org>", subject: str = "Incident report",
            extra: list[tuple[str, str]] = ()) -> bytes:
    pairs = [("From", frm), ("To", to), ("Subject", subject), ("Date", "Wed, 25 Nov 2026 10:00:00 +0000"),
             ("Message-ID", "<test@example.net>"), *extra]
    return b"".join(f"{k}: {v}".encode() + CRLF for k, v in pairs)


def text_part(text: str, ctype: str = "text/plain", extra: list[tuple[str, str]] = ()) -> bytes:
    """A 7bit text entity (tamper tests need bytes a flipped letter changes)."""
    head = [("Content-Type", f"{ctype}; charset=us-ascii"), ("Content-Transfer-Encoding", "7bit"), *extra]
    body = text.replace("\r\n", "\n").replace("\n", "\r\n").encode()
    return b"".join(f"{k}: {v}".encode() + CRLF for k, v in head) + CRLF + body


def attachment(name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
    head = [("Content-Type", f'{ctype}; name="{name}"'), ("Content-Transfer-Encoding", "base64"),
            ("Content-Disposition", f'attachment; filename="{name}"')]
    return b"".join(f"{k}: {v}".encode() + CRLF for k, v in head) + CRLF + mime.encode_base64(data)


def multipart(subtype: str, parts: list[bytes], params: str = "", boundary: str | None = None) -> bytes:
    boundary = boundary or mime.new_boundary()
    b = boundary.encode()
    head = f'Content-Type: multipart/{subtype}; boundary="{boundary}"{params}'.encode() + CRLF
    body = b"".join(b"--" + b + CRLF + p + CRLF for p in parts) + b"--" + b + b"--" + CRLF
    return head + CRLF + body


def mail(head: bytes, entity: bytes) -> bytes:
    """A whole mail: the message headers, MIME-Version and the entity (its own
    Content-* header and body)."""
    return head + b"MIME-Version: 1.0" + CRLF + entity


def pgp_signed(world: PgpWorld, signer: Person, entity: bytes, sign_bytes: bytes | None = None) -> bytes:
    sig = world.detach_sign(signer, mime.canonical(sign_bytes if sign_bytes is not None else entity))
    sig_part = (b"Content-Type: application/pgp-signature; name=\"signature.asc\"" + CRLF + CRLF + sig)
    return multipart("signed", [entity, sig_part],
                     params='; protocol="application/pgp-signature"; micalg=pgp-sha512')


def pgp_encrypted(world: PgpWorld, recipients: list[Person], entity: bytes, signer: Person | None = None) -> bytes:
    armored = world.encrypt(recipients, entity, signer=signer)
    version = b"Content-Type: application/pgp-encrypted" + CRLF + CRLF + b"Version: 1" + CRLF
    data = b"Content-Type: application/octet-stream; name=\"encrypted.asc\"" + CRLF + CRLF + armored
    return multipart("encrypted", [version, data], params='; protocol="application/pgp-encrypted"')


def smime_signed(pki: Pki, signer: Cert, entity: bytes, **kw) -> bytes:
    sig = pki.sign(signer, mime.canonical(entity), **kw)
    sig_part = (b'Content-Type: application/pkcs7-signature; name="smime.p7s"' + CRLF
                + b"Content-Transfer-Encoding: base64" + CRLF
                + b'Content-Disposition: attachment; filename="smime.p7s"' + CRLF + CRLF + mime.encode_base64(sig))
    return multipart("signed", [entity, sig_part],
                     params='; protocol="application/pkcs7-signature"; micalg=sha-256')


def smime_opaque(pki: Pki, signer: Cert, entity: bytes) -> bytes:
    der = pki.sign(signer, mime.canonical(entity), opaque=True)
    return (b'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"' + CRLF
            + b"Content-Transfer-Encoding: base64" + CRLF + CRLF + mime.encode_base64(der))


def smime_enveloped(pki: Pki, recipients: list[Cert], entity: bytes, cipher: str = "aes-256-cbc") -> bytes:
    der = pki.encrypt(recipients, mime.canonical(entity), cipher)
    stype = "authEnveloped-data" if "gcm" in cipher else "enveloped-data"
    return (f'Content-Type: application/pkcs7-mime; smime-type={stype}; name="smime.p7m"'.encode() + CRLF
            + b"Content-Transfer-Encoding: base64" + CRLF + CRLF + mime.encode_base64(der))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
