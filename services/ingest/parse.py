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
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from typing import Iterator

import nh3

from .autoreply import classify

# At least one of these must be present for bytes to count as a mail.
_MAIL_HEADERS = ("from", "sender", "to", "subject", "date", "message-id")


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
    return BytesParser(policy=policy.default).parsebytes(raw)


def header(msg: Message, name: str) -> str | None:
    """A header's decoded value; never raises on malformed input."""
    try:
        value = msg.get(name)
        return None if value is None else str(value)
    except Exception:
        pass
    for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else msg.items():
        if key.lower() == name.lower():
            try:
                return str(make_header(decode_header(str(raw))))
            except Exception:
                return str(raw)
    return None


def walk_leaves(msg: Message, prefix: str = "") -> Iterator[tuple[str, Message]]:
    """Leaf parts with IMAP-style numbers. message/rfc822 is a leaf (an attached mail
    is shown and downloaded whole, with its own headers)."""
    if msg.is_multipart() and msg.get_content_maintype() == "multipart":
        for i, sub in enumerate(msg.get_payload(), start=1):
            yield from walk_leaves(sub, f"{prefix}{i}." if prefix else f"{i}.")
        return
    yield (prefix[:-1] if prefix else "1"), msg


def part_bytes(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822" or part.is_multipart():
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0].as_bytes(policy=policy.compat32)
        return part.as_bytes()
    payload = part.get_payload(decode=True)
    if payload is None:
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    return payload


def part_text(part: Message) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except Exception:
        pass
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, errors="replace")
    except LookupError:  # a charset Python does not know
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
        return part.get_filename()
    except Exception:
        return None


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
