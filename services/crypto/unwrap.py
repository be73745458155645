"""Incoming mail: decrypt, check signatures, and say exactly what they prove.

``unwrap(raw, keyring)`` returns

    {"mime": bytes,        # the mail to display: decrypted/unwrapped, or ``raw`` itself
     "changed": bool,      # False: "mime" is ``raw``, nothing was unwrapped
     "security": {...},    # one verdict for the article (below)
     "parts": [...]}       # per leaf of "mime" (numbered like ingest's walk_leaves)

Supported: PGP/MIME signed, encrypted, signed+encrypted (RFC 3156, both the combined
and the nested method, protected headers); inline PGP (clearsigned, encrypted,
signed+encrypted, signed-only "old style" PGP MESSAGE blocks, several blocks in one
text, .asc/.gpg/.pgp attachments binary or armored, detached .sig/.asc over an
attachment); S/MIME multipart/signed, opaque signed-data, enveloped-data,
authEnveloped-data (AES-GCM), and any nesting of them.

The verdict is "verified" only when ONE good signature, by a key or certificate the
admin trusts, covers everything that is displayed, and the signer's address is the
single address in From. Everything else is weaker, with warnings that say why:

    verified          good + trusted + covers all + signer is the From address, no warnings that block
    signed-partially  a good signature, but some displayed content is outside it
    unverified        signed, but unknown/untrusted/expired/revoked key, signer != From, several
                      signatures or signers, eContent confusion, ambiguous From, ...
    bad               a signature does not match (content changed) or encrypted data failed its
                      integrity check
    undecryptable     encrypted, and (some of) it could not be decrypted: reason in "errors"
    encrypted-only    decrypted fine, no signature (encryption proves nothing about the sender)
    none              no cryptography in this mail
    error             the mail could not be analysed at all (reason in "errors")

No mail makes ``unwrap`` raise: bad input becomes a status with a reason; every
gpg/openssl run has a deadline and an output cap (proc.py), and a mail gets a
bounded number of operations and layers. Only a keyring that cannot be built at
all (database unreachable) raises, so that the caller retries later.
"""
from __future__ import annotations

import email.utils
import logging
import mimetypes
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.header import Header
from email.parser import BytesParser

from . import cms, der, mime
from .gpg import Decrypted, SigResult
from .keys import Material

log = logging.getLogger(__name__)

# tunables (module constants; see docs/crypto.md)
MAX_INPUT = 64 * 1024 * 1024       # bytes of mail analysed
MAX_OPERATIONS = 32                # gpg/openssl runs for one mail
MAX_LAYERS = 8                     # crypto layers inside one another
TIME_BUDGET = 60.0                 # seconds for one mail, all runs together

SCHEMA = 1
VERDICTS = ("verified", "signed-partially", "unverified", "bad", "undecryptable", "encrypted-only", "none", "error")
SIG_STATUSES = ("none", "good", "bad", "unknown-key", "expired", "revoked", "error")

PGP_SIG_TYPES = ("application/pgp-signature",)
SMIME_SIG_TYPES = ("application/pkcs7-signature", "application/x-pkcs7-signature")
SMIME_MIME_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime")
PGP_FILE_EXT = (".pgp", ".gpg", ".asc")
SIG_FILE_EXT = (".sig", ".asc")

_BEGIN = re.compile(rb"^-----BEGIN PGP (SIGNED MESSAGE|MESSAGE)-----[ \t]*\r?$", re.M)
_END_SIGNED = re.compile(rb"^-----END PGP SIGNATURE-----[ \t]*\r?$", re.M)
_END_MESSAGE = re.compile(rb"^-----END PGP MESSAGE-----[ \t]*\r?$", re.M)
_CHARSET_HDR = re.compile(rb"^Charset:[ \t]*([A-Za-z0-9_.:-]+)", re.M)
_ADDRESSISH = re.compile(r"[^\s<>\"'(),;:@]+@[^\s<>\"'(),;:@]+\.[^\s<>\"'(),;:@]+")
_ADDR_SPEC = re.compile(r"^[^\s@<>()\[\],;:\"\\]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")


# --- what is collected while walking the mail ---------------------------------------

@dataclass
class Sig:
    id: int
    scheme: str                    # openpgp | smime
    where: str                     # multipart/signed | opaque | encrypted | inline | attachment
    status: str
    signer: dict
    trusted: bool
    reason: str | None = None
    created: str | None = None
    attachment: bool = False       # a detached signature over one attachment only

    def as_dict(self) -> dict:
        return {"id": self.id, "scheme": self.scheme, "where": self.where, "status": self.status,
                "signer": self.signer, "trusted": self.trusted, "reason": self.reason, "created": self.created,
                "attachment": self.attachment}


@dataclass(frozen=True)
class Prot:
    sigs: frozenset = frozenset()
    encrypted: bool = False

    def plus(self, sigs=(), encrypted: bool = False) -> "Prot":
        return Prot(self.sigs | frozenset(sigs), self.encrypted or encrypted)


@dataclass
class Node:
    prot: Prot
    content_type: str
    entity: mime.Entity | None = None       # rendered from its raw bytes unless changed
    header: bytes = b""                     # generated leaf: header and body
    body: bytes = b""
    children: list["Node"] | None = None
    changed: bool = False
    filename: str | None = None
    attachment: bool = False
    partial: bool = False                   # inline text with unprotected text beside its PGP blocks
    text: str | None = None                 # generated text leaves: their text


class Budget(Exception):
    pass


@dataclass
class Ctx:
    material: Material
    sigs: list[Sig] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    encrypted: bool = False
    decrypt_failed: bool = False
    integrity_failed: bool = False
    protected: dict | None = None
    ops: int = 0
    layers: int = 0
    deadline: float = 0.0
    stopped: bool = False

    def warn(self, text: str, block: bool = True) -> None:
        if text not in self.warnings:
            self.warnings.append(text)
        if block and text not in self.blockers:
            self.blockers.append(text)

    def error(self, text: str) -> None:
        if text not in self.errors:
            self.errors.append(text)
        self.warn(text)

    def op(self) -> None:
        """Count one gpg/openssl run; Budget when the mail has used its share."""
        if self.stopped:
            raise Budget()
        self.ops += 1
        if self.ops > MAX_OPERATIONS or time.monotonic() > self.deadline:
            self.stopped = True
            self.error(f"too many protected parts: only the first {MAX_OPERATIONS} operations "
                       f"(or {int(TIME_BUDGET)} s) were spent on this mail; the rest is shown as it is")
            raise Budget()

    def add_sig(self, **kw) -> Sig:
        sig = Sig(id=len(self.sigs) + 1, **kw)
        self.sigs.append(sig)
        return sig

    @contextmanager
    def layer(self):
        if self.layers >= MAX_LAYERS:
            self.error(f"more than {MAX_LAYERS} cryptographic layers inside one another; the rest is not unwrapped")
            raise Budget()
        self.layers += 1
        try:
            yield
        finally:
            self.layers -= 1


# --- entry point ------------------------------------------------------------------------

def unwrap(raw: bytes, keyring) -> dict:
    """``keyring``: a keys.Keyring (its current material is used) or a keys.Material."""
    if not isinstance(raw, (bytes, bytearray)):
        raw = str(raw).encode("utf-8", "surrogateescape")
    raw = bytes(raw)
    if len(raw) > MAX_INPUT:
        return _failed(raw, f"the mail is larger than {MAX_INPUT // (1024 * 1024)} MiB and was not analysed")
    if isinstance(keyring, Material):
        return _safe(raw, keyring)
    # a keyring that cannot be built (database down, gpg missing) raises: that is not
    # the mail's fault, and the caller should try again later
    with keyring.material() as material:
        return _safe(raw, material)


def _safe(raw: bytes, material: Material) -> dict:
    try:
        return _unwrap(raw, material)
    except Exception as exc:  # never let a mail take the service down; the reason goes with it
        log.exception("unwrap failed")
        return _failed(raw, f"the mail could not be analysed: {type(exc).__name__}: {exc}")


def _failed(raw: bytes, reason: str) -> dict:
    return {"mime": raw, "changed": False, "parts": [], "security": {
        "schema": SCHEMA, "encrypted": False, "decrypted": False, "fully_encrypted": False, "signature": "none",
        "signer": None, "covers_all": False, "signer_matches_from": False, "trusted": False,
        "verdict": "error", "warnings": [reason], "errors": [reason], "signatures": [], "from": None,
        "protected_headers": None}}


def _unwrap(raw: bytes, material: Material) -> dict:
    top = mime.parse(raw)
    ctx = Ctx(material, deadline=time.monotonic() + TIME_BUDGET)
    root = process(top, Prot(), ctx, True)
    changed = root.changed or root.entity is not top
    out = render_top(top, root, ctx) if changed else raw
    numbered = list(_leaves(root))
    security = judge(top, root, numbered, ctx)
    if ctx.sigs:
        _check_structure(out, numbered, ctx, security)
    parts = []
    if ctx.sigs or ctx.encrypted or changed:
        for num, node in numbered:
            parts.append({"part": num, "content_type": node.content_type, "filename": node.filename,
                          "attachment": node.attachment, "encrypted": node.prot.encrypted,
                          "signatures": sorted(node.prot.sigs), "partial": node.partial})
    return {"mime": out, "changed": changed, "security": security, "parts": parts}


# --- walking -----------------------------------------------------------------------------

def process(ent: mime.Entity, prot: Prot, ctx: Ctx, is_root: bool) -> Node:
    ct = ent.content_type
    try:
        if ent.children is not None and ct == "multipart/signed" and not ctx.stopped:
            return _signed(ent, prot, ctx, is_root)
        if ent.children is not None and ct == "multipart/encrypted" and not ctx.stopped:
            return _pgp_encrypted(ent, prot, ctx, is_root)
        if ent.children is None and not ctx.stopped and (
                ct in SMIME_MIME_TYPES or (ct == "application/octet-stream"
                                           and (ent.filename or "").lower().endswith(".p7m"))):
            return _pkcs7_mime(ent, prot, ctx, is_root)
    except Budget:
        pass
    if ent.children is not None:
        return _multipart(ent, prot, ctx)
    return _leaf(ent, prot, ctx)


def _plain(ent: mime.Entity, prot: Prot) -> Node:
    """A leaf shown as it arrived."""
    return Node(prot, ent.content_type, entity=ent, filename=ent.filename, attachment=ent.is_attachment)


def _multipart(ent: mime.Entity, prot: Prot, ctx: Ctx) -> Node:
    kids = [process(c, prot, ctx, False) for c in ent.children]
    _attachment_signatures(ent, kids, ctx)
    changed = any(k.changed or k.entity is not c for k, c in zip(kids, ent.children))
    return Node(prot, ent.content_type, entity=ent, children=kids, changed=changed)


def _leaf(ent: mime.Entity, prot: Prot, ctx: Ctx) -> Node:
    ct = ent.content_type
    if ctx.stopped:
        return _plain(ent, prot)
    try:
        if not ent.is_attachment and ct in ("text/plain", "application/pgp"):
            return _inline_text(ent, prot, ctx)
        if ent.is_attachment and _is_pgp_file(ent):
            return _pgp_file(ent, prot, ctx)
        if ct == "text/html" and b"-----BEGIN PGP" in ent.decoded():
            ctx.warn("an HTML part contains a PGP block; PGP inside HTML is not checked", block=False)
    except Budget:
        pass
    return _plain(ent, prot)


# --- PGP/MIME and S/MIME multipart/signed -------------------------------------------------

def _signed(ent: mime.Entity, prot: Prot, ctx: Ctx, is_root: bool) -> Node:
    kids = ent.children
    protocol = (ent.param("protocol") or "").strip().lower()
    if len(kids) != 2:
        ctx.error(f"a multipart/signed has {len(kids)} parts instead of 2; its signature was not checked")
        return _multipart(ent, prot, ctx)
    signed, sigpart = kids
    sig_type = sigpart.content_type
    if protocol in PGP_SIG_TYPES or (not protocol and sig_type in PGP_SIG_TYPES):
        scheme = "openpgp"
    elif protocol in SMIME_SIG_TYPES or (not protocol and sig_type in SMIME_SIG_TYPES):
        scheme = "smime"
    else:
        ctx.warn(f"a multipart/signed with an unknown protocol ({protocol or sig_type}) was not checked")
        return _multipart(ent, prot, ctx)
    expected = PGP_SIG_TYPES if scheme == "openpgp" else SMIME_SIG_TYPES
    if sig_type not in expected:
        ctx.warn(f"the signature part is {sig_type}, not what the multipart/signed announces")
    signature = sigpart.decoded()
    canonical = mime.canonical(signed.raw)
    candidates = [canonical] if canonical == signed.raw else [canonical, signed.raw]
    with ctx.layer():
        if scheme == "openpgp":
            sig = _verify_pgp_detached(signature, candidates, ctx, "multipart/signed")
        else:
            sig = _verify_smime_detached(signature, candidates, ctx)
        if is_root:
            _protected_headers(signed, ctx)
        node = process(signed, prot.plus([sig.id]), ctx, is_root)
    return node


def _verify_pgp_detached(signature: bytes, candidates: list[bytes], ctx: Ctx, where: str,
                         attachment: bool = False) -> Sig:
    """Check a detached signature over the first candidate bytes (CRLF canonical),
    then over the bytes as they arrived; the first good result counts."""
    chosen = None
    for data in candidates:
        ctx.op()
        st, results = ctx.material.gpg.verify_detached(signature, data)
        problem = None
        if st.has("PLAINTEXT"):
            problem = "the signature part carries signed data of its own, which is not what is displayed"
        elif not results:
            problem = ("gpg took too long (time limit reached)" if st.result.timed_out
                       else "the signature could not be read")
        kw = _pgp_sig_fields(results, st.errors, ctx, where, problem, attachment)
        if chosen is None or kw["status"] == "good":
            chosen = kw
        if kw["status"] == "good":
            break
    return ctx.add_sig(**chosen)


def _pgp_sig(results: list[SigResult], errors: list[str], ctx: Ctx, where: str, problem: str | None = None,
             attachment: bool = False) -> Sig:
    return ctx.add_sig(**_pgp_sig_fields(results, errors, ctx, where, problem, attachment))


def _pgp_sig_fields(results: list[SigResult], errors: list[str], ctx: Ctx, where: str,
                    problem: str | None = None, attachment: bool = False) -> dict:
    m = ctx.material
    if not results:
        return dict(scheme="openpgp", where=where, status="error", signer={}, trusted=False,
                    reason=problem or "no signature found", attachment=attachment)
    r = results[0]
    status, reason = r.status, r.reason
    if len(results) > 1:
        ctx.warn(f"{len(results)} OpenPGP signatures over the same content; only one signer can be shown")
        if any(x.status == "bad" for x in results):
            status, reason = "bad", "one of the signatures does not match the content"
    if problem:
        status, reason = "error", problem
    elif errors and status == "good":
        status, reason = "error", "gpg found the signed data ambiguous or damaged (" + "; ".join(errors[:3]) + ")"
    elif status == "good" and r.sig_class not in (None, "00", "01"):
        status, reason = "error", f"not a signature over a document (class {r.sig_class})"
    primary = (r.primary or r.fingerprint or "").upper() or None
    info = m.pgp.get(primary) if primary else None
    signer = {"fingerprint": primary, "key_id": r.key_id, "signing_key": r.fingerprint,
              "uids": list(info.uids) if info else [],
              "addresses": m.pgp_addresses(primary) if primary else []}
    created = datetime.fromtimestamp(r.created, timezone.utc).isoformat() if r.created else None
    return dict(scheme="openpgp", where=where, status=status, signer=signer,
                trusted=bool(primary and m.trusted(primary)), reason=reason, created=created,
                attachment=attachment)


def _smime_sig(res: cms.SmimeSig, ctx: Ctx, where: str) -> Sig:
    for w in res.warnings:
        ctx.warn(w, block=False)
    for b in res.blockers:
        ctx.warn(b)
    signer = res.signer.as_dict() if res.signer else {}
    pinned = bool(res.signer and ctx.material.trusted(res.signer.fingerprint))
    return ctx.add_sig(scheme="smime", where=where, status=res.status, signer=signer,
                       trusted=bool(res.signer) and (res.chain_ok or pinned), reason=res.reason)


def _verify_smime_detached(signature: bytes, candidates: list[bytes], ctx: Ctx) -> Sig:
    res = None
    for data in candidates:
        ctx.op()
        res = cms.verify(signature, data, ctx.material.smime)
        if res.status not in ("bad",):
            break
    return _smime_sig(res, ctx, "multipart/signed")


# --- PGP/MIME encrypted ---------------------------------------------------------------------

def _pgp_encrypted(ent: mime.Entity, prot: Prot, ctx: Ctx, is_root: bool) -> Node:
    kids = ent.children
    ctx.encrypted = True
    if len(kids) != 2:
        ctx.decrypt_failed = True
        ctx.error(f"a multipart/encrypted has {len(kids)} parts instead of 2 and was not decrypted")
        return _multipart(ent, prot, ctx)
    payload = kids[1].decoded()
    with ctx.layer():
        ctx.op()
        res = ctx.material.gpg.decrypt(payload)
        if not _decrypt_ok(res, ctx):
            return _multipart(ent, prot, ctx)
        ids = [_pgp_sig([s], res.problems, ctx, "encrypted").id for s in res.sigs]
        inner = mime.parse(res.data)
        if is_root:
            _protected_headers(inner, ctx)
        node = process(inner, prot.plus(ids, encrypted=True), ctx, is_root)
    return node


def _decrypt_ok(res: Decrypted, ctx: Ctx) -> bool:
    if res.failure or not res.decrypted:
        reason = res.failure or "decryption failed"
        ctx.decrypt_failed = True
        if "integrity" in reason or "modified" in reason:
            ctx.integrity_failed = True
        ctx.error(reason)
        return False
    if not res.integrity:
        ctx.warn("the encrypted data has no integrity protection (no MDC): it may have been changed in transit")
    if res.problems and not res.sigs:
        ctx.warn("gpg reported problems with the decrypted data: " + "; ".join(res.problems[:3]))
    return True


# --- S/MIME application/pkcs7-mime ------------------------------------------------------------

def _pkcs7_mime(ent: mime.Entity, prot: Prot, ctx: Ctx, is_root: bool) -> Node:
    blob = ent.decoded()
    stype = (ent.param("smime-type") or "").lower()
    try:
        info = der.inspect(der.to_der(blob))
    except der.Malformed as exc:
        if ent.content_type not in SMIME_MIME_TYPES:
            # only its name (.p7m) made it look like S/MIME: an attachment like any other
            ctx.warn(f"the attachment {ent.filename} is named like S/MIME but is not ({exc})", block=False)
            return _plain(ent, prot)
        if stype in ("enveloped-data", "authenveloped-data") or not stype:
            ctx.encrypted = True
            ctx.decrypt_failed = True
        ctx.error(f"the S/MIME part is damaged ({exc})")
        return _plain(ent, prot)
    if stype and stype != info.kind.lower() and not (stype == "certs-only" and info.signers == 0):
        ctx.warn(f"the S/MIME part says smime-type={stype} but holds {info.kind}", block=False)
    if info.content_type in (der.OID_ENVELOPED, der.OID_AUTH_ENVELOPED):
        ctx.encrypted = True
        with ctx.layer():
            ctx.op()
            res = cms.decrypt(blob, ctx.material.smime)
            if res.data is None:
                ctx.decrypt_failed = True
                ctx.error(res.failure or "S/MIME decryption failed")
                return _plain(ent, prot)
            inner = mime.parse(res.data)
            if is_root:
                _protected_headers(inner, ctx)
            node = process(inner, prot.plus(encrypted=True), ctx, is_root)
        return node
    if info.content_type == der.OID_SIGNED:
        if info.signers == 0:
            ctx.warn("an S/MIME part holds certificates only (no signature)", block=False)
            return _plain(ent, prot)
        with ctx.layer():
            ctx.op()
            res = cms.verify(blob, None, ctx.material.smime)
            sig = _smime_sig(res, ctx, "opaque")
            if res.content is None:
                return _plain(ent, prot.plus([sig.id]))
            inner = mime.parse(res.content)
            if is_root:
                _protected_headers(inner, ctx)
            node = process(inner, prot.plus([sig.id]), ctx, is_root)
        return node
    if info.content_type == der.OID_COMPRESSED:
        ctx.warn("compressed S/MIME (compressed-data) is not supported; shown as it is")
        return _plain(ent, prot)
    ctx.warn(f"an S/MIME part of type {info.kind} is not supported; shown as it is")
    return _plain(ent, prot)


# --- inline PGP ---------------------------------------------------------------------------------

@dataclass
class Seg:
    text: str
    sigs: frozenset = frozenset()
    encrypted: bool = False


def _charsets(*names: str | None) -> list[str]:
    out = []
    for n in names:
        if n and n.lower() not in out:
            out.append(n.lower())
    return out


def _decode(data: bytes, charsets: list[str]) -> str:
    for cs in charsets + ["utf-8"]:
        try:
            return data.decode(cs)
        except (LookupError, UnicodeDecodeError, ValueError):
            continue
    return data.decode("latin-1")


def _blocks(data: bytes) -> list[tuple[int, int, str]]:
    """(start, end, kind) of each inline PGP block: lines from -----BEGIN PGP
    (SIGNED) MESSAGE----- to its end line, which must start a line too (a quoted
    "> -----BEGIN" is text). A block without its end runs to the end of the text."""
    out = []
    pos = 0
    while True:
        m = _BEGIN.search(data, pos)
        if not m:
            return out
        kind = m.group(1).decode()
        end_re = _END_SIGNED if kind == "SIGNED MESSAGE" else _END_MESSAGE
        e = end_re.search(data, m.end())
        if e is None:
            out.append((m.start(), len(data), kind))
            return out
        end = e.end()
        if data[end:end + 2] == b"\r\n":
            end += 2
        elif data[end:end + 1] == b"\n":
            end += 1
        out.append((m.start(), end, kind))
        pos = end


def _inline_segments(data: bytes, charset: str | None, ctx: Ctx, depth: int) -> list[Seg] | None:
    blocks = _blocks(data)
    if not blocks:
        return None
    segs: list[Seg] = []
    pos = 0
    for start, end, kind in blocks:
        if start > pos:
            segs.append(Seg(_decode(data[pos:start], _charsets(charset))))
        block = data[start:end]
        pos = end
        try:
            ctx.op()
        except Budget:
            segs.append(Seg(_decode(block, _charsets(charset))))
            continue
        res = ctx.material.gpg.decrypt(block)
        armor_cs = _CHARSET_HDR.search(block[:2000])
        armor_charset = armor_cs.group(1).decode() if armor_cs else None
        if res.encrypted:
            ctx.encrypted = True
            if not _decrypt_ok(res, ctx):
                segs.append(Seg(_decode(block, _charsets(charset))))
                continue
            ids = frozenset(_pgp_sig([s], res.problems, ctx, "inline").id for s in res.sigs)
            order = _charsets("utf-8" if res.literal_format == "u" else None, armor_charset, charset)
            if depth < 1 and _blocks(res.data):
                inner = _inline_segments(res.data, charset, ctx, depth + 1) or []
                segs += [Seg(s.text, s.sigs | ids, True) for s in inner]
            else:
                segs.append(Seg(_decode(res.data, order), ids, True))
            continue
        if res.sigs:
            sig = _pgp_sig(res.sigs, res.problems, ctx, "inline")
            if kind == "SIGNED MESSAGE" and not res.data:
                segs.append(Seg(_decode(block, _charsets(charset)), frozenset([sig.id])))
                continue
            segs.append(Seg(_decode(res.data, _charsets(armor_charset, charset)), frozenset([sig.id])))
            continue
        if kind == "SIGNED MESSAGE":
            reason = res.failure or "the inline signature could not be read (damaged armor)"
            sig = ctx.add_sig(scheme="openpgp", where="inline", status="error", signer={}, trusted=False,
                              reason=reason)
            segs.append(Seg(_decode(res.data or block, _charsets(armor_charset, charset)), frozenset([sig.id])))
            continue
        # neither encrypted nor signed: damaged armor, or only compressed/literal data
        if res.data and not res.failure:
            ctx.warn("an inline PGP block holds data that is neither signed nor encrypted", block=False)
            segs.append(Seg(_decode(res.data, _charsets(armor_charset, charset))))
            continue
        ctx.error(f"an inline PGP block could not be read ({res.failure or 'damaged armor'})")
        if kind == "MESSAGE":
            ctx.encrypted = True
            ctx.decrypt_failed = True
        segs.append(Seg(_decode(block, _charsets(charset))))
    if pos < len(data):
        segs.append(Seg(_decode(data[pos:], _charsets(charset))))
    return segs


def _inline_text(ent: mime.Entity, prot: Prot, ctx: Ctx) -> Node:
    data = ent.decoded()
    if b"-----BEGIN PGP " not in data:
        return _plain(ent, prot)
    segs = _inline_segments(data, ent.charset, ctx, 0)
    if segs is None:
        return _plain(ent, prot)
    solid = [s for s in segs if s.text.strip()]
    if solid:
        common = frozenset.intersection(*[s.sigs for s in solid])
        union = frozenset().union(*[s.sigs for s in solid])
        all_enc = all(s.encrypted for s in solid)
        partial = union != common or (any(s.encrypted for s in solid) and not all_enc)
    else:
        common, all_enc, partial = frozenset(), False, False
    text = "".join(s.text for s in segs)
    nl = ent.newline()
    extra = []
    if ent.disposition:
        extra.append(("Content-Disposition", str(ent.msg.get("Content-Disposition"))))
    header = mime.header_lines([("Content-Type", 'text/plain; charset="utf-8"'),
                                ("Content-Transfer-Encoding", "quoted-printable"), *extra], nl)
    body = mime.encode_qp(text.encode("utf-8"), nl)
    return Node(prot.plus(common, encrypted=all_enc), "text/plain", header=header, body=body, changed=True,
                filename=ent.filename, attachment=False, partial=partial, text=text)


# --- PGP attachments -------------------------------------------------------------------------

def _packet_tag(data: bytes) -> int | None:
    if not data or not data[0] & 0x80:
        return None
    b = data[0]
    return b & 0x3F if b & 0x40 else (b >> 2) & 0x0F


def _is_pgp_file(ent: mime.Entity) -> bool:
    name = (ent.filename or "").lower()
    return name.endswith(PGP_FILE_EXT) or ent.content_type in ("application/pgp-encrypted", "application/pgp")


def _pgp_file(ent: mime.Entity, prot: Prot, ctx: Ctx) -> Node:
    data = ent.decoded()
    m = _BEGIN.search(data[:64 * 1024])
    if m is None:
        tag = _packet_tag(data)
        if tag not in (1, 3, 4, 8, 11, 18, 20):    # keys, detached signatures, other data: leave
            return _plain(ent, prot)
    with ctx.layer():
        ctx.op()
        res = ctx.material.gpg.decrypt(data)
        if res.encrypted:
            ctx.encrypted = True
            if not _decrypt_ok(res, ctx):
                return _plain(ent, prot)
        elif not res.sigs:
            if res.failure:
                ctx.error(f"the attachment {ent.filename or ''} could not be read as OpenPGP ({res.failure})")
            return _plain(ent, prot)
        ids = [_pgp_sig([s], res.problems, ctx, "attachment").id for s in res.sigs]
    name = ent.filename or ""
    base = name[:-4] if name.lower().endswith(PGP_FILE_EXT) else ""
    if not base and res.literal_name and res.literal_name not in ("_CONSOLE",):
        base = os.path.basename(res.literal_name.replace("\\", "/"))
    base = re.sub(r"[\x00-\x1f\"\\]", "_", base) or "decrypted.bin"
    ctype = mimetypes.guess_type(base)[0] or "application/octet-stream"
    nl = ent.newline()
    header = mime.header_lines([("Content-Type", f"{ctype}; name={mime.quote_param(base)}"),
                                ("Content-Disposition", f"attachment; filename={mime.quote_param(base)}"),
                                ("Content-Transfer-Encoding", "base64")], nl)
    return Node(prot.plus(ids, encrypted=res.encrypted), ctype, header=header,
                body=mime.encode_base64(res.data, nl), changed=True, filename=base, attachment=True)


def _attachment_signatures(ent: mime.Entity, kids: list[Node], ctx: Ctx) -> None:
    """``report.pdf`` beside ``report.pdf.sig`` (or .asc) holding a detached OpenPGP
    signature: the signature is checked over that attachment (and only over it)."""
    if ctx.stopped:
        return
    by_name = {}
    for child, node in zip(ent.children, kids):
        if child.children is None and child.filename and node.entity is child:
            by_name.setdefault(child.filename, (child, node))
    for child, node in zip(ent.children, kids):
        name = child.filename or ""
        if child.children is not None or not name.lower().endswith(SIG_FILE_EXT):
            continue
        target = by_name.get(name[:-4])
        if target is None:
            continue
        data = child.decoded()
        if not (b"-----BEGIN PGP SIGNATURE-----" in data[:4096] or _packet_tag(data) == 2):
            continue
        try:
            sig = _verify_pgp_detached(data, [target[0].decoded()], ctx, "attachment", attachment=True)
        except Budget:
            return
        target[1].prot = target[1].prot.plus([sig.id])


# --- protected headers --------------------------------------------------------------------------

def _protected_headers(inner: mime.Entity, ctx: Ctx) -> None:
    ph = (inner.param("protected-headers") or "").lower()
    if ph != "v1":
        return
    found = {}
    for name in ("Subject", "From", "To", "Cc", "Reply-To", "Date", "Message-ID"):
        value = inner.msg.get(name)
        if value is not None:
            found[name.lower()] = re.sub(r"[\r\n]+", " ", mime.decode_words(str(value))).strip()
    if found:
        ctx.protected = found


# --- output -------------------------------------------------------------------------------------

def _node_parts(node: Node) -> tuple[bytes, bytes]:
    """(header, body) of a node as it will be written."""
    if node.entity is not None and not node.changed:
        return node.entity.header, node.entity.body
    if node.children is not None:
        ent = node.entity
        nl = ent.newline() if ent is not None else b"\r\n"
        parts = [_render(k) for k in node.children]
        boundary = mime.new_boundary()
        while any(boundary.encode() in p for p in parts):
            boundary = mime.new_boundary()
        params = []
        try:
            for k, v in (ent.msg.get_params() or [])[1:]:
                if k.lower() != "boundary" and v:
                    params.append(f"; {k}={mime.quote_param(str(v) if not isinstance(v, tuple) else v[2])}")
        except Exception:
            params = []
        ctype = f"{node.content_type}; boundary=\"{boundary}\"" + "".join(params)
        header = mime.replace_header(ent.header if ent is not None else b"", "Content-Type", ctype, nl)
        b = boundary.encode()
        body = b"".join(b"--" + b + nl + p + nl for p in parts) + b"--" + b + b"--" + nl
        return header, body
    return node.header, node.body


def _render(node: Node) -> bytes:
    if node.entity is not None and not node.changed:
        return node.entity.raw
    header, body = _node_parts(node)
    nl = b"\r\n" if header.endswith(b"\r\n") else b"\n"
    return header + nl + body


def render_top(top: mime.Entity, root: Node, ctx: Ctx) -> bytes:
    nl = top.newline()
    outer = mime.filter_header(top.header, lambda n: not mime.is_content_header(n))
    if ctx.protected and ctx.protected.get("subject") is not None:
        subject = ctx.protected["subject"]
        try:
            subject.encode("ascii")
            value = subject
        except UnicodeEncodeError:
            value = Header(subject, "utf-8").encode()
        outer = mime.replace_header(outer, "Subject", value, nl)
    header, body = _node_parts(root)
    content = mime.filter_header(header, lambda n: mime.is_content_header(n) and n != "mime-version")
    return outer + b"MIME-Version: 1.0" + nl + content + nl + body


def _leaves(node: Node, prefix: str = ""):
    if node.children is not None:
        for i, kid in enumerate(node.children, start=1):
            yield from _leaves(kid, f"{prefix}{i}." if prefix else f"{i}.")
        return
    yield (prefix[:-1] if prefix else "1"), node


def _check_structure(out: bytes, numbered: list, ctx: Ctx, security: dict) -> None:
    """ingest shows ``out`` parsed by the stdlib: its leaves must be ours, or a
    verdict could be about a different tree than the one displayed."""
    try:
        msg = BytesParser(policy=policy.compat32).parsebytes(out)
        theirs = []

        def walk(m):
            if m.is_multipart() and m.get_content_maintype() == "multipart":
                for sub in m.get_payload():
                    walk(sub)
                return
            theirs.append(m.get_content_type())
        walk(msg)
    except Exception:
        theirs = None
    ours = [n.content_type for _, n in numbered]
    if theirs != ours:
        text = "the MIME structure of this mail is ambiguous (parsers disagree); no verdict beyond 'unverified'"
        ctx.warn(text)
        security["warnings"] = list(ctx.warnings)
        if security["verdict"] == "verified":
            security["verdict"] = "unverified"


# --- the verdict -------------------------------------------------------------------------------

def _from_address(top: mime.Entity, ctx: Ctx) -> str | None:
    values = top.msg.get_all("From") or []
    if len(values) != 1:
        ctx.warn("the mail has no From header" if not values else f"the mail has {len(values)} From headers")
        return None
    value = str(values[0])     # raw: encoded words are display-name text, decoded below
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:
        pairs = []
    pairs = [(n, a) for n, a in pairs if a or n]
    if len(pairs) != 1 or value.count("<") > 1 or value.count("@") - (pairs[0][0].count("@") if pairs else 0) > 1:
        ctx.warn("the From header names several addresses")
        return None
    name, addr = pairs[0]
    name = mime.decode_words(name)
    addr = addr.strip()
    if not _ADDR_SPEC.match(addr):
        ctx.warn(f"the From address {addr!r} is unusual; it cannot be matched to a signer")
        return None
    addr = addr.lower()
    for shown in _ADDRESSISH.findall(name):
        if shown.lower().strip(".") != addr:
            ctx.warn(f"the From display name shows another address ({shown}) than the real one ({addr})")
    return addr


def judge(top: mime.Entity, root: Node, numbered: list, ctx: Ctx) -> dict:
    sender = _from_address(top, ctx)
    msg_sigs = [s for s in ctx.sigs if not s.attachment]

    shown = [n for _, n in numbered if not _ignorable(n)]
    if shown:
        covering = frozenset.intersection(*[frozenset(n.prot.sigs) for n in shown])
    else:
        covering = frozenset(root.prot.sigs)
    main = None
    if msg_sigs:
        covering_sigs = [s for s in msg_sigs if s.id in covering]
        main = covering_sigs[0] if covering_sigs else msg_sigs[0]
        if len(msg_sigs) > 1:
            ctx.warn(f"the mail carries {len(msg_sigs)} signatures; a verified mail has exactly one")
    covers_all = bool(main and main.id in covering)
    if main and not covers_all:
        outside = [f"part {num} ({n.content_type})" for num, n in numbered
                   if not _ignorable(n) and main.id not in n.prot.sigs]
        partial = [f"part {num}" for num, n in numbered if n.partial]
        detail = ", ".join(outside[:5]) + (" …" if len(outside) > 5 else "")
        ctx.warn("the signature does not cover everything displayed: " + (detail or "unsigned text beside it")
                 + (f" (text outside the signed block in {', '.join(partial)})" if partial else ""))
    matches = bool(main and sender and sender in [a.lower() for a in main.signer.get("addresses", [])])
    if main and main.status == "good":
        if not main.trusted:
            ctx.warn("the signing key is not trusted (an admin has not marked it trusted)"
                     if main.scheme == "openpgp" else
                     "the signer's certificate is not trusted (no chain to a trust anchor, not pinned)")
        if sender and not matches:
            addrs = ", ".join(main.signer.get("addresses", [])) or "no address"
            ctx.warn(f"the signer ({addrs}) is not the sender ({sender})")
    elif main:
        ctx.warn(f"signature {main.status}: {main.reason or ''}".rstrip(": "))
    outer_subject = mime.decode_words(str(top.msg.get("Subject", ""))).strip()
    if (ctx.protected and ctx.protected.get("subject") is not None and not ctx.encrypted
            and " ".join(ctx.protected["subject"].split()) != " ".join(outer_subject.split())):
        ctx.warn("the Subject was changed after signing; the signed Subject is shown", block=False)
    if ctx.protected and ctx.protected.get("from") and sender:
        inner = [a.lower() for _, a in email.utils.getaddresses([ctx.protected["from"]]) if a]
        if inner != [sender]:
            ctx.warn(f"the From inside the protected part ({ctx.protected['from']}) differs from the mail's From")
    enc_nodes = [n for n in shown if n.prot.encrypted]
    fully_encrypted = bool(shown) and len(enc_nodes) == len(shown)
    if ctx.encrypted and shown and not fully_encrypted and enc_nodes:
        ctx.warn("only part of the mail was encrypted", block=False)

    any_bad = any(s.status == "bad" for s in ctx.sigs)
    if any_bad or ctx.integrity_failed:
        verdict = "bad"
    elif ctx.decrypt_failed:
        verdict = "undecryptable"
    elif not msg_sigs:
        verdict = "encrypted-only" if ctx.encrypted else "none"
    elif (main.status == "good" and covers_all and main.trusted and matches and sender
          and not ctx.blockers):
        verdict = "verified"
    elif any(s.status == "good" for s in msg_sigs) and not covers_all:
        verdict = "signed-partially"
    else:
        verdict = "unverified"
    return {
        "schema": SCHEMA,
        "encrypted": ctx.encrypted,
        "decrypted": ctx.encrypted and not ctx.decrypt_failed,
        "fully_encrypted": fully_encrypted and not ctx.decrypt_failed,
        "signature": main.status if main else "none",
        "signer": main.signer if main else None,
        "covers_all": covers_all,
        "signer_matches_from": matches,
        "trusted": bool(main and main.trusted),
        "verdict": verdict,
        "warnings": list(ctx.warnings),
        "errors": list(ctx.errors),
        "signatures": [s.as_dict() for s in ctx.sigs],
        "from": sender,
        "protected_headers": ctx.protected,
    }


def _ignorable(node: Node) -> bool:
    """Whitespace-only inline text shows nothing; it need not be signed."""
    if node.attachment or node.content_type != "text/plain":
        return False
    if node.text is not None:
        return not node.text.strip()
    if node.entity is not None:
        return not node.entity.decoded().strip()
    return False
