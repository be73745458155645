"""TNEF (``winmail.dat``, application/ms-tnef): what Outlook and Exchange wrap a
mail's attachments and rich-text body in. Unpacked with ``tnefparse`` into the
files inside it, plus the body it carries (plain text, HTML and/or compressed RTF,
each as its own sub-part), so that each is shown and downloadable.

The winmail.dat part itself stays what it was (its bytes are in the raw mail); the
sub-parts get numbers below it: part ``3`` → ``3.1``, ``3.2``, … in the order
``subparts`` returns them (the attachments in TNEF order, then the body parts, as
MimeKit lists them). The same bytes always give the same list.
"""
from __future__ import annotations

import logging
import mimetypes
from dataclasses import dataclass

TNEF_TYPES = ("application/ms-tnef", "application/vnd.ms-tnef")
SIGNATURE = b"\x78\x9f\x3e\x22"     # 0x223E9F78, little-endian

# tnefparse logs malformed TNEF at ERROR (decode_mapi) and WARNING: a bad winmail.dat
# is data, not a fault of the service; what could not be unpacked stays downloadable
# as the winmail.dat part itself.
logging.getLogger("tnefparse").setLevel(logging.CRITICAL)


@dataclass
class SubPart:
    filename: str
    content_type: str
    payload: bytes
    body: bool = False        # a rendering of the message body, not an attached file
    text: str | None = None   # for a body part: its text (RTF converted to plain text)


def is_tnef(content_type: str, filename: str | None, data: bytes) -> bool:
    """A TNEF blob: declared as one (or named winmail.dat, as some gateways send it
    as application/octet-stream) and starting with the TNEF signature."""
    declared = content_type in TNEF_TYPES or (filename or "").strip().lower() == "winmail.dat"
    return declared and data[:4] == SIGNATURE


class TnefError(Exception):
    pass


def subparts(data: bytes) -> list[SubPart]:
    """The files and the body inside a TNEF blob; raises TnefError when it cannot
    be decoded."""
    try:
        from tnefparse import TNEF
    except ImportError as exc:      # a deployment without it: winmail.dat stays one file
        raise TnefError(f"tnefparse is not installed ({exc})") from exc
    _check_cost(data)
    try:
        tnef = TNEF(data, do_checksum=False)
        exact = _exact_data(tnef)
        out = [_attachment(a, i, tnef.codepage, exact[i - 1] if i <= len(exact) else None)
               for i, a in enumerate(tnef.attachments, 1)]
        out += _bodies(tnef)
    except Exception as exc:     # tnefparse raises whatever its struct reads hit on bad input
        raise TnefError(f"{type(exc).__name__}: {exc}") from exc
    return out


# tnefparse reads each object of the stream from ``data[offset:]``, a copy of the rest
# of the stream: thousands of tiny objects before a big one cost a copy of the big one
# each (5,000 before 20 MB: 7 s), so a crafted winmail.dat could hold ingest for hours.
# The bytes it would copy are added up first (one pass over the object headers); a
# normal 60 MB winmail.dat copies a few GB at most.
MAX_COPY_BYTES = 8 << 30        # about 0.6 s of copying; the MimeKit samples need 3-22x their size


def _check_cost(data: bytes) -> None:
    import struct

    offset, copied, size = 6, 0, len(data)
    while offset + 12 < size:                       # tnefparse's loop, headers only
        copied += size - offset
        if copied > MAX_COPY_BYTES:
            raise TnefError(f"too many objects for its size: unpacking would copy over {MAX_COPY_BYTES >> 30} GiB")
        declared = struct.unpack_from("<I", data, offset + 5)[0]
        offset += min(size - offset, declared + 11)


def _text(value, codepage: str | None) -> str:
    if isinstance(value, str):
        return value.replace("\x00", "")
    try:
        return bytes(value).decode(codepage or "cp1252", errors="replace").replace("\x00", "")
    except LookupError:
        return bytes(value).decode("cp1252", errors="replace").replace("\x00", "")


def _attachment(att, index: int, codepage: str | None, exact: bytes | None) -> SubPart:
    from tnefparse import properties

    name = _text(att.long_filename() or att.name or "", codepage).strip()
    mime = ""
    for attr in att.mapi_attrs:
        if attr.name == properties.MAPI_ATTACH_MIME_TAG:
            mime = _text(attr.data, codepage).strip().lower()
    if hasattr(att, "embed"):
        mime = "application/ms-tnef"        # an attached Outlook item: TNEF again
    if not mime or "/" not in mime:
        mime = (mimetypes.guess_type(name)[0] if name else None) or "application/octet-stream"
    payload = exact if exact is not None else att.data if isinstance(att.data, bytes) else bytes(att.data or b"")
    return SubPart(filename=name or f"attachment-{index}", content_type=mime, payload=payload)


# --- the attachments' exact bytes --------------------------------------------------
# tnefparse 1.4.0 strips trailing NUL bytes off every binary MAPI value
# (TNEFMAPI_Attribute.data: ``s.rstrip(b"\x00")``), and an attachment's bytes are one
# (PR_ATTACH_DATA_OBJ): a Word .doc, which ends in zero-filled sectors, came out 418
# bytes short. So the value is read again here, with the length the TNEF stream gives.

_ATTACH_DATA_OBJ = 0x3701
_FIXED = {0x0002: 4, 0x000B: 4, 0x0003: 4, 0x0004: 4, 0x000A: 4, 0x0005: 8, 0x0006: 8, 0x0007: 8,
          0x0014: 8, 0x0040: 8, 0x0048: 16}
_VARIABLE = (0x0000, 0x000D, 0x001E, 0x001F, 0x0102)


def _exact_data(tnef) -> list[bytes | None]:
    """Per attachment (in tnefparse's order), its bytes as the stream holds them;
    None where the stream gave none or could not be read (tnefparse's then stand)."""
    from tnefparse.mapi import IMESSAGE_SIG
    from tnefparse.tnef import TNEF

    out: list[bytes | None] = []
    for obj in tnef.objects:
        if obj.name == TNEF.ATTATTACHRENDDATA:          # tnefparse starts an attachment here
            out.append(None)
        elif obj.level == TNEF.LVL_ATTACHMENT and out:
            if obj.name == TNEF.ATTATTACHDATA:
                out[-1] = bytes(obj.data)
            elif obj.name == TNEF.ATTATTACHMENT:
                value = _mapi_value(bytes(obj.data), _ATTACH_DATA_OBJ)
                if value is not None:
                    out[-1] = value[len(IMESSAGE_SIG):] if value.startswith(IMESSAGE_SIG) else value
    return out


def _mapi_value(data: bytes, wanted: int) -> bytes | None:
    """The first value of MAPI property ``wanted`` (a binary/object/string one) in a
    MAPI property list, exactly as long as the stream says; None if absent or unreadable."""
    import struct

    try:
        (count,), offset = struct.unpack_from("<I", data, 0), 4
        for _ in range(count):
            ptype, name = struct.unpack_from("<HH", data, offset)
            offset += 4
            if name >= 0x8000:                         # a named property: GUID, then id or name
                kind = struct.unpack_from("<I", data, offset + 16)[0]
                offset += 20
                if kind == 0:
                    offset += 4
                else:
                    length = struct.unpack_from("<I", data, offset)[0]
                    offset += 4 + length + (-length % 4)
            values = 1
            multi = bool(ptype & 0x1000)
            if multi:
                ptype ^= 0x1000
                values = struct.unpack_from("<I", data, offset)[0]
                offset += 4
            if ptype in _FIXED:
                size = 8 if ptype in (0x0002, 0x000B) and multi else _FIXED[ptype]
                if ptype in (0x0002, 0x000B) and multi:   # 2 bytes each, the list padded to 4
                    offset += 2 * values + (2 if values % 2 else 0)
                else:
                    offset += size * values
                continue
            if ptype not in _VARIABLE:
                return None
            if not multi:
                values = struct.unpack_from("<I", data, offset)[0]
                offset += 4
            for i in range(values):
                length = struct.unpack_from("<I", data, offset)[0]
                offset += 4
                if name == wanted and i == 0:
                    if offset + length > len(data):
                        return None
                    return data[offset:offset + length]
                offset += length + (-length % 4)
    except struct.error:
        return None
    return None


def _bodies(tnef) -> list[SubPart]:
    out = []
    if tnef.body:
        text = _text(tnef.body, tnef.codepage)
        out.append(SubPart("body.txt", "text/plain", text.encode("utf-8"), body=True, text=text))
    if tnef.htmlbody:
        html = _text(tnef.htmlbody, tnef.codepage)
        out.append(SubPart("body.html", "text/html", html.encode("utf-8"), body=True, text=html))
    rtf = tnef.rtfbody        # decompressed (compressed_rtf)
    if rtf:
        out.append(SubPart("body.rtf", "text/rtf", rtf, body=True, text=rtf_to_text(rtf)))
    return out


MAX_RTF_BYTES = 8 * 1024 * 1024   # longer RTF bodies are converted up to here (the part stays whole)


def rtf_to_text(rtf: bytes) -> str:
    """Plain text of an RTF body (striprtf; the RTF's own code page wins); empty when
    it cannot be read."""
    try:
        from striprtf.striprtf import rtf_to_text as strip

        return strip(rtf[:MAX_RTF_BYTES].decode("latin-1"), errors="replace").replace("\x00", "")
    except Exception:
        return ""
