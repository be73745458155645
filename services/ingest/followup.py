"""Follow-up detection: which ticket a mail belongs to, in the order tickets
applies them (services/tickets/records.py, ``resolve_ticket``):

1. our subject tag ``[<tag> #N]`` (anywhere in the subject, after any number of
   Re:/AW:/Fwd:/SV:/… prefixes in any language);
2. a Message-ID in In-Reply-To / References (or, for a bounce, the returned mail's)
   that belongs to an article of a ticket;
3. another team's ticket number in the subject (built-in patterns below, plus the
   site's own per-sender patterns: ``load_patterns``), scoped to the sender's domain,
   that an earlier mail of a ticket carried.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

# The YAML file of per-sender external ticket-number patterns (``load_patterns``).
# To become the setting OSPREY_EXTERNAL_REF_PATTERNS (default empty: built-ins only)
# in osprey/config.py; until then the ingest service reads this constant.
EXTERNAL_REF_PATTERNS_FILE = ""

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


def external_refs(subject: str, our_tag: str, sender_address: str = "",
                  patterns: tuple["Pattern", ...] = ()) -> list[dict]:
    """Other teams' ticket numbers in ``subject``: the built-ins, then each of the
    site's ``patterns`` that applies to ``sender_address``."""
    refs = []
    for name, number in _RT_STYLE.findall(subject or ""):
        if name.strip().lower() != our_tag.lower():
            refs.append({"system": f"rt:{name.strip().lower()}", "ref": number})
    for system, rx in EXTERNAL_PATTERNS:
        refs += [{"system": system, "ref": m.group(1).upper()} for m in rx.finditer(subject or "")]
    for pattern in patterns:
        if pattern.applies_to(sender_address):
            refs += [{"system": pattern.system, "ref": m.group(1).strip()}
                     for m in pattern.regex.finditer(subject or "") if (m.group(1) or "").strip()]
    unique = {(r["system"], r["ref"]): r for r in refs}
    return list(unique.values())


# --- the site's own patterns ----------------------------------------------------------

class PatternError(Exception):
    """The patterns file is missing or wrong; the message names the file, entry and key."""


@dataclass(frozen=True)
class Pattern:
    """Another team's ticket number: in the subject of mail from ``sender``, the one
    group of ``regex`` is a number of their system ``system``."""
    sender: str              # "*", a domain (and its subdomains) or one address
    system: str
    regex: re.Pattern

    def applies_to(self, address: str) -> bool:
        if self.sender == "*":
            return True
        address = (address or "").lower()
        if "@" in self.sender:
            return address == self.sender
        domain = sender_domain(address)
        return domain == self.sender or domain.endswith("." + self.sender)


_SYSTEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_SENDER = re.compile(r"^(\*|[^@\s]+@[^@\s]+\.[^@\s]+|[^@\s*]+\.[^@\s*]+)$")
_PATTERN_KEYS = {"sender", "system", "regex", "ignore_case"}


def load_patterns(path: str | Path | None = None) -> tuple[Pattern, ...]:
    r"""The per-sender patterns of the YAML file ``path`` (default:
    OSPREY_EXTERNAL_REF_PATTERNS; empty: none)::

        patterns:
          - sender: cert.example.de          # a domain (and its subdomains), an address, or "*"
            system: certbund                 # stored with the number ("their numbers")
            regex: '\[CB-Report#(\d+)\]'     # exactly one group: the number
            ignore_case: true                # optional, default false

    Every entry is checked, every regex compiled: any mistake raises PatternError
    naming the file, the entry and what is wrong."""
    path = EXTERNAL_REF_PATTERNS_FILE if path is None else path
    if not path:
        return ()
    import yaml

    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PatternError(f"cannot read {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PatternError(f"{path} is not valid YAML: {exc}") from exc
    if doc is None:
        return ()
    if not isinstance(doc, dict) or set(doc) != {"patterns"} or not isinstance(doc["patterns"], list):
        raise PatternError(f"{path}: expected one top-level key `patterns:` holding a list of patterns")
    return tuple(_pattern(entry, f"{path}: pattern {i}") for i, entry in enumerate(doc["patterns"], 1))


def _pattern(entry, where: str) -> Pattern:
    if not isinstance(entry, dict):
        raise PatternError(f"{where}: expected a mapping with sender, system and regex")
    unknown = sorted(set(map(str, entry)) - _PATTERN_KEYS)
    if unknown:
        raise PatternError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_PATTERN_KEYS))})")
    for key in ("sender", "system", "regex"):
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise PatternError(f"{where}: `{key}` must be a non-empty string")
    sender, system, source = entry["sender"].strip().lower(), entry["system"].strip(), entry["regex"]
    where = f"{where} ({system})"
    if not _SENDER.match(sender):
        raise PatternError(f"{where}: `sender` must be a domain (example.org), an address (noc@example.org) "
                           f"or \"*\", not {entry['sender']!r}")
    if not _SYSTEM.match(system):
        raise PatternError(f"{where}: `system` may hold letters, digits, '.', '_', ':', '-' (at most 64), "
                           f"not {system!r}")
    ignore_case = entry.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise PatternError(f"{where}: `ignore_case` must be true or false")
    try:
        regex = re.compile(source, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise PatternError(f"{where}: `regex` {source!r} is not a valid regular expression: {exc}") from exc
    if regex.groups != 1:
        raise PatternError(f"{where}: `regex` {source!r} must have exactly one group (the number), "
                           f"it has {regex.groups}; write other groups as (?:...)")
    if regex.match(""):
        raise PatternError(f"{where}: `regex` {source!r} matches an empty subject; it must match the number only")
    return Pattern(sender=sender, system=system, regex=regex)


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
