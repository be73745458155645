"""Outgoing mail: sign and/or encrypt.

``protect(raw, keyring, sign_with_queue=None, encrypt_to=(), scheme="pgp-mime")``

- ``pgp-mime``: RFC 3156. Signed: multipart/signed over the content (made 7-bit and
  CRLF first, so that transport cannot break the signature). Encrypted (and signed:
  the combined method of RFC 3156 §6.2): multipart/encrypted. The real Subject, From,
  To, Cc, Reply-To, Date, Message-ID are copied into the protected part
  (``protected-headers="v1"``); an encrypted mail's outer Subject is "...".
- ``pgp-inline``: clearsigned or armored encrypted text; only for a single
  text/plain body (the Subject cannot be protected).
- ``smime``: multipart/signed with application/pkcs7-signature, and/or
  application/pkcs7-mime enveloped-data (AES-256-CBC by default, ``smime_cipher=
  "aes-256-gcm"`` for authEnveloped-data). Signed first, then encrypted.

Asked to encrypt to a recipient without a usable key, or to sign for a queue
without a usable signing key, ``NoUsableKey`` names the recipient or queue: a mail is
never sent in plain text instead. The queue's own key is added as a recipient
(``encrypt_to_self``) so the sent mail stays readable to the team.
"""
from __future__ import annotations

import email.utils
import re
from email.message import Message

from . import cms, mime
from .exceptions import BadRequest, NoUsableKey
from .gpg import GpgError
from .keys import Material

SCHEMES = ("pgp-mime", "pgp-inline", "smime")
PROTECTED = ("Subject", "From", "To", "Cc", "Reply-To", "Date", "Message-ID")
CRLF = b"\r\n"


def protect(raw: bytes | Message, keyring, *, sign_with_queue: str | None = None,
            encrypt_to=(), scheme: str = "pgp-mime", smime_cipher: str = "aes-256-cbc",
            encrypt_to_self: bool = True) -> dict:
    """Returns {"mime": bytes, "scheme", "signed_by": fingerprint | None,
    "encrypted_to": [{"address", "fingerprint"}]}."""
    if isinstance(raw, Message):
        raw = raw.as_bytes()
    if scheme not in SCHEMES:
        raise BadRequest(f"unknown scheme {scheme!r}; one of {', '.join(SCHEMES)}")
    recipients = _addresses(encrypt_to)
    if not sign_with_queue and not recipients:
        raise BadRequest("nothing to do: neither a queue to sign for nor recipients to encrypt to")
    if isinstance(keyring, Material):
        return _protect(bytes(raw), keyring, sign_with_queue, recipients, scheme, smime_cipher, encrypt_to_self)
    with keyring.material() as material:
        return _protect(bytes(raw), material, sign_with_queue, recipients, scheme, smime_cipher, encrypt_to_self)


def _addresses(values) -> list[str]:
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values or ():
        addr = email.utils.parseaddr(str(v))[1].strip().lower()
        if not addr or "@" not in addr:
            raise BadRequest(f"{v!r} is not a mail address")
        if addr not in out:
            out.append(addr)
    return out


def _protect(raw: bytes, m: Material, queue: str | None, recipients: list[str], scheme: str,
             cipher: str, to_self: bool) -> dict:
    kind = "x509" if scheme == "smime" else "openpgp"
    signer = _signer(m, queue, kind) if queue else None
    keys = _recipient_keys(m, recipients, kind)
    if signer and to_self and recipients and _can_encrypt(m, signer, kind) and signer not in [k for _, k in keys]:
        keys.append(("(self)", signer))
    top = mime.parse(raw)
    outer = mime.filter_header(mime.canonical(top.header), lambda n: not mime.is_content_header(n))
    content = _content_entity(top)
    try:
        if scheme == "pgp-mime":
            out = _pgp_mime(m, outer, content, top, signer, [k for _, k in keys])
        elif scheme == "pgp-inline":
            out = _pgp_inline(m, outer, top, signer, [k for _, k in keys])
        else:
            out = _smime(m, outer, content, signer, [k for _, k in keys], cipher)
    except (GpgError, cms.CmsError) as exc:
        raise BadRequest(str(exc)) from None
    return {"mime": out, "scheme": scheme, "signed_by": signer,
            "encrypted_to": [{"address": a, "fingerprint": k} for a, k in keys]}


# --- keys ------------------------------------------------------------------------------

def _signer(m: Material, queue: str, kind: str) -> str:
    recs = [r for r in m.records.values() if r["queue"] == queue and r["kind"] == kind]
    label = "OpenPGP" if kind == "openpgp" else "S/MIME"
    if not recs:
        raise NoUsableKey(f"the queue {queue!r} has no {label} signing key")
    fpr = recs[0]["fingerprint"]
    if fpr in m.problems:
        raise NoUsableKey(f"the {label} signing key of queue {queue!r} ({fpr}) is not usable: {m.problems[fpr]}")
    if kind == "openpgp":
        info = m.pgp.get(fpr)
        if fpr not in m.pgp_secret or info is None or not info.can("s"):
            raise NoUsableKey(f"the OpenPGP key of queue {queue!r} ({fpr}) cannot sign "
                              "(no secret key, expired, revoked or no signing capability)")
    else:
        if not any(f == fpr for f, _, _ in m.smime.keys):
            raise NoUsableKey(f"the S/MIME certificate of queue {queue!r} ({fpr}) has no usable private key")
        rec = m.records[fpr]
        if rec["expired"]:
            raise NoUsableKey(f"the S/MIME certificate of queue {queue!r} ({fpr}) has expired")
    return fpr


def _can_encrypt(m: Material, fpr: str, kind: str) -> bool:
    if kind == "openpgp":
        info = m.pgp.get(fpr)
        return bool(info and info.can("e"))
    rec = m.records.get(fpr)
    return bool(rec and "encrypt" in rec["usage"] and not rec["expired"] and not rec["is_ca"])


def _recipient_keys(m: Material, recipients: list[str], kind: str) -> list[tuple[str, str]]:
    found, missing = [], []
    for addr in recipients:
        candidates = [r for r in m.records.values()
                      if r["kind"] == kind and addr in r["addresses"] and not r["revoked"]
                      and _can_encrypt(m, r["fingerprint"], kind)]
        if not candidates:
            missing.append(addr)
            continue
        candidates.sort(key=lambda r: (not r["trusted"], -(_epoch(r["expires"]))))
        found.append((addr, candidates[0]["fingerprint"]))
    if missing:
        label = "OpenPGP key" if kind == "openpgp" else "S/MIME certificate"
        raise NoUsableKey(f"no usable {label} for {', '.join(missing)}: the mail was not sent")
    return found


def _epoch(iso: str | None) -> float:
    from datetime import datetime
    return datetime.fromisoformat(iso).timestamp() if iso else float("inf")


# --- MIME ------------------------------------------------------------------------------

def _content_entity(top: mime.Entity) -> mime.Entity:
    """The mail's body as an entity of its own: its Content-* headers + its body."""
    header = mime.filter_header(top.header, lambda n: mime.is_content_header(n) and n != "mime-version")
    if not header.strip():
        header = b"Content-Type: text/plain; charset=us-ascii\r\n"
    nl = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    return mime.parse(header + nl + top.body)


def seven_bit(ent: mime.Entity) -> bytes:
    """The entity with CRLF line ends and every part safe for 7-bit transport
    (8-bit, binary, long lines, trailing white space, "From " lines re-encoded), so
    that a signature over it survives relays."""
    header = mime.canonical(ent.header)
    if ent.children is not None:
        boundary = (ent.param("boundary") or "").encode("utf-8", "surrogateescape")
        parts = [seven_bit(c) for c in ent.children]
        body = b"".join(b"--" + boundary + CRLF + p + CRLF for p in parts) + b"--" + boundary + b"--" + CRLF
        return header + CRLF + body
    body = ent.body
    lines = re.split(rb"\r?\n", body)
    risky = (ent.cte in ("8bit", "binary") or any(b > 127 for b in body) or any(len(ln) > 998 for ln in lines)
             or any(ln[-1:] in (b" ", b"\t") for ln in lines) or any(ln.startswith(b"From ") for ln in lines)
             or b"\r" in body.replace(b"\r\n", b""))
    if not risky or ent.cte in ("base64",):
        return header + CRLF + mime.canonical(body)
    data = ent.decoded()
    if ent.maintype == "text":
        enc, cte = mime.encode_qp(data, CRLF), "quoted-printable"
    else:
        enc, cte = mime.encode_base64(data, CRLF), "base64"
    header = mime.replace_header(header, "Content-Transfer-Encoding", cte, CRLF)
    return header + CRLF + enc


def _with_protected_headers(content: bytes, top: mime.Entity) -> bytes:
    header, body = mime.split_header(content)
    ent = mime.parse(content)
    ctype = str(ent.msg.get("Content-Type", "text/plain")).replace("\r", "").replace("\n", "")
    ctype = re.sub(r";\s*protected-headers=\S+", "", ctype) + '; protected-headers="v1"'
    header = mime.replace_header(header, "Content-Type", ctype, CRLF)
    copied = mime.filter_header(mime.canonical(top.header), lambda n: n in [p.lower() for p in PROTECTED])
    return copied + header + CRLF + body


def _outer(outer: bytes, ctype: str, subject: str | None = None) -> bytes:
    if subject is not None:
        outer = mime.replace_header(outer, "Subject", subject, CRLF)
    return outer + b"MIME-Version: 1.0" + CRLF + f"Content-Type: {ctype}".encode() + CRLF


def _pgp_mime(m: Material, outer: bytes, content: mime.Entity, top: mime.Entity, signer: str | None,
              recipients: list[str]) -> bytes:
    inner = _with_protected_headers(seven_bit(content), top)
    boundary = mime.new_boundary()
    b = boundary.encode()
    if recipients:
        armored = m.gpg.encrypt(inner, recipients, signer=signer)
        head = _outer(outer, f'multipart/encrypted; protocol="application/pgp-encrypted"; boundary="{boundary}"',
                      subject="...")
        body = (b"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)" + CRLF
                + b"--" + b + CRLF
                + b"Content-Type: application/pgp-encrypted" + CRLF
                + b"Content-Description: PGP/MIME version identification" + CRLF + CRLF
                + b"Version: 1" + CRLF + CRLF
                + b"--" + b + CRLF
                + b'Content-Type: application/octet-stream; name="encrypted.asc"' + CRLF
                + b"Content-Description: OpenPGP encrypted message" + CRLF
                + b'Content-Disposition: inline; filename="encrypted.asc"' + CRLF + CRLF
                + mime.canonical(armored) + CRLF
                + b"--" + b + b"--" + CRLF)
        return head + CRLF + body
    sig, algo = m.gpg.sign(inner, signer, mode="detach", armor=True)
    head = _outer(outer, f'multipart/signed; micalg="pgp-{algo}"; protocol="application/pgp-signature"; '
                         f'boundary="{boundary}"')
    body = (b"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)" + CRLF
            + b"--" + b + CRLF + inner + CRLF
            + b"--" + b + CRLF
            + b'Content-Type: application/pgp-signature; name="signature.asc"' + CRLF
            + b"Content-Description: OpenPGP digital signature" + CRLF
            + b'Content-Disposition: attachment; filename="signature.asc"' + CRLF + CRLF
            + mime.canonical(sig) + CRLF
            + b"--" + b + b"--" + CRLF)
    return head + CRLF + body


def _pgp_inline(m: Material, outer: bytes, top: mime.Entity, signer: str | None, recipients: list[str]) -> bytes:
    if top.children is not None or top.content_type != "text/plain" or top.is_attachment:
        raise BadRequest("inline PGP is for a single text/plain body; use pgp-mime for this mail")
    raw_text = top.decoded()
    charset = top.charset or "us-ascii"
    try:
        text = raw_text.decode(charset)
    except (LookupError, UnicodeDecodeError):
        text = raw_text.decode("utf-8", "replace")
    data = mime.canonical(text.encode("utf-8"))
    if recipients:
        armored = m.gpg.encrypt(data, recipients, signer=signer)
        out_text, cte = mime.canonical(armored), "7bit"
    else:
        signed, _algo = m.gpg.sign(data, signer, mode="clear")
        out_text = mime.canonical(signed)
        cte = "quoted-printable" if any(b > 127 for b in out_text) else "7bit"
    body = mime.encode_qp(out_text, CRLF) if cte == "quoted-printable" else out_text
    head = _outer(outer, 'text/plain; charset="utf-8"') + f"Content-Transfer-Encoding: {cte}".encode() + CRLF
    return head + CRLF + body


def _smime(m: Material, outer: bytes, content: mime.Entity, signer: str | None, recipients: list[str],
           cipher: str) -> bytes:
    entity = seven_bit(content)
    if signer:
        cert_path, key_path = next((c, k) for f, c, k in m.smime.keys if f == signer)
        sig = cms.sign(entity, cert_path, key_path)
        boundary = mime.new_boundary()
        b = boundary.encode()
        entity = (f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; micalg=sha-256; '
                  f'boundary="{boundary}"').encode() + CRLF + CRLF + (
            b"This is a cryptographically signed message in MIME format." + CRLF + CRLF
            + b"--" + b + CRLF + entity + CRLF
            + b"--" + b + CRLF
            + b'Content-Type: application/pkcs7-signature; name="smime.p7s"' + CRLF
            + b"Content-Transfer-Encoding: base64" + CRLF
            + b'Content-Disposition: attachment; filename="smime.p7s"' + CRLF
            + b"Content-Description: S/MIME Cryptographic Signature" + CRLF + CRLF
            + mime.encode_base64(sig, CRLF)
            + b"--" + b + b"--" + CRLF)
    if not recipients:
        header, body = mime.split_header(entity)
        return outer + b"MIME-Version: 1.0" + CRLF + header + CRLF + body
    certs = [m.records[f] for f in recipients]
    pems = [m.certs[r["fingerprint"]].pem for r in certs]
    blob = cms.encrypt(entity, pems, cipher)
    stype = "authEnveloped-data" if cipher.endswith("gcm") else "enveloped-data"
    head = _outer(outer, f'application/pkcs7-mime; smime-type={stype}; name="smime.p7m"')
    head += b"Content-Transfer-Encoding: base64" + CRLF + b'Content-Disposition: attachment; filename="smime.p7m"' + CRLF
    return head + CRLF + mime.encode_base64(blob, CRLF)
