"""GnuPG, driven through its machine interface (``--status-file``, ``--with-colons``).

One ``GnuPG`` is one short-lived home folder (in RAM where possible, a short path
because the agent's socket path is limited to ~107 characters) with its own
gpg-agent, stopped by ``close()``. Nothing in it is the truth: the keys come from the
crypto service's database (keys.py) and a home is rebuilt from there at will.

Trust is not gpg's business here: ``trust-model always`` keeps gpg quiet about its
web of trust, and Osprey decides with the admin's trust flag on the key record.
gpg never reaches the network (no dirmngr, no key retrieval) and never asks for a
passphrase (``pinentry-mode error``): passphrases are preset into the agent when
the home is built, so a locked key fails fast instead of hanging.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from .proc import MAX_OUTPUT, TIMEOUT, Result, Scratch, private_dir

GPG = "gpg"
GPGCONF = "gpgconf"
PRESET = "/usr/lib/gnupg/gpg-preset-passphrase"

GPG_CONF = """\
no-greeting
trust-model always
no-auto-key-retrieve
auto-key-locate local
disable-dirmngr
no-comments
no-emit-version
personal-digest-preferences SHA512 SHA384 SHA256
cert-digest-algo SHA256
"""

AGENT_CONF = """\
allow-preset-passphrase
s2k-count 65536
no-grab
pinentry-program /bin/false
default-cache-ttl 315360000
max-cache-ttl 315360000
"""

HASH_NAMES = {1: "md5", 2: "sha1", 3: "ripemd160", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}


class GpgError(Exception):
    """gpg could not do what was asked; the message is for people."""


# --- status lines --------------------------------------------------------------

@dataclass
class Status:
    lines: list[tuple[str, list[str]]]
    result: Result

    def has(self, keyword: str) -> bool:
        return any(k == keyword for k, _ in self.lines)

    def get(self, keyword: str) -> list[list[str]]:
        return [args for k, args in self.lines if k == keyword]

    @property
    def errors(self) -> list[str]:
        """ERROR / FAILURE lines, the signs of data gpg found ambiguous or broken."""
        out = [" ".join(a) for k, a in self.lines if k == "ERROR"]
        return out


def parse_status(text: str) -> list[tuple[str, list[str]]]:
    out = []
    for line in text.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        parts = line[9:].split(" ")
        out.append((parts[0], parts[1:]))
    return out


def unescape(value: str) -> str:
    """Percent-escapes (status lines) and \\xNN escapes (colon listings) decoded."""
    raw = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), value)
    raw = re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), raw)
    try:
        return raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return raw


# --- signatures and decryption as found in the status ----------------------------

@dataclass
class SigResult:
    status: str                 # good | bad | unknown-key | expired | revoked | error
    key_id: str | None = None
    fingerprint: str | None = None          # the (sub)key that signed
    primary: str | None = None              # its primary key
    created: int | None = None
    sig_class: str | None = None
    hash_algo: str | None = None
    reason: str | None = None


def signatures(st: Status) -> list[SigResult]:
    """One SigResult per signature gpg looked at (NEWSIG starts one)."""
    sigs: list[SigResult] = []
    seen: list[bool] = []

    def current(for_status: bool) -> SigResult:
        if not sigs or (for_status and seen[-1]):
            sigs.append(SigResult("error", reason="incomplete signature status"))
            seen.append(False)
        return sigs[-1]

    for kw, args in st.lines:
        if kw == "NEWSIG":
            sigs.append(SigResult("error", reason="incomplete signature status"))
            seen.append(False)
            continue
        if kw == "VALIDSIG":
            s = current(False)
            s.fingerprint = args[0] if args else None
            s.created = _int(args[2]) if len(args) > 2 else None
            s.hash_algo = HASH_NAMES.get(_int(args[7]) or 0) if len(args) > 7 else None
            s.sig_class = args[8] if len(args) > 8 else None
            s.primary = args[9] if len(args) > 9 else s.fingerprint
            continue
        if kw not in ("GOODSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "BADSIG", "ERRSIG"):
            continue
        s = current(True)
        seen[-1] = True
        s.key_id = args[0] if args else None
        s.reason = None
        if kw == "GOODSIG":
            s.status = "good"
        elif kw == "EXPSIG":
            s.status, s.reason = "expired", "the signature has expired"
        elif kw == "EXPKEYSIG":
            s.status, s.reason = "expired", "the signing key has expired"
        elif kw == "REVKEYSIG":
            s.status, s.reason = "revoked", "the signing key was revoked"
        elif kw == "BADSIG":
            s.status, s.reason = "bad", "the signature does not match the content"
        else:  # ERRSIG
            rc = args[5] if len(args) > 5 else ""
            if rc == "9":
                s.status, s.reason = "unknown-key", f"no public key {s.key_id} in the keyring"
            elif rc == "4":
                s.status, s.reason = "error", "unsupported signature algorithm"
            else:
                s.status, s.reason = "error", f"the signature could not be checked (code {rc})"
            if len(args) > 6 and len(args[6]) >= 32:
                s.fingerprint = args[6]
    return sigs


@dataclass
class Decrypted:
    data: bytes
    status: Status
    encrypted: bool
    decrypted: bool
    integrity: bool
    sigs: list[SigResult]
    literal_format: str | None
    literal_name: str | None
    failure: str | None           # why it failed, for people
    problems: list[str] = field(default_factory=list)   # ERRORs gpg reported


def _int(value: str) -> int | None:
    try:
        return int(value.split("T")[0]) if value else None
    except ValueError:
        return None


# --- key listings ----------------------------------------------------------------

@dataclass
class SubKey:
    fingerprint: str
    validity: str
    capabilities: str
    created: int | None
    expires: int | None
    keygrip: str | None = None


@dataclass
class KeyInfo:
    fingerprint: str
    key_id: str
    validity: str               # gpg's field 2: e expired, r revoked, i invalid, d disabled
    capabilities: str           # upper case: usable by the key as a whole
    created: int | None
    expires: int | None
    algo: str
    uids: list[str] = field(default_factory=list)
    revoked_uids: list[str] = field(default_factory=list)
    subkeys: list[SubKey] = field(default_factory=list)
    keygrip: str | None = None
    secret: bool = False

    @property
    def keygrips(self) -> list[str]:
        return [g for g in [self.keygrip] + [s.keygrip for s in self.subkeys] if g]

    @property
    def revoked(self) -> bool:
        return self.validity == "r"

    @property
    def expired(self) -> bool:
        return self.validity == "e"

    def can(self, cap: str) -> bool:
        """Usable for ``cap`` ("e" encrypt, "s" sign) now: gpg's upper-case letters."""
        return cap.upper() in self.capabilities and self.validity not in ("r", "e", "i", "d")


ALGOS = {"1": "rsa", "2": "rsa", "3": "rsa", "16": "elgamal", "17": "dsa", "18": "ecdh", "19": "ecdsa",
         "22": "eddsa"}


def parse_colons(text: str) -> list[KeyInfo]:
    keys: list[KeyInfo] = []
    cur: KeyInfo | None = None
    last = None          # the record a following fpr/grp line belongs to
    for line in text.splitlines():
        f = line.split(":")
        rec = f[0]
        if rec in ("pub", "sec"):
            curve = f[16] if len(f) > 16 else ""
            cur = KeyInfo(fingerprint="", key_id=f[4], validity=f[1], capabilities=f[11] if len(f) > 11 else "",
                          created=_int(f[5]), expires=_int(f[6]),
                          algo=curve or f"{ALGOS.get(f[3], 'algo' + f[3])}{f[2]}", secret=rec == "sec")
            keys.append(cur)
            last = cur
        elif rec in ("sub", "ssb") and cur is not None:
            sub = SubKey("", f[1], f[11] if len(f) > 11 else "", _int(f[5]), _int(f[6]))
            cur.subkeys.append(sub)
            last = sub
        elif rec == "fpr" and last is not None and not last.fingerprint:
            last.fingerprint = f[9]
        elif rec == "grp" and last is not None and last.keygrip is None:
            last.keygrip = f[9]
        elif rec == "uid" and cur is not None:
            uid = unescape(f[9])
            # a revoked key marks all its uids "r"; only a uid revoked on its own is dropped
            revoked_uid = f[1] == "r" and cur.validity != "r"
            (cur.revoked_uids if revoked_uid or f[1] == "i" else cur.uids).append(uid)
            last = None
    return keys


_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>\s*$")
_BARE = re.compile(r"^\s*([^<>\s@]+@[^<>\s@]+)\s*$")


def uid_address(uid: str) -> str | None:
    m = _ADDR.search(uid) or _BARE.match(uid)
    return m.group(1).lower() if m else None


# --- the home ----------------------------------------------------------------------

class GnuPG:
    def __init__(self, home: str | None = None):
        self.home = home or private_dir("og")
        os.chmod(self.home, 0o700)
        with open(os.path.join(self.home, "gpg.conf"), "w") as fh:
            fh.write(GPG_CONF)
        with open(os.path.join(self.home, "gpg-agent.conf"), "w") as fh:
            fh.write(AGENT_CONF)
        self.closed = False
        # an empty trustdb: even with trust-model always, gpg 2.2 wants one to list an expired key
        self.run(["--trust-model", "pgp", "--check-trustdb"])

    # lifecycle
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            subprocess.run([GPGCONF, "--homedir", self.home, "--kill", "all"], capture_output=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            pass
        shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self) -> "GnuPG":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # plumbing
    def run(self, args: list[str], stdin: bytes = b"", *, scratch: Scratch | None = None,
            timeout: float = TIMEOUT, max_output: int = MAX_OUTPUT) -> Status:
        own = scratch is None
        sc = scratch or Scratch()
        try:
            status_path = sc.name("status")
            cmd = [GPG, "--homedir", self.home, "--batch", "--no-tty", "--yes", "--pinentry-mode", "error",
                   "--status-file", status_path, "--max-output", str(max_output), *args]
            res = sc.run(cmd, stdin, timeout=timeout, max_output=max_output)
            try:
                with open(status_path, "rb") as fh:
                    text = fh.read(4 * 1024 * 1024).decode("utf-8", "replace")
                os.unlink(status_path)
            except OSError:
                text = ""
            return Status(parse_status(text), res)
        finally:
            if own:
                sc.close()

    # keys
    def import_keys(self, data: bytes) -> Status:
        return self.run(["--import", "--import-options", "import-local-sigs"], data)

    def inspect(self, data: bytes) -> list[KeyInfo]:
        """The keys in ``data`` without importing them."""
        st = self.run(["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-keygrip",
                       "--import-options", "show-only", "--import"], data)
        return parse_colons(st.result.stdout.decode("utf-8", "replace"))

    def list_keys(self, secret: bool = False) -> list[KeyInfo]:
        st = self.run(["--with-colons", "--fixed-list-mode", "--with-fingerprint", "--with-keygrip",
                       "--list-secret-keys" if secret else "--list-keys"])
        return parse_colons(st.result.stdout.decode("utf-8", "replace"))

    def export(self, fingerprint: str, secret: bool = False) -> bytes:
        st = self.run(["--export-secret-keys" if secret else "--export", "--armor", fingerprint])
        return st.result.stdout

    def preset_passphrase(self, keygrip: str, passphrase: str) -> bool:
        try:
            proc = subprocess.run([PRESET, "--homedir", self.home, "--preset", keygrip],
                                  input=passphrase.encode("utf-8"), capture_output=True, timeout=10,
                                  env={**os.environ, "GNUPGHOME": self.home})
        except (OSError, subprocess.SubprocessError):
            return False
        return proc.returncode == 0

    def launch_agent(self) -> None:
        subprocess.run([GPGCONF, "--homedir", self.home, "--launch", "gpg-agent"], capture_output=True, timeout=10)

    # data
    def decrypt(self, data: bytes, *, max_output: int = MAX_OUTPUT, timeout: float = TIMEOUT) -> Decrypted:
        """``gpg --decrypt``: encrypted, signed, clearsigned or signed+encrypted data."""
        st = self.run(["--decrypt"], data, max_output=max_output, timeout=timeout)
        return _decrypted(st)

    def verify_detached(self, signature: bytes, data: bytes) -> tuple[Status, list[SigResult]]:
        with Scratch() as sc:
            sig_path, data_path = sc.file(signature, "sig"), sc.file(data, "data")
            st = self.run(["--verify", sig_path, data_path], scratch=sc)
        return st, signatures(st)

    def sign(self, data: bytes, signer: str, *, mode: str = "detach", armor: bool = True,
             textmode: bool = False) -> tuple[bytes, str]:
        """``mode``: detach | clear | attach. Returns (output, hash algorithm name)."""
        flag = {"detach": "--detach-sign", "clear": "--clearsign", "attach": "--sign"}[mode]
        args = ["--local-user", signer + "!", "--digest-algo", "SHA256", flag]
        if armor:
            args.insert(0, "--armor")
        if textmode:
            args.insert(0, "--textmode")
        st = self.run(args, data)
        created = st.get("SIG_CREATED")
        if st.result.returncode != 0 or not created:
            raise GpgError(_sign_failure(st, signer))
        algo = HASH_NAMES.get(_int(created[0][2]) or 0, "sha256") if len(created[0]) > 2 else "sha256"
        return st.result.stdout, algo

    def encrypt(self, data: bytes, recipients: list[str], *, signer: str | None = None,
                armor: bool = True) -> bytes:
        args = ["--encrypt"]
        for r in recipients:
            args += ["--recipient", r]     # no "!": gpg picks the key's encryption subkey
        if signer:
            args = ["--local-user", signer + "!", "--digest-algo", "SHA256", "--sign", *args]
        if armor:
            args.insert(0, "--armor")
        st = self.run(args, data)
        if st.result.returncode != 0 or not st.has("END_ENCRYPTION"):
            if signer and not st.has("SIG_CREATED"):
                raise GpgError(_sign_failure(st, signer))
            invalid = [a[1] if len(a) > 1 else "?" for a in st.get("INV_RECP")]
            raise GpgError(f"gpg could not encrypt (unusable recipients: {', '.join(invalid) or 'none named'}; "
                           f"{_last_line(st)})")
        return st.result.stdout


def _sign_failure(st: Status, signer: str) -> str:
    if st.has("INV_SGNR") or st.get("KEYEXPIRED") or st.get("KEYREVOKED"):
        return f"the key {signer} cannot sign (missing, expired, revoked or without a signing subkey)"
    text = st.result.text
    if "No pinentry" in text or "Bad passphrase" in text or "No passphrase" in text or "Inappropriate ioctl" in text:
        return f"the secret key {signer} is locked: its passphrase is missing or wrong"
    if st.result.timed_out:
        return "gpg took too long"
    return f"gpg could not sign with {signer}: {_last_line(st)}"


def _last_line(st: Status) -> str:
    lines = [ln for ln in st.result.text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else f"exit status {st.result.returncode}"


def _decrypted(st: Status) -> Decrypted:
    res = st.result
    encrypted = any(st.has(k) for k in ("ENC_TO", "BEGIN_DECRYPTION", "DECRYPTION_FAILED", "NO_SECKEY",
                                         "NEED_PASSPHRASE_SYM", "DECRYPTION_OKAY"))
    decrypted = st.has("DECRYPTION_OKAY") and not st.has("DECRYPTION_FAILED")
    info = st.get("DECRYPTION_INFO")
    aead = bool(info and len(info[0]) > 2 and info[0][2] not in ("", "0"))
    integrity = (st.has("GOODMDC") or aead) and not st.has("BADMDC") and not st.has("ERRMDC")
    plain = st.get("PLAINTEXT")
    fmt = name = None
    if plain:
        try:
            fmt = chr(int(plain[0][0])) if plain[0] else None
        except ValueError:
            fmt = None
        name = unescape(plain[0][2]) if len(plain[0]) > 2 else None
    problems = st.errors
    failure = None
    if res.timed_out:
        failure = "gpg took too long (time limit reached)"
    elif res.too_large or any("too large" in p.lower() for p in problems) or "too large" in res.text:
        failure = f"the content is larger than the limit of {MAX_OUTPUT // (1024 * 1024)} MiB"
    elif encrypted and not decrypted:
        failure = _decrypt_failure(st)
    elif not encrypted and not plain and not st.get("NEWSIG") and not st.has("GOODSIG") and not st.has("BADSIG"):
        failure = "no OpenPGP data found" if st.has("NODATA") or res.returncode != 0 else None
    return Decrypted(res.stdout, st, encrypted, decrypted, integrity, signatures(st), fmt, name, failure, problems)


def _decrypt_failure(st: Status) -> str:
    text = st.result.text
    no_sec = [a[0] for a in st.get("NO_SECKEY") if a]
    if st.has("NEED_PASSPHRASE_SYM") or "encrypted with 1 passphrase" in text:
        return "encrypted with a password (symmetric encryption), not to a key"
    if "No pinentry" in text or "Bad passphrase" in text or "No passphrase" in text:
        return "a secret key for this message is locked: its passphrase is missing or wrong"
    if no_sec and (st.has("DECRYPTION_FAILED") or "No secret key" in text):
        return "no secret key for the recipients (" + ", ".join(no_sec) + ")"
    if st.has("BADMDC") or st.has("ERRMDC") or "integrity" in text.lower():
        return "the encrypted data was modified (integrity check failed)"
    if st.has("NODATA") or "no valid OpenPGP data" in text:
        return "the encrypted data is damaged (no valid OpenPGP data)"
    lines = [ln for ln in text.splitlines() if ln.startswith("gpg: ")]
    return "decryption failed: " + (lines[-1][5:][:300] if lines else f"gpg exit status {st.result.returncode}")
