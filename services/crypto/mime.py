"""MIME on the exact bytes.

A signature covers bytes, so the signed part of a multipart/signed must be handed to
gpg/openssl exactly as it arrived: the stdlib's parser re-folds headers and cannot
give that back. ``parse`` splits a mail into entities that keep their raw bytes; the
rules (where the header ends, what a boundary line is, when a multipart has no
parts) follow the stdlib's feedparser, which is what ingest displays with, so both
see the same tree. Header values are still read by the stdlib (``email.message``).
"""
from __future__ import annotations

import base64
import binascii
import quopri
import re
import secrets
from dataclasses import dataclass, field
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value

MAX_DEPTH = 48          # multipart nesting followed; deeper is one opaque leaf

_HEADER_LINE = re.compile(rb"^(From |[\041-\071\073-\176]*:|[\t ])")
_PARSER = BytesParser(policy=policy.compat32)


@dataclass
class Entity:
    """One MIME entity: ``buf[start:end]``, its header up to ``body_start``. The
    offsets point into one shared buffer, so a deeply nested mail is not copied once
    per level; ``raw``, ``header`` and ``body`` are slices made when asked for."""
    buf: bytes
    start: int
    header_end: int                 # header lines end here; a blank line may follow
    body_start: int
    end: int
    msg: Message                    # the header, parsed (compat32)
    children: list["Entity"] | None = None
    defects: list[str] = field(default_factory=list)

    @property
    def raw(self) -> bytes:
        """The whole entity, exactly as it arrived."""
        return self.buf[self.start:self.end]

    @property
    def header(self) -> bytes:
        """Its header lines (with their line breaks), without the blank line."""
        return self.buf[self.start:self.header_end]

    @property
    def body(self) -> bytes:
        return self.buf[self.body_start:self.end]

    # --- header values ---------------------------------------------------------------
    @property
    def content_type(self) -> str:
        try:
            return self.msg.get_content_type()
        except Exception:
            return "text/plain"

    @property
    def maintype(self) -> str:
        return self.content_type.split("/")[0]

    def param(self, name: str) -> str | None:
        try:
            value = self.msg.get_param(name)
        except Exception:
            return None
        if value is None or value is True:
            return None
        if isinstance(value, tuple):
            value = collapse_rfc2231_value(value)
        return str(value)

    @property
    def cte(self) -> str:
        return str(self.msg.get("Content-Transfer-Encoding", "7bit")).strip().lower()

    @property
    def disposition(self) -> str | None:
        try:
            return self.msg.get_content_disposition()
        except Exception:
            return None

    @property
    def filename(self) -> str | None:
        try:
            name = self.msg.get_filename()
        except Exception:
            return None
        return None if name is None else decode_words(str(name))

    @property
    def is_attachment(self) -> bool:
        """ingest's rule: an attachment when it says so or has a name and is not inline."""
        d = self.disposition
        return d == "attachment" or (self.filename is not None and d != "inline")

    @property
    def charset(self) -> str | None:
        value = self.param("charset")
        return value.strip().lower() if value else None

    def decoded(self) -> bytes:
        return decode_body(self.body, self.cte)

    @property
    def is_multipart(self) -> bool:
        return self.children is not None

    def newline(self) -> bytes:
        return b"\r\n" if b"\r\n" in self.header[:2000] else b"\n"


def decode_words(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def decode_body(body: bytes, cte: str) -> bytes:
    if cte == "base64":
        try:   # non-strict: characters outside the alphabet (line breaks) are skipped, in C
            return base64.b64decode(body)
        except (binascii.Error, ValueError):
            pass
        data = re.sub(rb"[^A-Za-z0-9+/]", b"", body)
        data = data[: len(data) - len(data) % 4] if len(data) % 4 == 1 else data
        try:
            return base64.b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            return body
    if cte == "quoted-printable":
        return quopri.decodestring(body)
    return body


_DELIM_TAIL = re.compile(rb"(--)?[ \t]*\r?(?=\n|\Z)")
_NOT_HEADER = re.compile(rb"(?m)^(?!From |[\041-\071\073-\176]*:|[\t ])")


def split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header lines, body) of bytes that start with a header."""
    ent = parse(raw, split=False)
    return ent.header, ent.body


def _body_start(buf: bytes, start: int, end: int) -> tuple[int, int]:
    """(end of the header lines, start of the body): the body begins after the
    first blank line, or at the first line that cannot be a header line (nothing
    skipped then) — the stdlib's rule."""
    m = _NOT_HEADER.search(buf, start, end)
    if m is None:
        return end, end
    pos = m.start()
    if buf.startswith(b"\r\n", pos, end):
        return pos, pos + 2
    if buf.startswith(b"\n", pos, end) or buf.startswith(b"\r", pos, end):
        return pos, pos + 1
    return pos, pos


def parse(raw: bytes, depth: int = 0, split: bool = True) -> Entity:
    return _parse(raw, 0, len(raw), depth if split else MAX_DEPTH)


def _parse(buf: bytes, start: int, end: int, depth: int) -> Entity:
    header_end, body_start = _body_start(buf, start, end)
    try:
        msg = _PARSER.parsebytes(buf[start:header_end] + b"\n", headersonly=True)
    except Exception:
        msg = Message()
    ent = Entity(buf, start, header_end, body_start, end, msg)
    if ent.maintype == "multipart" and depth < MAX_DEPTH:
        boundary = ent.param("boundary")
        if boundary:
            _split(ent, boundary.encode("utf-8", "surrogateescape"), depth)
    return ent


def _split(ent: Entity, boundary: bytes, depth: int) -> None:
    """Children between delimiter lines, as the stdlib's feedparser finds them: a run
    of delimiter lines one after the other starts a single part (no empty parts in
    between, a close delimiter inside the run included); a close delimiter before
    any part leaves the multipart without parts, i.e. one leaf."""
    buf, lo, hi = ent.buf, ent.body_start, ent.end
    needle = b"--" + boundary
    marks: list[tuple[int, int, bool]] = []   # (line start, start of the next line, close?)
    pos = lo
    while True:   # bytes.find, then the rest of the line: far faster than a (?m)^ regex
        i = buf.find(needle, pos, hi)
        if i < 0:
            break
        pos = i + len(needle)
        if i != lo and buf[i - 1] != 0x0A:
            continue
        m = _DELIM_TAIL.match(buf, pos, hi)
        if m is None:
            continue
        nl = buf.find(b"\n", m.end(), hi)
        marks.append((i, hi if nl < 0 else nl + 1, bool(m.group(1))))
    if not marks or marks[0][2]:
        return  # no part: the stdlib keeps the body as one string (a leaf)
    digest = ent.content_type == "multipart/digest"
    children = []
    i = 0
    while i < len(marks):
        if marks[i][2]:
            break                               # close delimiter: the epilogue follows
        j = i
        while j + 1 < len(marks) and marks[j + 1][0] == marks[j][1]:
            j += 1                              # consecutive delimiter lines
        part_start = marks[j][1]
        if j + 1 < len(marks):
            part_end = max(part_start, _strip_nl(buf, marks[j + 1][0], part_start))
        else:
            part_end = hi
            ent.defects.append("no close delimiter")
        child = _parse(buf, part_start, part_end, depth + 1)
        if digest:   # a digest's parts are mails unless they say otherwise (RFC 2046 5.1.5)
            child.msg.set_default_type("message/rfc822")
        children.append(child)
        i = j + 1
    ent.children = children


def _strip_nl(buf: bytes, pos: int, floor: int) -> int:
    """The line break before a delimiter belongs to the delimiter (RFC 2046)."""
    if pos - 2 >= floor and buf[pos - 2:pos] == b"\r\n":
        return pos - 2
    if pos - 1 >= floor and buf[pos - 1:pos] in (b"\n", b"\r"):
        return pos - 1
    return pos


def canonical(data: bytes) -> bytes:
    """CRLF line ends (what a signature over a MIME entity is made on)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def leaves(ent: Entity, prefix: str = ""):
    """(number, entity) of every leaf, numbered as ingest numbers them."""
    if ent.children is not None:
        for i, child in enumerate(ent.children, start=1):
            yield from leaves(child, f"{prefix}{i}." if prefix else f"{i}.")
        return
    yield (prefix[:-1] if prefix else "1"), ent


# --- writing -------------------------------------------------------------------------

def new_boundary() -> str:
    return "=_osprey_" + secrets.token_hex(16)


def header_lines(pairs: list[tuple[str, str]], nl: bytes = b"\r\n") -> bytes:
    return b"".join(f"{k}: {v}".encode("utf-8") + nl for k, v in pairs)


def encode_base64(data: bytes, nl: bytes = b"\r\n") -> bytes:
    enc = base64.b64encode(data)
    return nl.join(enc[i:i + 76] for i in range(0, len(enc), 76)) + nl


def encode_qp(data: bytes, nl: bytes = b"\r\n") -> bytes:
    text = re.sub(rb"\r\n|\r", b"\n", data)
    out = quopri.encodestring(text)
    # quopri leaves a lone "." and "From " alone, which some transports mangle
    out = re.sub(rb"(?m)^From ", b"=46rom ", out)
    return out.replace(b"\n", nl)


def quote_param(value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{value}"'


def replace_header(header: bytes, name: str, value: str | None, nl: bytes = b"\r\n") -> bytes:
    """``header`` without any ``name`` field (folded lines included), plus
    ``name: value`` when a value is given."""
    out, skip = [], False
    lname = name.lower().encode()
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skip:
                out.append(line)
            continue
        skip = line.split(b":", 1)[0].strip().lower() == lname
        if not skip:
            out.append(line)
    if value is not None:
        out.append(f"{name}: {value}".encode("utf-8") + nl)
    return b"".join(out)


def filter_header(header: bytes, keep) -> bytes:
    """The header fields for which ``keep(lower-case name)`` is true (folded lines kept)."""
    out, skip = [], False
    for line in header.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):
            if not skip:
                out.append(line)
            continue
        name = line.split(b":", 1)[0].strip().lower().decode("latin-1")
        skip = not keep(name)
        if not skip:
            out.append(line)
    return b"".join(out)


def is_content_header(name: str) -> bool:
    return name.startswith("content-") or name == "mime-version"
