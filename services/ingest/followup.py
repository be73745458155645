"""Follow-up detection: which ticket a mail belongs to, in the order tickets
applies them (services/tickets/records.py, ``resolve_ticket``):

1. our subject tag ``[<tag> #N]`` (anywhere in the subject, after any number of
   Re:/AW:/Fwd:/SV:/… prefixes in any language);
2. a Message-ID in In-Reply-To / References (or, for a bounce, the returned mail's)
   that belongs to an article of a ticket;
3. another team's ticket number in the subject (built-in patterns below), scoped to
   the sender's domain, that an earlier mail of a ticket carried.
"""
from __future__ import annotations

import hashlib
import re

# (system, pattern): group 1 is the number. Order matters only for display.
EXTERNAL_PATTERNS: tuple[tuple[str, re.Pattern], ...] = (
    ("otrs", re.compile(r"\[?\bTicket#\s*:?\s*(\d{4,})\]?", re.IGNORECASE)),      # OTRS, Znuny, Zammad
    ("servicenow", re.compile(r"\b((?:INC|RITM|REQ|CHG|PRB|SIR)\d{7,})\b")),
)
# RT and friends: "[name #123]" with any name that is not our own tag
_RT_STYLE = re.compile(r"\[\s*([A-Za-z0-9][\w .-]{0,60}?)\s+#\s*(\d+)\s*\]")


def ticket_tag(subject: str, tag: str) -> int | None:
    m = re.search(r"\[\s*" + re.escape(tag) + r"\s*#\s*(\d+)\s*\]", subject or "", re.IGNORECASE)
    return int(m.group(1)) if m else None


def external_refs(subject: str, our_tag: str) -> list[dict]:
    refs = []
    for name, number in _RT_STYLE.findall(subject or ""):
        if name.strip().lower() != our_tag.lower():
            refs.append({"system": f"rt:{name.strip().lower()}", "ref": number})
    for system, rx in EXTERNAL_PATTERNS:
        refs += [{"system": system, "ref": m.group(1).upper()} for m in rx.finditer(subject or "")]
    unique = {(r["system"], r["ref"]): r for r in refs}
    return list(unique.values())


def referenced_ids(in_reply_to: str | None, references: list[str], bounce_of: str | None) -> list[str]:
    ids = re.findall(r"<[^<>\s]+>", " ".join([in_reply_to or "", *references, bounce_of or ""]))
    return list(dict.fromkeys(reversed(ids)))   # the nearest ancestor first


def content_hash(subject: str, body_text: str, body_html: str | None, attachment_hashes: list[str]) -> str:
    """Same content, however it was delivered (two aliases add different Received /
    Delivered-To headers): used with the Message-ID to recognise one mail twice."""
    h = hashlib.sha256()
    for piece in (subject or "", body_text or "", body_html or "", *attachment_hashes):
        h.update(piece.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def sender_domain(address: str) -> str:
    return address.rpartition("@")[2].lower() if "@" in (address or "") else ""
