"""Just enough BER/DER to look inside a CMS object before openssl touches it.

openssl checks signatures; this module answers the questions openssl's exit status
does not: what kind of CMS object is it, how many signers, is the content inside
(opaque) or outside (detached), and what type of content is signed (eContentType).
Those decide whether a good signature says anything about what is displayed.
Everything is bounds-checked; malformed input raises ``Malformed``.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED = "1.2.840.113549.1.7.2"
OID_ENVELOPED = "1.2.840.113549.1.7.3"
OID_DIGESTED = "1.2.840.113549.1.7.5"
OID_ENCRYPTED = "1.2.840.113549.1.7.6"
OID_AUTH_ENVELOPED = "1.2.840.113549.1.9.16.1.23"
OID_COMPRESSED = "1.2.840.113549.1.9.16.1.9"

CONTENT_NAMES = {
    OID_DATA: "data", OID_SIGNED: "signed-data", OID_ENVELOPED: "enveloped-data",
    OID_DIGESTED: "digested-data", OID_ENCRYPTED: "encrypted-data",
    OID_AUTH_ENVELOPED: "authEnveloped-data", OID_COMPRESSED: "compressed-data",
}

MAX_DEPTH = 64


class Malformed(ValueError):
    pass


@dataclass
class TLV:
    cls: int            # 0 universal, 1 application, 2 context, 3 private
    constructed: bool
    tag: int
    start: int          # first byte of the value
    end: int            # one past the last byte of the value
    next: int           # first byte after this element (after an end-of-contents for BER)
    children: list["TLV"] | None = None


def read(buf: bytes, pos: int = 0, limit: int | None = None, depth: int = 0) -> TLV:
    limit = len(buf) if limit is None else limit
    if depth > MAX_DEPTH:
        raise Malformed("nested too deeply")
    if pos >= limit:
        raise Malformed("truncated (no tag)")
    b = buf[pos]
    cls, constructed, tag = b >> 6, bool(b & 0x20), b & 0x1F
    pos += 1
    if tag == 0x1F:
        tag = 0
        for _ in range(5):
            if pos >= limit:
                raise Malformed("truncated (tag)")
            c = buf[pos]
            pos += 1
            tag = (tag << 7) | (c & 0x7F)
            if not c & 0x80:
                break
        else:
            raise Malformed("tag number too long")
    if pos >= limit:
        raise Malformed("truncated (no length)")
    n = buf[pos]
    pos += 1
    if n == 0x80:  # BER indefinite length: children up to an end-of-contents (00 00)
        if not constructed:
            raise Malformed("indefinite length on a primitive element")
        children = []
        start = pos
        while True:
            if pos + 2 > limit:
                raise Malformed("truncated (no end-of-contents)")
            if buf[pos] == 0 and buf[pos + 1] == 0:
                return TLV(cls, constructed, tag, start, pos, pos + 2, children)
            child = read(buf, pos, limit, depth + 1)
            children.append(child)
            pos = child.next
    if n & 0x80:
        count = n & 0x7F
        if count > 4 or pos + count > limit:
            raise Malformed("bad length")
        length = int.from_bytes(buf[pos:pos + count], "big")
        pos += count
    else:
        length = n
    end = pos + length
    if end > limit:
        raise Malformed("truncated (value shorter than its length)")
    return TLV(cls, constructed, tag, pos, end, end)


def children(buf: bytes, tlv: TLV, depth: int = 0) -> list[TLV]:
    if tlv.children is not None:
        return tlv.children
    if not tlv.constructed:
        raise Malformed("expected a constructed element")
    out, pos = [], tlv.start
    while pos < tlv.end:
        child = read(buf, pos, tlv.end, depth + 1)
        out.append(child)
        pos = child.next
    tlv.children = out
    return out


def oid(buf: bytes, tlv: TLV) -> str:
    if tlv.cls != 0 or tlv.tag != 6:
        raise Malformed("expected an OBJECT IDENTIFIER")
    data = buf[tlv.start:tlv.end]
    if not data:
        raise Malformed("empty OBJECT IDENTIFIER")
    parts, value = [], 0
    for c in data:
        value = (value << 7) | (c & 0x7F)
        if not c & 0x80:
            parts.append(value)
            value = 0
    first = parts[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(p) for p in head + parts[1:])


@dataclass
class CmsInfo:
    content_type: str                    # OID
    kind: str                            # signed-data, enveloped-data, ...
    econtent_type: str | None = None     # SignedData: type of the signed content
    econtent_present: bool = False       # SignedData: content inside (opaque) or not (detached)
    signers: int = 0
    certificates: int = 0
    crls: int = 0
    recipients: int = 0                  # (Auth)EnvelopedData
    problems: list[str] = field(default_factory=list)


def to_der(data: bytes) -> bytes:
    """DER from DER, PEM (``-----BEGIN PKCS7-----`` / ``CMS``) or bare base64."""
    stripped = data.strip()
    if stripped[:1] == b"\x30":
        return data
    m = re.search(rb"-----BEGIN [A-Z0-9 ]+-----(.*?)-----END [A-Z0-9 ]+-----", stripped, re.S)
    body = m.group(1) if m else stripped
    try:
        return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==", validate=False)
    except Exception as exc:  # binascii.Error
        raise Malformed("not DER, PEM or base64") from exc


def inspect(data: bytes) -> CmsInfo:
    """The outline of a CMS ContentInfo; raises Malformed."""
    buf = data
    top = read(buf)
    if top.cls != 0 or top.tag != 16:
        raise Malformed("not a CMS object (no SEQUENCE)")
    ci = children(buf, top)
    if not ci:
        raise Malformed("empty ContentInfo")
    ctype = oid(buf, ci[0])
    info = CmsInfo(ctype, CONTENT_NAMES.get(ctype, ctype))
    if len(ci) < 2:
        return info
    wrapper = ci[1]
    if wrapper.cls != 2 or wrapper.tag != 0:
        raise Malformed("ContentInfo content is not [0]")
    inner = children(buf, wrapper)
    if not inner:
        raise Malformed("empty content")
    if ctype == OID_SIGNED:
        _signed(buf, children(buf, inner[0]), info)
    elif ctype in (OID_ENVELOPED, OID_AUTH_ENVELOPED):
        body = children(buf, inner[0])
        # version, [originatorInfo], recipientInfos SET, ...
        idx = 1
        if len(body) > idx and body[idx].cls == 2 and body[idx].tag == 0:
            idx += 1
        if len(body) > idx and body[idx].cls == 0 and body[idx].tag == 17:
            info.recipients = len(children(buf, body[idx]))
    return info


def _signed(buf: bytes, body: list[TLV], info: CmsInfo) -> None:
    # version, digestAlgorithms SET, encapContentInfo SEQ, [0] certs, [1] crls, signerInfos SET
    if len(body) < 4:
        raise Malformed("SignedData is incomplete")
    encap = children(buf, body[2])
    if not encap:
        raise Malformed("encapContentInfo is empty")
    info.econtent_type = oid(buf, encap[0])
    info.econtent_present = len(encap) > 1
    for el in body[3:-1]:
        if el.cls == 2 and el.tag == 0:
            info.certificates = len(children(buf, el))
        elif el.cls == 2 and el.tag == 1:
            info.crls = len(children(buf, el))
    last = body[-1]
    if last.cls != 0 or last.tag != 17:
        raise Malformed("SignedData has no signerInfos")
    info.signers = len(children(buf, last))
