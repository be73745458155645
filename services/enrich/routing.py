"""Constituencies and routing: which constituency a set of indicators belongs to.

A constituency has a name, netblocks (IPv4/IPv6 CIDR networks or a-b ranges),
domains, AS numbers and a contact address. ``route`` picks one, by these rules in
this order (the first that matches decides):

1. netblock: an IP address, network or range among the indicators lies inside a
   constituency's netblock; the most specific (smallest) netblock wins, over all
   indicators; on a tie, the indicator that comes first in the text;
2. ASN: the origin AS a lookup found for one of the IP addresses (``networks``)
   is one of a constituency's ASNs; the first such IP in the text;
3. domain: a domain (also a URL's host or an e-mail address's domain) is one of a
   constituency's domains or below it; the longest (most specific) domain wins.
"""
from __future__ import annotations

import ipaddress
import re

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from osprey.contracts import parse_ip_range

from .exceptions import BadRequest, NotFound
from .indicators import IP_TYPES, normalise_domain
from .models import Constituency, ConstituencyAsn, ConstituencyDomain, ConstituencyNetblock

_CONTACT_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _netblock(text: str) -> tuple[str, bytes, bytes]:
    text = str(text).strip()
    r = parse_ip_range(text)
    if r is None:
        raise BadRequest(f"not an IP network or range: {text!r}")
    if "-" in text and "/" not in text:
        low, _, high = text.partition("-")
        norm = f"{ipaddress.ip_address(low.strip())}-{ipaddress.ip_address(high.strip())}"
    else:
        norm = str(ipaddress.ip_network(text, strict=False))
    return norm, r[0], r[1]


def _asn(value) -> int:
    text = str(value).strip().upper()
    text = text[2:] if text.startswith("AS") else text
    if not text.isdigit() or not 0 < int(text) < 2 ** 32:
        raise BadRequest(f"not an AS number: {value!r}")
    return int(text)


def as_dict(c: Constituency) -> dict:
    return {"name": c.name, "contact": c.contact, "netblocks": [n.text for n in c.netblocks],
            "domains": [d.domain for d in c.domains], "asns": [a.asn for a in c.asns], **_routing(c)}


def _routing(c: Constituency) -> dict:
    """queue, language, encryption: present only where set."""
    return {k: v for k, v in (("queue", c.queue), ("language", c.language), ("encryption", c.encryption)) if v}


ENCRYPTION = ("", "none", "pgp", "smime")


def add_constituency(session: Session, name: str, netblocks=(), domains=(), asns=(), contact: str = "",
                     queue: str | None = None, language: str = "", encryption: str = "") -> dict:
    """Validate and store one constituency (the caller commits)."""
    name = str(name or "").strip()
    if not name:
        raise BadRequest("a constituency needs a name")
    contact = str(contact or "").strip()
    if not _CONTACT_RE.fullmatch(contact):
        raise BadRequest(f"not an e-mail address: {contact!r}")
    if isinstance(netblocks, str) or isinstance(domains, str):
        raise BadRequest("netblocks and domains are lists")
    blocks = list(dict.fromkeys(_netblock(n) for n in netblocks or ()))
    names = []
    for d in domains or ():
        norm = normalise_domain(str(d))
        if norm is None or "." not in norm:
            raise BadRequest(f"not a domain: {d!r}")
        names.append(norm)
    numbers = list(dict.fromkeys(_asn(a) for a in asns or ()))
    if session.scalar(select(Constituency).where(Constituency.name == name)) is not None:
        raise BadRequest(f"constituency {name!r} exists")
    if encryption not in ENCRYPTION:
        raise BadRequest(f"encryption is one of {', '.join(e for e in ENCRYPTION if e)}")
    c = Constituency(name=name, contact=contact.lower(), queue=(queue or None), language=str(language or "")[:20],
                     encryption=encryption or "")
    c.netblocks = [ConstituencyNetblock(text=t, low=low, high=high) for t, low, high in blocks]
    c.domains = [ConstituencyDomain(domain=d) for d in dict.fromkeys(names)]
    c.asns = [ConstituencyAsn(asn=a) for a in numbers]
    session.add(c)
    session.flush()
    return as_dict(c)


def list_constituencies(session: Session) -> list[dict]:
    rows = session.scalars(select(Constituency).order_by(Constituency.name).options(
        selectinload(Constituency.netblocks), selectinload(Constituency.domains), selectinload(Constituency.asns)))
    return [as_dict(c) for c in rows]


def delete_constituency(session: Session, name: str) -> dict:
    c = session.scalar(select(Constituency).where(Constituency.name == str(name).strip()))
    if c is None:
        raise NotFound(f"no constituency {name!r}")
    gone = as_dict(c)
    session.delete(c)
    session.flush()
    return gone


def route(session: Session, indicators: list[dict], networks: dict[str, dict] | None = None) -> dict | None:
    """The constituency the indicators belong to (module docstring), as
    ``{"name", "contact", "matched": {"by", "value", "indicator"}}``, or None."""
    best = None  # (size, position, constituency, netblock text, indicator value)
    for pos, ind in enumerate(indicators):
        if ind.get("type") not in IP_TYPES:
            continue
        r = parse_ip_range(ind["value"])
        if r is None:
            continue
        for nb in session.scalars(select(ConstituencyNetblock).where(
                ConstituencyNetblock.low <= r[0], ConstituencyNetblock.high >= r[1])):
            size = int.from_bytes(nb.high, "big") - int.from_bytes(nb.low, "big")
            if best is None or (size, pos) < best[:2]:
                best = (size, pos, nb.constituency, nb.text, ind["value"])
    if best is not None:
        return _match(best[2], "netblock", best[3], best[4])
    for ind in indicators:
        lookup = (networks or {}).get(ind.get("value")) if ind.get("type") in ("ipv4", "ipv6") else None
        asn = (lookup or {}).get("asn")
        if asn is None:
            continue
        row = session.scalar(select(ConstituencyAsn).where(ConstituencyAsn.asn == int(asn))
                             .order_by(ConstituencyAsn.id))
        if row is not None:
            return _match(row.constituency, "asn", f"AS{asn}", ind["value"])
    best_domain = None  # (labels, constituency, domain, indicator value)
    for ind in indicators:
        host = ind["value"] if ind.get("type") == "domain" else None
        if host is None:
            continue
        labels = host.split(".")
        suffixes = [".".join(labels[i:]) for i in range(len(labels) - 1)]
        for row in session.scalars(select(ConstituencyDomain).where(ConstituencyDomain.domain.in_(suffixes))):
            depth = row.domain.count(".")
            if best_domain is None or depth > best_domain[0]:
                best_domain = (depth, row.constituency, row.domain, host)
    if best_domain is not None:
        return _match(best_domain[1], "domain", best_domain[2], best_domain[3])
    return None


def _match(c: Constituency, by: str, value: str, indicator: str) -> dict:
    return {"name": c.name, "contact": c.contact, **_routing(c),
            "matched": {"by": by, "value": value, "indicator": indicator}}
