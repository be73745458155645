"""Message contracts: every name and payload that crosses the bus, defined once.

Services import this module, never each other. Payloads are JSON-safe dicts that
carry a ``schema`` version; consumers ignore fields they do not know. Binary data
crosses RPC base64-encoded (``b64``/``unb64``); raw mail crosses the intake queue
as the exact bytes.
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from typing import Iterable

SCHEMA = 1

# --- services (nameko names) -------------------------------------------------
INGEST = "ingest"
TICKETS = "tickets"
CRYPTO = "crypto"
ENRICH = "enrich"
NOTIFY = "notify"
SERVICES = (INGEST, TICKETS, CRYPTO, ENRICH, NOTIFY)

# --- the intake queue ----------------------------------------------------------
# osprey-mailgate (and later LMTP / IMAP intake) publish each raw mail here as one
# persistent message: body = the exact bytes, content type below, metadata in headers.
INTAKE_QUEUE = "osprey.intake"
INTAKE_CONTENT_TYPE = "application/data"
INTAKE_CONTENT_ENCODING = "binary"
# AMQP header names (all strings)
H_QUEUE = "x-osprey-queue"          # target queue name, e.g. "general"
H_ACTION = "x-osprey-action"        # "correspond" or "comment"
H_SOURCE = "x-osprey-source"        # "mailgate", "lmtp", "imap:<account>"
H_SHA256 = "x-osprey-sha256"        # sha256 hex of the body, computed by the sender
H_RECEIVED = "x-osprey-received"    # ISO 8601 UTC time the sender read the mail
H_TICKET = "x-osprey-ticket"        # optional: the ticket number the envelope names (--ticket/--extension)
H_ENVELOPE = "x-osprey-envelope"    # optional: JSON object, the delivery's envelope (MAIL FROM, RCPT TO, peer, mailbox/UID)

ACTIONS = ("correspond", "comment")

# --- intake outcomes (the ledger's status; GET /intake/{sha256}) ---------------
INTAKE_RECEIVED = "received"         # stored durably, not yet processed
INTAKE_DELIVERED = "delivered"       # became an article of a ticket
INTAKE_QUARANTINED = "quarantined"   # stored, not processed; reason given
INTAKE_STATES = (INTAKE_RECEIVED, INTAKE_DELIVERED, INTAKE_QUARANTINED)

# --- events (past-tense facts, published by tickets' outbox relay) -------------
EV_TICKET_CREATED = "ticket_created"
EV_ARTICLE_ADDED = "article_added"
EV_TICKET_UPDATED = "ticket_updated"          # fields, owner, priority, people, queue (changes listed)
EV_TICKET_STATE_CHANGED = "ticket_state_changed"
EV_TICKET_CLOSED = "ticket_closed"            # entered a closed state, with its outcome
EV_TICKET_MERGED = "ticket_merged"
EV_TICKET_SPLIT = "ticket_split"
EV_SLA_BREACHED = "sla_breached"
EV_REMINDER_DUE = "reminder_due"
EV_INDICATOR_FOUND = "indicator_found"        # enrich found indicators in an article (tickets records them)
# published by notify (exchange notify.events): a mail was refused for good by the relay
# (payload: ticket_id, outbox_id, message_id, action, recipients, reasons {address: reason}, final)
EV_MAIL_FAILED = "mail_failed"


def intake_id(sha256: str, queue: str, action: str) -> str:
    """The idempotency key of one delivery: the same bytes for the same queue and
    action are the same delivery, however often the MTA or broker repeats it."""
    return hashlib.sha256(f"{sha256}\0{queue}\0{action}".encode()).hexdigest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


# --- field types: IP addresses and networks ------------------------------------
# One normal form for every IP that is stored, indexed or compared: a 16-byte key,
# IPv4 mapped into ::ffff:0:0/96, so that byte order is address order for both
# families and a network is the closed key range [first, last].

_V4_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def ip_key(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if addr.version == 4:
        return ipaddress.IPv6Address(int(_V4_MAPPED.network_address) + int(addr)).packed
    return addr.packed


def key_to_ip(key: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    addr = ipaddress.IPv6Address(key)
    return addr.ipv4_mapped or addr


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    """An address, CIDR network or ``a-b`` range given by a person, as a network
    (for a range: the smallest network covering it is not right, so ranges return
    None here and are handled by ``parse_ip_range``)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        return None


_SHORT_V4_CIDR = re.compile(r"^(\d{1,3}(?:\.\d{1,3}){0,2})/(\d{1,2})$")


def parse_ip_range(text: str) -> tuple[bytes, bytes] | None:
    """``192.0.2.7``, ``192.0.2.0/24``, the short forms ``10/8`` and ``192.0.2/24`` (as
    whois and people write them), ``2001:db8::/32`` or ``192.0.2.1-192.0.2.9``
    → the closed key range it covers; None when the text is no IP expression."""
    text = text.strip()
    short = _SHORT_V4_CIDR.match(text)
    if short:
        octets = short.group(1).split(".")
        text = ".".join(octets + ["0"] * (4 - len(octets))) + "/" + short.group(2)
    if "-" in text and "/" not in text:
        low, _, high = text.partition("-")
        try:
            a, b = ipaddress.ip_address(low.strip()), ipaddress.ip_address(high.strip())
        except ValueError:
            return None
        if a.version != b.version or a > b:
            return None
        return ip_key(a), ip_key(b)
    net = parse_network(text)
    if net is None:
        return None
    return ip_key(net.network_address), ip_key(net.broadcast_address)


def format_ip_range(low: bytes, high: bytes) -> str:
    """The normal form of a key range: one address, one CIDR network, or ``a-b``."""
    a, b = key_to_ip(low), key_to_ip(high)
    if a == b:
        return str(a)
    nets = list(ipaddress.summarize_address_range(a, b))
    return str(nets[0]) if len(nets) == 1 else f"{a}-{b}"


# Candidates only; each is validated by ipaddress before it counts.
_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.]*\d)")
_IPV6_RE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:]|\.\d)")


def find_ips(text: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every valid IPv4/IPv6 address written in ``text``, in order, without repeats."""
    found: list[tuple[int, ipaddress.IPv4Address | ipaddress.IPv6Address]] = []
    for rx in (_IPV4_RE, _IPV6_RE):
        for m in rx.finditer(text):
            candidate = m.group(0)
            if ":" in candidate and not candidate.strip(":"):
                continue  # a bare "::" in prose or code is no address
            try:
                found.append((m.start(), ipaddress.ip_address(candidate)))
            except ValueError:
                continue
    seen: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}
    for _pos, addr in sorted(found, key=lambda item: item[0]):
        seen.setdefault(str(addr), addr)
    return list(seen.values())


def unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
