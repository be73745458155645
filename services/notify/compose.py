"""Outgoing mail as bytes: headers, the ticket tag, threading, and forwards that keep
the evidence.

A forward in ``attach`` mode carries the original as a message/rfc822 part whose
content **is** the stored raw mail, spliced in as bytes (never parsed and
re-serialised), so its headers, DKIM and OpenPGP/S-MIME signatures still verify at
the receiver. The one change is the line ending: SMTP carries CRLF, so an original
stored with bare LF (as Postfix's pipe hands it over) is attached with CRLF — the
canonical form every signature scheme verifies over. An original with a line longer
than SMTP's 998 octets cannot travel as message/rfc822 (which allows only 7bit, 8bit
or binary); it is attached as application/octet-stream, base64, named ``.eml`` —
its decoded bytes are still the original's.
"""
from __future__ import annotations

import email.policy
import re
import uuid
from email.message import MIMEPart
from email.parser import BytesHeaderParser
from email.utils import format_datetime, formataddr, getaddresses

from .exceptions import BadRequest

POLICY = email.policy.SMTP.clone(max_line_length=78)
CRLF = b"\r\n"
LOOP_HEADER = "X-Osprey-Loop"          # ingest's autoreply.LOOP_HEADER: mail Osprey sent
MAX_LINE = 998


def canonical(data: bytes) -> bytes:
    """Every line ending CRLF (bare LF → CRLF; CRLF and lone CR kept)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def tag_subject(subject: str, tag: str, ticket_id: int) -> str:
    """The subject with ``[<tag> #N]``: kept where it is if present, else put in front."""
    subject = " ".join((subject or "").split())
    if re.search(rf"\[\s*{re.escape(tag)}\s*#\s*{int(ticket_id)}\s*\]", subject, re.IGNORECASE):
        return subject
    return f"[{tag} #{ticket_id}] {subject}".rstrip()


_PREFIX = re.compile(r"^\s*((re|aw|antw|sv|vs|odp|fwd?|wg|tr|rv|r)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def reply_subject(subject: str, prefix: str = "Re") -> str:
    """"Re: subject" without piling up prefixes (Re: AW: Fwd: ...)."""
    return f"{prefix}: {_PREFIX.sub('', subject or '').strip()}"


def new_send_id() -> str:
    return uuid.uuid4().hex


def message_id(send_id: str, domain: str) -> str:
    return f"<osprey.{send_id}@{domain}>"


def addresses(values, what: str) -> list[str]:
    """Mail addresses from a list (or comma-separated text) of 'Name <a@b>' / 'a@b'."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for _name, addr in getaddresses([str(v) for v in values]):
        addr = addr.strip()
        if not addr:
            continue
        if "@" not in addr or any(c.isspace() for c in addr) or len(addr) > 320:
            raise BadRequest(f"not a mail address in {what}: {addr!r}")
        out.append(addr)
    for v in values:
        if str(v).strip() and not getaddresses([str(v)])[0][1]:
            raise BadRequest(f"not a mail address in {what}: {v!r}")
    return list(dict.fromkeys(out))


def threading_headers(original_raw: bytes | None, original_message_id: str | None) -> dict:
    """In-Reply-To and References for an answer to a mail (RFC 5322 3.6.4)."""
    if not original_message_id:
        return {}
    refs: list[str] = []
    if original_raw:
        head = BytesHeaderParser(policy=email.policy.compat32).parsebytes(original_raw)
        refs = re.findall(r"<[^<>\s]+>", str(head.get("References") or "")) or \
            re.findall(r"<[^<>\s]+>", str(head.get("In-Reply-To") or ""))[:1]
    refs = [r for r in refs if r != original_message_id][-20:] + [original_message_id]
    return {"In-Reply-To": original_message_id, "References": " ".join(refs)}


def _header_bytes(headers: list[tuple[str, str]]) -> bytes:
    out = b""
    for name, value in headers:
        # a header object always folds (and encodes non-ASCII as encoded words)
        out += POLICY.header_factory(name, value).fold(policy=POLICY).encode("ascii")
    return out


def _text_part(body: str) -> MIMEPart:
    part = MIMEPart(policy=POLICY)
    ascii_ok = body.isascii() and all(len(line) <= MAX_LINE for line in body.splitlines())
    part.set_content(body, subtype="plain", charset="utf-8" if not body.isascii() else "us-ascii",
                     cte="7bit" if ascii_ok else "quoted-printable")
    return part


def envelope_headers(*, from_name: str, from_address: str, to: list[str], cc: list[str], subject: str,
                     msg_id: str, date, extra: dict | None = None) -> list[tuple[str, str]]:
    headers = [("From", formataddr((from_name, from_address)) if from_name else from_address)]
    if to:
        headers.append(("To", ", ".join(to)))
    if cc:
        headers.append(("Cc", ", ".join(cc)))
    headers += [("Subject", subject), ("Date", format_datetime(date)), ("Message-ID", msg_id)]
    for name, value in (extra or {}).items():
        if value:
            headers.append((name, value))
    headers.append(("MIME-Version", "1.0"))
    return headers


def text_mail(headers: list[tuple[str, str]], body: str) -> bytes:
    """A single text/plain mail."""
    part = _text_part(body)
    return _header_bytes(headers) + part.as_bytes(policy=POLICY)


def attachment_encoding(raw: bytes) -> str | None:
    """How the original can travel as message/rfc822: "7bit", "8bit", or None when
    it cannot (a line over 998 octets, or a NUL)."""
    lines = raw.split(b"\r\n")
    if any(len(line) > MAX_LINE for line in lines) or b"\0" in raw:
        return None
    return "7bit" if raw.isascii() else "8bit"


def forward_attached(headers: list[tuple[str, str]], body: str, original: bytes,
                     filename: str = "forwarded-message.eml") -> tuple[bytes, bool]:
    """multipart/mixed: the text, then the original as message/rfc822, byte for byte
    (canonical CRLF). Returns (mail, eight_bit)."""
    raw = canonical(original)
    boundary = "=_osprey_" + uuid.uuid4().hex
    while boundary.encode() in raw:
        boundary = "=_osprey_" + uuid.uuid4().hex
    b = boundary.encode()
    cte = attachment_encoding(raw)
    text = _text_part(body).as_bytes(policy=POLICY)
    if cte is not None:
        att_head = _header_bytes([("Content-Type", "message/rfc822"),
                                  ("Content-Disposition", f'attachment; filename="{filename}"'),
                                  ("Content-Transfer-Encoding", cte)])
        att_body = raw
    else:
        import base64
        att_head = _header_bytes([("Content-Type", f'application/octet-stream; name="{filename}"'),
                                  ("Content-Disposition", f'attachment; filename="{filename}"'),
                                  ("Content-Transfer-Encoding", "base64")])
        encoded = base64.encodebytes(original)      # the original bytes themselves, as stored
        att_body = encoded.replace(b"\n", CRLF)
    top = _header_bytes(headers + [("Content-Type", f'multipart/mixed; boundary="{boundary}"')])
    # the CRLF before each delimiter belongs to the delimiter (RFC 2046 5.1.1): the
    # attached part's content ends exactly where the original ends
    mail = (top + CRLF + b"--" + b + CRLF + text + CRLF + b"--" + b + CRLF + att_head + CRLF + att_body
            + CRLF + b"--" + b + b"--" + CRLF)
    return mail, cte == "8bit"


def inline_forward_text(body: str, article: dict) -> str:
    """The forward's text followed by the original's headers and text (quoted)."""
    lines = ["", "---------- Forwarded message ----------"]
    for label, key in (("From", "from"), ("Date", "date"), ("Subject", "subject")):
        if article.get(key):
            lines.append(f"{label}: {article[key]}")
    for label, key in (("To", "to"), ("Cc", "cc")):
        if article.get(key):
            lines.append(f"{label}: {', '.join(article[key])}")
    lines.append("")
    lines.append(article.get("body_text") or "")
    return (body or "").rstrip("\n") + "\n" + "\n".join(lines).rstrip("\n") + "\n"


def extract_attached(mail: bytes) -> bytes:
    """The content of the first message/rfc822 part of a mail made by
    ``forward_attached`` (for tests and the benchmark): the bytes between the part's
    header block and the CRLF of the next delimiter."""
    head, _, _ = mail.partition(b"\r\n\r\n")
    m = re.search(rb'boundary="([^"]+)"', head)
    if not m:
        raise ValueError("not a multipart mail")
    delim = b"\r\n--" + m.group(1)
    for chunk in mail.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        part_head, _, content = chunk[2:].partition(b"\r\n\r\n")
        if b"message/rfc822" in part_head.lower():
            return content
    raise ValueError("no message/rfc822 part")

