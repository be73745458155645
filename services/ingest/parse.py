"""Raw bytes → the parts a person sees: headers, body text, HTML, attachments.

Everything here is derived from the stored raw mail and can be derived again.
The stdlib ``email`` package does the parsing; this module only decides what is
the body and what is an attachment, and survives what real mail throws at it
(unknown charsets, broken encodings, malformed headers).

Parts are numbered like IMAP body parts ("1", "2.1", …): ``walk_leaves`` gives the
same numbers for the same bytes, so an attachment is referenced by
(raw sha256, part) and fetched again from the raw store when someone downloads it.
Below a leaf, the numbering goes on where the leaf holds parts of its own: an
attached mail (message/rfc822 part "2": its parts are "2.1", "2.2", … as IMAP
numbers them) and a TNEF winmail.dat (part "3": the files in it are "3.1", …;
tnef.py). ``get_part`` resolves every number ``parse_mail`` lists.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import html as htmllib
import quopri
import re
from dataclasses import dataclass, field
from email import policy
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.feedparser import FeedParser
from email.utils import parsedate_to_datetime
from io import BytesIO
from typing import Iterator

import nh3

from osprey.contracts import find_ips, unique

from . import tnef
from .autoreply import classify
from .safe import getaddresses, parseaddr, text

# At least one of these must be present for bytes to count as a mail.
_MAIL_HEADERS = ("from", "sender", "to", "subject", "date", "message-id")

# The stdlib's header parser (email._header_value_parser) needs memory quadratic in
# the number of tokens of a value (CPython gh-136063): a 512 KiB Subject made of
# encoded words takes 2.6 GB and 4 s, a To 5 GB and 14 s, so one such mail would take
# ingest down and come back after every restart. Values are read up to this length
# (64 KiB: ~100 MB and 0.1 s at worst); the raw mail keeps them whole.
MAX_HEADER_CHARS = 64 * 1024


class _ParsePolicy(policy.EmailPolicy):
    """``policy.default`` made total. A header value is parsed only up to
    MAX_HEADER_CHARS, and where the header registry fails on one (AttributeError for
    a group inside an address list; UnicodeEncodeError when an encoded word decodes to
    a lone surrogate, e.g. UTF-7 "+2AA-", in any header: in Content-Transfer-Encoding
    that made get_payload(decode=True) raise) the value is its decoded text, a plain
    string, which is all the Message methods used here need. The parser itself reads
    Content-Type through this, too."""

    def header_fetch_parse(self, name, value):
        if hasattr(value, "name"):
            return value
        value = value[:MAX_HEADER_CHARS]
        try:
            return super().header_fetch_parse(name, value)
        except Exception:
            return _decoded(value)


def _decoded(value: str) -> str:
    """A raw header value's RFC 2047 words decoded, as valid Unicode."""
    try:
        return text(str(make_header(decode_header(value))))
    except Exception:
        return text(value)


_POLICY = _ParsePolicy()

# Attached mails (message/rfc822) and TNEF blobs are unpacked this many levels deep;
# deeper ones are listed as the one part they are (their bytes stay downloadable).
MAX_NESTING = 3
# Parts listed inside attached mails and TNEF blobs, all together: a forwarded mail of
# thousands of parts (flanker's enclosed-endless.eml has 3,039) is listed up to here.
MAX_NESTED_PARTS = 200


class Unparseable(Exception):
    """The bytes are no mail we can show; the reason is for people."""


@dataclass
class Part:
    part: str
    content_type: str
    filename: str | None
    disposition: str | None
    payload: bytes


@dataclass
class ParsedMail:
    message_id: str | None
    in_reply_to: str | None
    references: list[str]
    subject: str
    sender: str
    sender_address: str
    to: list[str]
    cc: list[str]
    date: str | None
    body_text: str
    body_html: str | None
    body_truncated: bool
    attachments: list[dict] = field(default_factory=list)
    # mails attached as message/rfc822 parts (forwarded as attachment; abuse reports):
    # [{part, from, to, cc, subject, date, message_id, text, text_truncated,
    #   received_ips, ips, attachments: [part numbers]}], also rendered into body_text
    attached_messages: list[dict] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    auto: dict = field(default_factory=dict)      # autoreply.classify


_FEED = 8192   # characters email.parser.Parser feeds its FeedParser at a time


def parse_bytes(raw: bytes) -> EmailMessage:
    """``BytesParser(policy=_POLICY).parsebytes(raw)``, fed the same 8,192-character
    pieces, without its two whole copies of the mail: parsebytes decodes all of it
    into one str, then reads that through a StringIO, which holds 4 bytes per
    character; for a 50 MB mail that was 250 MB more at the peak."""
    # a UTF-8 byte-order mark before the header (mail saved by some Windows tools)
    # would hide the first header line; the stored raw bytes keep it
    start = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
    parser = FeedParser(policy=_POLICY)
    view = memoryview(raw)
    for offset in range(start, len(raw), _FEED):
        parser.feed(str(view[offset:offset + _FEED], "ascii", "surrogateescape"))
    return parser.close()


def header(msg: Message, name: str) -> str | None:
    """A header's decoded value, valid Unicode; never raises on malformed input (where
    the stdlib's parser fails, _ParsePolicy gives the decoded raw value)."""
    value = msg.get(name)
    return None if value is None else text(str(value))


def walk_leaves(msg: Message, prefix: str = "") -> Iterator[tuple[str, Message]]:
    """Leaf parts with IMAP-style numbers. message/rfc822 is a leaf (an attached mail
    is shown and downloaded whole, with its own headers)."""
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        for i, sub in enumerate(msg.get_payload(), start=1):
            yield from walk_leaves(sub, f"{prefix}{i}." if prefix else f"{i}.")
        return
    yield (prefix[:-1] if prefix else "1"), msg


class _Verbatim(_ParsePolicy):
    """The policy for writing a parsed part back out as bytes (an attached mail): every
    header as it arrived (line breaks as the generator writes them), and Content-Type
    and Content-Transfer-Encoding read as the parser read them. The stock folding
    (compat32's, policy.default's) re-wraps long headers, and compat32's raises
    HeaderParseError on a value with a line that looks like a header of its own."""

    verify_generated_headers = False   # Python >= 3.11.10 would refuse such a line, too

    def fold_binary(self, name, value):
        if hasattr(value, "name"):      # a header object: made by code, not parsed
            return super().fold_binary(name, value)
        lines = _LINE_BREAK.split(value)
        return (f"{name}: " + self.linesep.join(lines) + self.linesep).encode("utf-8", "surrogateescape")


_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_VERBATIM = _Verbatim()


class _BytesGenerator(BytesGenerator):
    """The stdlib's BytesGenerator, except for a multipart whose start boundary the
    parser never found: its body stays one string, which the stock generator writes
    via ``get_payload()``; that turns undecodable bytes (surrogate escapes) into U+FFFD
    and then fails to encode them (UnicodeEncodeError). Written from the string itself,
    the surrogates become the original bytes again."""

    def _handle_multipart(self, msg):
        if isinstance(msg._payload, str):
            self.write(msg._payload)
            return
        super()._handle_multipart(msg)


def _as_bytes(msg: Message) -> bytes:
    fp = BytesIO()
    _BytesGenerator(fp, mangle_from_=False, policy=_VERBATIM).flatten(msg)
    return fp.getvalue()


def part_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822" or part.is_multipart():
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return _as_bytes(inner[0])
        return _as_bytes(part)
    quick = _plain_base64(part)
    if quick is not None:
        return quick
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    return payload


# base64 as mailers write it: the alphabet in lines, at most two "=" at the end
_PLAIN_BASE64 = re.compile(r"[A-Za-z0-9+/\r\n]*(?:=[\r\n]*){0,2}")


def _plain_base64(part: Message) -> bytes | None:
    """The decoded bytes of a well-formed base64 body, as ``get_payload(decode=True)``
    gives them, without its copies (it encodes the body, splits it into lines, joins
    them, then decodes: 3 MB held per MB of attachment at the peak); None for anything
    else, which get_payload decodes (with its defect handling)."""
    payload = part._payload
    if not isinstance(payload, str) or not payload.isascii():
        return None
    if str(part.get("content-transfer-encoding", "")).lower() != "base64":
        return None
    if (len(payload) - payload.count("\n") - payload.count("\r")) % 4 or not _PLAIN_BASE64.fullmatch(payload):
        return None
    return binascii.a2b_base64(payload)


def part_text(part: Message) -> str:
    """The decoded text of a text part, valid Unicode (a UTF-7 body can decode to lone
    surrogates)."""
    return text(_part_text(part))


def _part_text(part: Message) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except Exception:
        pass
    payload = part.get_payload(decode=True) or b""
    try:
        charset = part.get_content_charset() or "utf-8"
    except (LookupError, ValueError):
        # an RFC 2231 charset (charset*=<charset>''<value>) is decoded in its own
        # charset: str(..., "ansi-x3.4-1968\x01\x00") raises ValueError (NUL inside)
        charset = "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except (LookupError, ValueError):
        # LookupError: a charset Python does not know; ValueError (UnicodeError is one):
        # a name with a NUL in it, or a codec that refuses errors="replace" ("idna",
        # "undefined")
        return payload.decode("utf-8", errors="replace")


def attached_message(part: Message) -> Message | None:
    """The mail inside a message/rfc822 part, parsed; None when there is none. A
    base64 or quoted-printable encoded one (RFC 2046 forbids it; it happens) is
    decoded first."""
    inner = part.get_payload()
    if not (isinstance(inner, list) and inner and isinstance(inner[0], Message)):
        return None
    cte = str(part.get("Content-Transfer-Encoding") or "").strip().lower()
    if cte in ("base64", "quoted-printable"):
        encoded = _as_bytes(inner[0])
        try:
            if cte == "base64":
                decoded = base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", encoded))
            else:
                decoded = quopri.decodestring(encoded)
            mail = parse_bytes(decoded)
        except Exception:
            return inner[0]
        if {k.lower() for k in mail.keys()} & set(_MAIL_HEADERS):
            return mail
    return inner[0]


def get_part(raw: bytes, number: str) -> Part:
    """Part ``number`` of a stored mail, as ``parse_mail`` lists it: a MIME leaf
    ("2", "1.2"), a part of an attached mail ("2.1": part 1 of the mail attached as
    part 2), or a file inside a TNEF winmail.dat ("3.1"). Raises KeyError."""
    return find_part(parse_bytes(raw), number)


def find_part(msg: Message, number: str) -> Part:
    """``get_part`` on a mail parsed already (``parse_bytes``): several parts of one
    mail without parsing it again for each."""
    return _find(msg, str(number), "", 0)


def _find(msg: Message, number: str, base: str, depth: int) -> Part:
    for num, part in walk_leaves(msg):
        full = base + num
        if number == full:
            return Part(full, part.get_content_type(), _filename(part), part.get_content_disposition(),
                        part_bytes(part))
        if not number.startswith(full + ".") or depth >= MAX_NESTING:
            continue
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            inner = attached_message(part)
            if inner is not None:
                return _find(inner, number, full + ".", depth + 1)
        else:
            data = part_bytes(part)
            if tnef.is_tnef(ctype, _filename(part), data):
                return _find_tnef(data, number, full + ".", depth + 1)
        break
    raise KeyError(number)


def _find_tnef(data: bytes, number: str, base: str, depth: int) -> Part:
    try:
        subs = tnef.subparts(data)
    except tnef.TnefError:
        raise KeyError(number) from None
    for i, sub in enumerate(subs, 1):
        full = f"{base}{i}"
        if number == full:
            return Part(full, sub.content_type, sub.filename, "attachment", sub.payload)
        if (number.startswith(full + ".") and depth < MAX_NESTING
                and tnef.is_tnef(sub.content_type, sub.filename, sub.payload)):
            return _find_tnef(sub.payload, number, full + ".", depth + 1)
    raise KeyError(number)


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:
        return None
    return None if name is None else text(name)


def html_to_text(html: str) -> str:
    return htmllib.unescape(nh3.clean(html, tags=set()))


def _addresses(msg: Message, name: str) -> list[str]:
    value = header(msg, name)
    if not value:
        return []
    return [f"{n} <{a}>" if n else a for n, a in getaddresses([value]) if a or n]


class _Walk:
    """What parse_mail gathers while walking a mail, its attached mails and TNEF blobs."""

    def __init__(self, max_body_chars: int):
        self.attachments: list[dict] = []
        self.messages: list[dict] = []
        self.defects: list[str] = []
        self.budget = max_body_chars      # characters of attached mails' text still to keep
        self.parts = MAX_NESTED_PARTS      # parts inside attached mails / TNEF still to list

    def take_part(self) -> bool:
        """Room for one more part inside an attached mail or TNEF blob? (Noted once when not.)"""
        self.parts -= 1
        if self.parts == -1:
            self.defects.append("TooManyNestedParts")
        return self.parts >= 0


def _listing(number: str, filename: str | None, ctype: str, data: bytes) -> dict:
    return {"part": number, "filename": filename or _default_name(number, ctype), "content_type": ctype,
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _part_key(number: str) -> tuple[int, ...]:
    return tuple(int(n) for n in number.split("."))


def _read(msg: Message, base: str, depth: int, w: _Walk) -> tuple[str | None, str | None]:
    """The body text and HTML of ``msg`` (None: it has none); every other leaf is
    listed in ``w.attachments`` with its number under ``base``, attached mails are
    read into ``w.messages`` and TNEF blobs unpacked (both down to MAX_NESTING)."""
    body_text: str | None = None
    body_html: str | None = None
    tnef_bodies: list[tuple[str, tnef.SubPart]] = []
    for num, part in walk_leaves(msg):
        if depth and not w.take_part():
            break
        number = base + num
        ctype = part.get_content_type()
        disposition = part.get_content_disposition()
        filename = _filename(part)
        is_attachment = disposition == "attachment" or (filename is not None and disposition != "inline")
        if ctype == "text/plain" and not is_attachment and body_text is None:
            body_text = part_text(part)
            continue
        if ctype == "text/html" and not is_attachment and body_html is None:
            body_html = part_text(part)
            continue
        try:
            data = part_bytes(part)
        except RecursionError as exc:  # message/rfc822 nested a few hundred deep: the
            # parser copes, flattening the attached mail again exceeds the recursion limit
            raise Unparseable(f"part {number} ({ctype}) is nested too deeply to extract") from exc
        if depth < MAX_NESTING and tnef.is_tnef(ctype, filename, data):
            if _unpack_tnef(data, number, depth + 1, w, tnef_bodies):
                continue
        w.attachments.append(_listing(number, filename, ctype, data))
        if ctype == "message/rfc822" and depth < MAX_NESTING:
            inner = attached_message(part)
            if inner is not None:
                _read_attached(inner, number, depth + 1, w)
    if body_text is None and body_html is None and tnef_bodies:
        # an Outlook mail whose only body is inside winmail.dat
        kinds = {sub.content_type: (number, sub) for number, sub in tnef_bodies}
        used = set()
        if "text/plain" in kinds:
            used.add(kinds["text/plain"][0])
            body_text = kinds["text/plain"][1].text
        if "text/html" in kinds:
            used.add(kinds["text/html"][0])
            body_html = kinds["text/html"][1].text
        if not used and "text/rtf" in kinds:
            used.add(kinds["text/rtf"][0])
            body_text = kinds["text/rtf"][1].text
        tnef_bodies = [(n, sub) for n, sub in tnef_bodies if n not in used]
    for number, sub in tnef_bodies:      # a body beside the mail's own: kept as a file
        w.attachments.append(_listing(number, sub.filename, sub.content_type, sub.payload))
    return body_text, body_html


def _unpack_tnef(data: bytes, number: str, depth: int, w: _Walk,
                 bodies: list[tuple[str, tnef.SubPart]] | None) -> bool:
    """List the files in a TNEF blob as parts ``number.1``, ``number.2``, …; its body
    parts go to ``bodies`` (None: listed as files too). False when it cannot be
    decoded or holds nothing (then it is listed as the file it is)."""
    try:
        subs = tnef.subparts(data)
    except tnef.TnefError:
        w.defects.append("TnefUndecodable")
        return False
    if not subs:
        return False        # nothing found in it: it stays listed as the file it is
    for i, sub in enumerate(subs, 1):
        if not w.take_part():
            break
        sub_number = f"{number}.{i}"
        if sub.body and bodies is not None:
            bodies.append((sub_number, sub))
            continue
        if depth < MAX_NESTING and tnef.is_tnef(sub.content_type, sub.filename, sub.payload):
            if _unpack_tnef(sub.payload, sub_number, depth + 1, w, None):
                continue
        w.attachments.append(_listing(sub_number, sub.filename, sub.content_type, sub.payload))
    return True


def _read_attached(inner: Message, number: str, depth: int, w: _Walk) -> None:
    """An attached mail (message/rfc822 part ``number``): its headers and text into
    ``w.messages``, its own parts listed under ``number``."""
    first = len(w.attachments)
    body, html = _read(inner, number + ".", depth, w)
    if body is None:
        body = html_to_text(html) if html else ""
    keep = max(0, w.budget)
    truncated = len(body) > keep
    body = body[:keep]
    w.budget -= len(body)
    received = " ".join(_header_text(v) for v in (inner.get_all("Received") or []))
    received_ips = [str(ip) for ip in find_ips(received)]
    subject = (header(inner, "Subject") or "").strip()
    w.messages.append({
        "part": number,
        "from": header(inner, "From") or header(inner, "Sender") or "",
        "to": _addresses(inner, "To"),
        "cc": _addresses(inner, "Cc"),
        "subject": subject,
        "date": _date(inner),
        "message_id": (header(inner, "Message-ID") or "").strip() or None,
        "text": body,
        "text_truncated": truncated,
        "received_ips": received_ips,
        "ips": unique(received_ips + [str(ip) for ip in find_ips(f"{subject}\n{body}")]),
        "attachments": [a["part"] for a in w.attachments[first:]],
    })


def _header_text(value) -> str:
    return text(str(value))[:MAX_HEADER_CHARS]


def _date(msg: Message) -> str | None:
    raw_date = header(msg, "Date")
    if raw_date:
        try:
            return parsedate_to_datetime(raw_date).isoformat()
        except Exception:
            return None
    return None


def render_attached(entry: dict) -> str:
    """An attached mail as the article's text shows it, below the mail's own text."""
    lines = [f"----- Attached message (part {entry['part']}) -----"]
    for label, key in (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Date", "date"), ("Subject", "subject"),
                       ("Message-ID", "message_id")):
        value = entry.get(key)
        if isinstance(value, list):
            value = ", ".join(value)
        if value:
            lines.append(f"{label}: {value}")
    if entry["received_ips"]:
        lines.append(f"Received from: {', '.join(entry['received_ips'])}")
    body = entry["text"] + ("\n[… shortened; the attached mail is complete in the original]"
                            if entry["text_truncated"] else "")
    return "\n".join(lines) + "\n\n" + body


def parse_mail(raw: bytes, max_body_chars: int) -> ParsedMail:
    if not raw.strip():
        raise Unparseable("empty message: no bytes besides whitespace")
    try:
        msg = parse_bytes(raw)
    except Exception as exc:  # the stdlib parser is lenient; this is rare
        raise Unparseable(f"the email parser failed: {type(exc).__name__}: {exc}") from exc
    present = {k.lower() for k in msg.keys()}
    if not present.intersection(_MAIL_HEADERS):
        raise Unparseable("not an RFC 5322 message: none of From, Sender, To, Subject, Date, "
                          "Message-ID in its header")

    w = _Walk(max_body_chars)
    body_text, body_html = _read(msg, "", 0, w)
    attachments = sorted(w.attachments, key=lambda a: _part_key(a["part"]))
    attached = sorted(w.messages, key=lambda m: _part_key(m["part"]))

    if body_text is None:
        body_text = html_to_text(body_html) if body_html else ""
    if attached:
        # the attached mails inline, below the mail's own text: shown with the article,
        # and their text and relays' IPs found by search like the mail's own
        blocks = [render_attached(m) for m in attached]
        body_text = "\n\n".join(([body_text.rstrip("\r\n")] if body_text.strip() else []) + blocks)
    truncated = len(body_text) > max_body_chars
    if truncated:
        body_text = body_text[:max_body_chars]
    if body_html is not None and len(body_html) > max_body_chars:
        body_html, truncated = body_html[:max_body_chars], True

    sender = header(msg, "From") or header(msg, "Sender") or ""
    references = (header(msg, "References") or "").split()
    return ParsedMail(
        message_id=(header(msg, "Message-ID") or "").strip() or None,
        in_reply_to=(header(msg, "In-Reply-To") or "").strip() or None,
        references=references,
        subject=(header(msg, "Subject") or "").strip(),
        sender=sender,
        sender_address=parseaddr(sender)[1],
        to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"),
        date=_date(msg),
        body_text=body_text,
        body_html=body_html,
        body_truncated=truncated,
        attachments=attachments,
        attached_messages=attached,
        defects=[type(d).__name__ for d in msg.defects] + w.defects,
        auto=classify(msg),
    )


def _default_name(number: str, ctype: str) -> str:
    ext = {"text/plain": "txt", "text/html": "html", "message/rfc822": "eml"}.get(ctype, "bin")
    return f"part-{number}.{ext}"
