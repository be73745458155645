"""Raw bytes → the parts a person sees: headers, body text, HTML, attachments.

Everything here is derived from the stored raw mail and can be derived again.
The stdlib ``email`` package does the parsing; this module only decides what is
the body and what is an attachment, and survives what real mail throws at it
(unknown charsets, broken encodings, malformed headers).

Parts are numbered like IMAP body parts ("1", "2.1", …): ``walk_leaves`` gives the
same numbers for the same bytes, so an attachment is referenced by
(raw sha256, part) and fetched again from the raw store when someone downloads it.
"""
from __future__ import annotations

import hashlib
import html as htmllib
import re
from dataclasses import dataclass, field
from email import policy
from email.generator import BytesGenerator
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from io import BytesIO
from typing import Iterator

import nh3

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
    defects: list[str] = field(default_factory=list)
    auto: dict = field(default_factory=dict)      # autoreply.classify


def parse_bytes(raw: bytes) -> EmailMessage:
    # a UTF-8 byte-order mark before the header (mail saved by some Windows tools)
    # would hide the first header line; the stored raw bytes keep it
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    return BytesParser(policy=_POLICY).parsebytes(raw)


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
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    return payload


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


def get_part(raw: bytes, number: str) -> Part:
    msg = parse_bytes(raw)
    for num, part in walk_leaves(msg):
        if num == number:
            return Part(num, part.get_content_type(), _filename(part), part.get_content_disposition(),
                        part_bytes(part))
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

    body_text: str | None = None
    body_html: str | None = None
    attachments: list[dict] = []
    for number, part in walk_leaves(msg):
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
        attachments.append({
            "part": number,
            "filename": filename or _default_name(number, ctype),
            "content_type": ctype,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        })

    if body_text is None:
        body_text = html_to_text(body_html) if body_html else ""
    truncated = len(body_text) > max_body_chars
    if truncated:
        body_text = body_text[:max_body_chars]
    if body_html is not None and len(body_html) > max_body_chars:
        body_html, truncated = body_html[:max_body_chars], True

    sender = header(msg, "From") or header(msg, "Sender") or ""
    date = None
    raw_date = header(msg, "Date")
    if raw_date:
        try:
            date = parsedate_to_datetime(raw_date).isoformat()
        except Exception:
            date = None
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
        date=date,
        body_text=body_text,
        body_html=body_html,
        body_truncated=truncated,
        attachments=attachments,
        defects=[type(d).__name__ for d in msg.defects],
        auto=classify(msg),
    )


def _default_name(number: str, ctype: str) -> str:
    ext = {"text/plain": "txt", "text/html": "html", "message/rfc822": "eml"}.get(ctype, "bin")
    return f"part-{number}.{ext}"
