"""Who holds a public IP address and where to report abuse: RDAP first, whois
(port 43) as the fallback and to complete what RDAP left out, a cache with a TTL in
the service's own database.

The path of one lookup (``Lookups.lookup``):
  1. the IANA bootstrap data (data/ipv4.json, data/ipv6.json) names the registry
     whose RDAP server holds the address; GET <base>ip/<address>;
  2. when RDAP fails, or its answer lacks the abuse contact, the ASN or the country,
     whois: ask whois.iana.org, follow its ``refer:`` (and an ARIN ``ReferralServer``),
     parse the RIR's answer;
  3. one result dict (``RESULT_KEYS``) with what was found, where from, and the
     reasons of whatever failed: a lookup never raises for a network problem.

Every registry (per protocol) has its own token bucket and backoff: a 429 (with its
Retry-After) or a timeout blocks that registry for a while, and a lookup that would
have to wait longer than ``max_wait`` gives up with the reason instead of waiting.
Each request has a timeout and each lookup a deadline. Base URLs and whois hosts are
constructor arguments, so tests point them at local servers.

``ipwhois`` was considered and not used: its whois client connects to port 43 of
fixed host names, its RDAP path starts with a Team Cymru ASN query and ARIN's
redirecting bootstrap, and it has no per-registry rate limit.
"""
from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import httpx
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from osprey.contracts import SCHEMA

from .indicators import ip_class
from .models import IpLookup, utcnow

# --- settings (module constants; constructor arguments override them) ---------------
RDAP_TIMEOUT = 5.0            # seconds per RDAP request (connect, each read)
WHOIS_TIMEOUT = 5.0           # seconds per whois connection (connect, each read)
LOOKUP_DEADLINE = 15.0        # seconds one lookup may take in all
CACHE_TTL = 7 * 24 * 3600.0   # seconds an answer stays in the cache
ERROR_TTL = 600.0             # seconds a failed lookup stays in the cache
RATE = 2.0                    # requests per second to one registry (per protocol)
BURST = 4                     # requests that may go at once before the rate applies
BACKOFF_BASE = 2.0            # first backoff after a timeout or a 429 without Retry-After
BACKOFF_MAX = 300.0           # longest backoff
MAX_WAIT = 2.0                # longest a lookup waits for a registry's rate limit or backoff
MAX_BYTES = 2 * 1024 * 1024   # largest RDAP or whois answer read
IANA_WHOIS = "whois.iana.org"
IANA_BOOTSTRAP_URL = "https://data.iana.org/rdap/"
BOOTSTRAP_DIR = Path(__file__).parent / "data"
BOOTSTRAP_FILES = ("ipv4.json", "ipv6.json", "asn.json")
USER_AGENT = "Osprey-enrich/1"

# the five RIRs: how their RDAP base URLs and whois hosts are recognised
REGISTRIES = {
    "afrinic": ("rdap.afrinic.net", "whois.afrinic.net"),
    "apnic": ("rdap.apnic.net", "whois.apnic.net"),
    "arin": ("rdap.arin.net", "whois.arin.net"),
    "lacnic": ("rdap.lacnic.net", "whois.lacnic.net"),
    "ripe": ("rdap.db.ripe.net", "whois.ripe.net"),
}

RESULT_KEYS = ("schema", "ip", "status", "class", "registry", "source", "name", "handle", "start", "end", "cidr",
               "asn", "country", "abuse_contact", "abuse_emails", "abuse_source", "errors", "cached",
               "fetched_at", "expires_at")
_EMAIL_RE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class LookupFailed(Exception):
    """One source could not answer; the message is the reason shown in the result."""


def registry_of(host_or_url: str) -> str:
    host = urlsplit(host_or_url).hostname if "://" in host_or_url else host_or_url
    host = (host or "").lower()
    for name, (rdap_host, whois_host) in REGISTRIES.items():
        if host in (rdap_host, whois_host):
            return name
    return host


# --- IANA bootstrap -----------------------------------------------------------------

class Bootstrap:
    """The IANA RDAP bootstrap registries (RFC 9224): address blocks and AS number
    ranges → RDAP base URLs. Longest prefix wins."""

    def __init__(self, ipv4: dict | None, ipv6: dict | None, asn: dict | None):
        self.networks: list[tuple[ipaddress._BaseNetwork, list[str]]] = []
        for doc in (ipv4, ipv6):
            for prefixes, urls in (doc or {}).get("services", []):
                for prefix in prefixes:
                    self.networks.append((ipaddress.ip_network(prefix), list(urls)))
        self.networks.sort(key=lambda item: -item[0].prefixlen)
        self.asns: list[tuple[int, int, list[str]]] = []
        for ranges, urls in (asn or {}).get("services", []):
            for r in ranges:
                low, _, high = str(r).partition("-")
                self.asns.append((int(low), int(high or low), list(urls)))

    @classmethod
    def load(cls, folder: Path | str = BOOTSTRAP_DIR) -> "Bootstrap":
        folder = Path(folder)
        docs = []
        for name in BOOTSTRAP_FILES:
            path = folder / name
            docs.append(json.loads(path.read_text()) if path.exists() else None)
        return cls(*docs)

    @staticmethod
    def _pick(urls: list[str]) -> str:
        return next((u for u in urls if u.startswith("https://")), urls[0])

    def rdap_base(self, addr) -> str | None:
        for net, urls in self.networks:
            if net.version == addr.version and addr in net:
                return self._pick(urls)
        return None

    def rdap_base_asn(self, asn: int) -> str | None:
        for low, high, urls in self.asns:
            if low <= asn <= high:
                return self._pick(urls)
        return None


def update_bootstrap(folder: Path | str = BOOTSTRAP_DIR, base_url: str = IANA_BOOTSTRAP_URL,
                     timeout: float = 30.0) -> dict:
    """Fetch ipv4.json, ipv6.json and asn.json from IANA (``osprey enrich
    update-bootstrap``), check each is a bootstrap file, replace the local copies
    atomically. Returns {file: number of entries}."""
    folder = Path(folder)
    fetched = {}
    with httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT}, follow_redirects=True) as client:
        for name in BOOTSTRAP_FILES:
            r = client.get(base_url.rstrip("/") + "/" + name)
            r.raise_for_status()
            doc = r.json()
            if not isinstance(doc.get("services"), list) or not doc["services"]:
                raise ValueError(f"{name} from {base_url} is no RDAP bootstrap file")
            Bootstrap(doc if name != "asn.json" else None, None, doc if name == "asn.json" else None)
            fetched[name] = doc
    counts = {}
    for name, doc in fetched.items():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        os.replace(tmp, folder / name)
        counts[name] = len(doc["services"])
    return counts


# --- rate limits and backoff ----------------------------------------------------------

@dataclass
class _Bucket:
    tokens: float
    last: float
    blocked_until: float = 0.0
    failures: int = 0


class Gate:
    """A token bucket and a backoff per registry key ("rdap:ripe", "whois:arin")."""

    def __init__(self, rate: float = RATE, burst: int = BURST, backoff_base: float = BACKOFF_BASE,
                 backoff_max: float = BACKOFF_MAX, max_wait: float = MAX_WAIT,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.rate, self.burst = rate, burst
        self.backoff_base, self.backoff_max, self.max_wait = backoff_base, backoff_max, max_wait
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str, now: float) -> _Bucket:
        if key not in self._buckets:
            self._buckets[key] = _Bucket(tokens=float(self.burst), last=now)
        return self._buckets[key]

    def acquire(self, key: str, deadline: float) -> None:
        """Wait for the turn of one request to ``key``; LookupFailed when that turn
        is further away than ``max_wait`` or the deadline."""
        with self._lock:
            now = self.clock()
            b = self._bucket(key, now)
            b.tokens = min(float(self.burst), b.tokens + (now - b.last) * self.rate)
            b.last = now
            blocked = max(0.0, b.blocked_until - now)
            wait = max(blocked, 0.0 if b.tokens >= 1 else (1 - b.tokens) / self.rate)
            if wait > self.max_wait or now + wait > deadline:
                if blocked:
                    raise LookupFailed(f"{key}: backing off for {blocked:.1f}s more")
                raise LookupFailed(f"{key}: rate limit (next request in {wait:.1f}s)")
            b.tokens -= 1
        if wait > 0:
            self.sleep(wait)

    def penalise(self, key: str, retry_after: float | None = None) -> float:
        """After a 429 or a timeout: block ``key`` for Retry-After, else for an
        exponentially growing time. Returns the delay."""
        with self._lock:
            now = self.clock()
            b = self._bucket(key, now)
            b.failures += 1
            delay = retry_after if retry_after is not None else self.backoff_base * 2 ** (b.failures - 1)
            delay = min(self.backoff_max, max(0.0, delay))
            b.blocked_until = max(b.blocked_until, now + delay)
            return delay

    def success(self, key: str) -> None:
        with self._lock:
            b = self._buckets.get(key)
            if b is not None:
                b.failures = 0


# --- parsing helpers ------------------------------------------------------------------

def _clean_address(text: str):
    """An address as registries write it: "074.125.000.000", "62.239.237.0/32",
    "2001:4860:0000::"; None when it is none."""
    text = str(text or "").strip()
    if text.endswith(("/32", "/128")):
        text = text.rsplit("/", 1)[0]
    if "." in text and ":" not in text:
        parts = text.split(".")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            text = ".".join(str(int(p)) for p in parts)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _parse_cidr(text: str):
    """A CIDR, also LACNIC's short form "200.57.128/19"."""
    text = text.strip()
    net_text, _, length = text.partition("/")
    if "." in net_text and ":" not in net_text and net_text.count(".") < 3:
        net_text = net_text + ".0" * (3 - net_text.count("."))
    try:
        return ipaddress.ip_network(f"{net_text}/{length}" if length else net_text, strict=False)
    except ValueError:
        return None


def _range_of(text: str):
    """"a - b" or a CIDR (first of a comma list) → (first, last) addresses."""
    text = (text or "").strip()
    if " - " in text or re.fullmatch(r"[0-9a-fA-F.:]+-[0-9a-fA-F.:]+", text):
        low, _, high = text.replace(" - ", "-").partition("-")
        a, b = _clean_address(low), _clean_address(high)
        if a is not None and b is not None and a.version == b.version:
            return a, b
        return None
    net = _parse_cidr(text.split(",")[0])
    if net is None:
        return None
    return net.network_address, net.broadcast_address


def _cidrs(first, last) -> list[str]:
    if first is None or last is None or first.version != last.version or first > last:
        return []
    return [str(n) for n in ipaddress.summarize_address_range(first, last)]


def _asn(text) -> int | None:
    m = re.search(r"(?:AS)?(\d{1,10})\b", str(text or ""), re.IGNORECASE)
    if not m or str(text).strip().upper() in ("N/A", "NA"):
        return None
    value = int(m.group(1))
    return value if 0 < value < 2 ** 32 else None


def _unique_lower(emails) -> list[str]:
    return list(dict.fromkeys(e.strip().lower() for e in emails if e and e.strip()))


def _remark_abuse(lines) -> list[str]:
    """E-mail addresses on remark lines that speak of abuse."""
    found = []
    for line in lines:
        if "abuse" in line.lower():
            found += _EMAIL_RE.findall(line)
    return _unique_lower(found)


# --- RDAP -----------------------------------------------------------------------------

def _vcard_emails(entity: dict) -> list[str]:
    card = entity.get("vcardArray")
    if not isinstance(card, list) or len(card) < 2 or not isinstance(card[1], list):
        return []
    return [item[3] for item in card[1] if isinstance(item, list) and len(item) >= 4 and item[0] == "email"
            and isinstance(item[3], str)]


def _abuse_entities(entities) -> list[dict]:
    """Entities with the role "abuse", breadth first (the network's own before the
    nested ones of its registrant)."""
    found, level = [], list(entities or [])
    while level:
        found += [e for e in level if isinstance(e, dict) and "abuse" in (e.get("roles") or [])]
        level = [child for e in level if isinstance(e, dict) for child in (e.get("entities") or [])]
    return found


def parse_rdap(doc: dict) -> dict:
    """The fields of one RDAP ip network answer (RFC 9083)."""
    first, last = _clean_address(doc.get("startAddress")), _clean_address(doc.get("endAddress"))
    cidr = [f"{c['v4prefix']}/{c['length']}" if "v4prefix" in c else f"{c['v6prefix']}/{c['length']}"
            for c in doc.get("cidr0_cidrs") or [] if isinstance(c, dict) and "length" in c]
    asns = doc.get("arin_originas0_originautnums") or doc.get("originAutnums") or []
    abuse_emails, abuse_source = [], None
    for entity in _abuse_entities(doc.get("entities")):
        abuse_emails = _unique_lower(_vcard_emails(entity))
        if abuse_emails:
            abuse_source = "rdap:abuse-entity"
            break
    if not abuse_emails:
        lines = [line for remark in doc.get("remarks") or [] for line in remark.get("description") or []]
        abuse_emails = _remark_abuse(lines)
        abuse_source = "rdap:remarks" if abuse_emails else None
    return {"name": doc.get("name"), "handle": doc.get("handle"),
            "start": str(first) if first else None, "end": str(last) if last else None,
            "cidr": cidr or _cidrs(first, last), "asn": _asn(asns[0]) if asns else None,
            "country": (doc.get("country") or None), "abuse_contact": abuse_emails[0] if abuse_emails else None,
            "abuse_emails": abuse_emails, "abuse_source": abuse_source}


# --- whois ----------------------------------------------------------------------------

@dataclass
class RpslObject:
    attrs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.attrs[0][0] if self.attrs else ""

    def get(self, *keys: str) -> str | None:
        for k in keys:
            for key, value in self.attrs:
                if key == k.lower() and value.strip():
                    return value.strip()
        return None

    def all(self, *keys: str) -> list[str]:
        wanted = {k.lower() for k in keys}
        return [v.strip() for k, v in self.attrs if k in wanted and v.strip()]


def split_objects(text: str) -> list[RpslObject]:
    """Blank-line separated blocks of ``key: value`` lines (RPSL and ARIN's format);
    comment lines (%, #) end nothing and are skipped; keys lower-cased."""
    objects, current = [], RpslObject()
    for line in text.splitlines():
        if not line.strip():
            if current.attrs:
                objects.append(current)
                current = RpslObject()
            continue
        if line.startswith(("%", "#")):
            continue
        if line[0] in " \t+" and current.attrs:
            key, value = current.attrs[-1]
            current.attrs[-1] = (key, f"{value} {line.lstrip(' +').strip()}".strip())
            continue
        m = re.match(r"([A-Za-z][A-Za-z0-9_-]*):\s?(.*)$", line)
        if m:
            current.attrs.append((m.group(1).lower(), m.group(2).strip()))
    if current.attrs:
        objects.append(current)
    return objects


_ABUSE_REMARK_RE = re.compile(r"^%\s*Abuse contact for '([^']*)' is '([^']+)'", re.MULTILINE | re.IGNORECASE)


def parse_whois(text: str, ip: str) -> dict:
    """The fields of one RIR whois answer for ``ip``: the most specific network
    object that holds it, its country (else its organisation's), its origin AS
    (ARIN OriginAS, LACNIC aut-num, else the most specific route object), and the
    abuse contact — see ``_whois_abuse`` for the order of the rules."""
    addr = ipaddress.ip_address(ip)
    objects = split_objects(text)
    nets = []
    for obj in objects:
        if obj.kind in ("inetnum", "inet6num", "netrange") or obj.get("netrange"):
            r = _range_of(obj.get("netrange", "inetnum", "inet6num") or "")
            if r is not None:
                nets.append((obj, r))
    holding = [(o, r) for o, r in nets if r[0].version == addr.version and r[0] <= addr <= r[1]]
    candidates = holding or nets
    if not candidates:
        raise LookupFailed("whois: no network object in the answer")
    net, (first, last) = min(candidates, key=lambda item: int(item[1][1]) - int(item[1][0]))
    cidr = []
    if net.get("cidr"):
        cidr = [str(n) for n in (_parse_cidr(c) for c in net.get("cidr").split(",")) if n is not None]
    by_handle = {}
    for obj in objects:
        for key in ("nic-hdl", "irt", "organisation", "orgid"):
            if obj.get(key):
                by_handle.setdefault(obj.get(key).upper(), obj)
    org = by_handle.get((net.get("org") or "").upper()) or next(
        (o for o in objects if o.get("orgid") or o.kind == "orgname"), None)
    country = net.get("country") or (org.get("country") if org else None)
    asn = _asn(net.get("originas")) or _asn(net.get("aut-num"))
    if asn is None:
        routes = []
        for obj in objects:
            if obj.kind in ("route", "route6"):
                rnet = _parse_cidr(obj.get("route", "route6") or "")
                if rnet is not None and rnet.version == addr.version and addr in rnet and _asn(obj.get("origin")):
                    routes.append((rnet.prefixlen, _asn(obj.get("origin"))))
        if routes:
            asn = max(routes)[1]
    abuse_emails, abuse_source = _whois_abuse(text, net, org, by_handle, objects)
    return {"name": net.get("netname", "owner", "org-name"), "handle": net.get("nethandle"),
            "start": str(first), "end": str(last), "cidr": cidr or _cidrs(first, last), "asn": asn,
            "country": country.upper()[:2] if country else None,
            "abuse_contact": abuse_emails[0] if abuse_emails else None, "abuse_emails": abuse_emails,
            "abuse_source": abuse_source}


def _whois_abuse(text, net, org, by_handle, objects) -> tuple[list[str], str | None]:
    """The abuse contact of a whois answer, the first rule that gives one:
    the RIR's "% Abuse contact for … is '…'" line; ARIN's RAbuseEmail, then
    OrgAbuseEmail; the network's abuse-c (abuse-mailbox, else e-mail of that role);
    its mnt-irt; its organisation's abuse-c or abuse-mailbox; an abuse-mailbox of its
    admin-c/tech-c; an e-mail on a network remark that speaks of abuse."""
    m = _ABUSE_REMARK_RE.search(text)
    if m:
        return _unique_lower([m.group(2)]), "whois:abuse-contact"
    for key in ("rabuseemail", "orgabuseemail"):
        values = [v for o in objects for v in o.all(key)]
        if values:
            return _unique_lower(values), f"whois:{key}"

    def mailbox(handle: str | None, allow_email: bool) -> list[str]:
        obj = by_handle.get((handle or "").upper())
        if obj is None:
            return []
        found = obj.all("abuse-mailbox") or (obj.all("e-mail") if allow_email else [])
        return _unique_lower(found)

    for handle in net.all("abuse-c"):
        if found := mailbox(handle, True):
            return found, "whois:abuse-c"
    for handle in net.all("mnt-irt"):
        if found := mailbox(handle, True):
            return found, "whois:mnt-irt"
    if org is not None:
        for handle in org.all("abuse-c"):
            if found := mailbox(handle, True):
                return found, "whois:org-abuse-c"
        if org.all("abuse-mailbox"):
            return _unique_lower(org.all("abuse-mailbox")), "whois:org-abuse-mailbox"
    for handle in net.all("admin-c", "tech-c"):
        if found := mailbox(handle, False):
            return found, "whois:abuse-mailbox"
    found = _remark_abuse(net.all("remarks"))
    if found:
        return found, "whois:remarks"
    return [], None


# --- the client -------------------------------------------------------------------------

def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


class Lookups:
    """Network lookups for IP addresses. One per process: holds the HTTP client,
    the rate limits and the IANA referral memory, all shared by the workers.

    ``rdap_urls``: registry → RDAP base URL, overriding the bootstrap's (tests use
    local servers). ``whois_hosts``: whois host name → (host, port) to connect to.
    """

    def __init__(self, bootstrap: Bootstrap | None = None, rdap_urls: dict[str, str] | None = None,
                 whois_hosts: dict[str, tuple[str, int]] | None = None, iana_whois: str = IANA_WHOIS,
                 rdap_timeout: float = RDAP_TIMEOUT, whois_timeout: float = WHOIS_TIMEOUT,
                 deadline: float = LOOKUP_DEADLINE, gate: Gate | None = None, complete: bool = True,
                 max_bytes: int = MAX_BYTES):
        self.bootstrap = bootstrap or Bootstrap.load()
        self.rdap_urls = dict(rdap_urls or {})
        self.whois_hosts = {k.lower(): v for k, v in (whois_hosts or {}).items()}
        self.iana_whois = iana_whois
        self.rdap_timeout, self.whois_timeout, self.deadline = rdap_timeout, whois_timeout, deadline
        self.gate = gate or Gate()
        self.complete = complete
        self.max_bytes = max_bytes
        self.requests = {"rdap": 0, "whois": 0}  # counters, for tests and metrics
        self._referrals: list[tuple[object, object, str]] = []  # IANA blocks → whois server
        self._lock = threading.Lock()
        self._http = httpx.Client(headers={"User-Agent": USER_AGENT, "Accept": "application/rdap+json"},
                                  follow_redirects=True, max_redirects=3)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Lookups":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- one lookup ---
    def lookup(self, ip: str, deadline: float | None = None) -> dict:
        """``deadline``: a time.monotonic() value to finish by, when sooner than the
        client's own per-lookup deadline."""
        addr = ipaddress.ip_address(str(ip).strip())
        result = {"schema": SCHEMA, "ip": str(addr), "status": "error", "class": ip_class(addr), "registry": None,
                  "source": None, "name": None, "handle": None, "start": None, "end": None, "cidr": [],
                  "asn": None, "country": None, "abuse_contact": None, "abuse_emails": [], "abuse_source": None,
                  "errors": [], "cached": False, "fetched_at": _now_iso(), "expires_at": None}
        if result["class"] != "global":
            result["status"] = "not_public"
            result["errors"].append(f"{result['class']} address: no registry holds it")
            return result
        own = time.monotonic() + self.deadline
        deadline = own if deadline is None else min(own, deadline)
        if deadline <= time.monotonic():
            result["status"] = "not_looked_up"
            result["errors"].append("no time left for a lookup")
            return result
        sources = []
        base = self.bootstrap.rdap_base(addr)
        if base is None:
            result["errors"].append("rdap: no bootstrap entry for this address")
        else:
            registry = registry_of(base)
            result["registry"] = registry
            try:
                found = parse_rdap(self._rdap(registry, self.rdap_urls.get(registry, base), str(addr), deadline))
            except LookupFailed as exc:
                result["errors"].append(str(exc))
            else:
                self._merge(result, found)
                sources.append("rdap")
        missing = not result["abuse_contact"] or result["asn"] is None or not result["country"]
        if not sources or (self.complete and missing):
            try:
                registry, found = self._whois(addr, deadline)
            except LookupFailed as exc:
                result["errors"].append(str(exc))
            else:
                result["registry"] = result["registry"] or registry
                self._merge(result, found)
                sources.append("whois")
        result["source"] = "+".join(sources) or None
        result["status"] = "ok" if sources else "error"
        return result

    @staticmethod
    def _merge(result: dict, found: dict) -> None:
        """Fill what is still empty; the abuse fields travel together."""
        for key in ("name", "handle", "start", "end", "asn", "country"):
            if result[key] in (None, "") and found.get(key) not in (None, ""):
                result[key] = found[key]
        if not result["cidr"] and found.get("cidr") and result["start"] == found.get("start"):
            result["cidr"] = found["cidr"]
        elif not result["cidr"]:
            result["cidr"] = _cidrs(_clean_address(result["start"]), _clean_address(result["end"]))
        if not result["abuse_contact"] and found.get("abuse_contact"):
            for key in ("abuse_contact", "abuse_emails", "abuse_source"):
                result[key] = found[key]

    # --- RDAP ---
    def _rdap(self, registry: str, base: str, ip: str, deadline: float) -> dict:
        key = f"rdap:{registry}"
        url = base.rstrip("/") + "/ip/" + ip
        last = f"{key}: no answer"
        for _attempt in range(3):
            self.gate.acquire(key, deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LookupFailed(f"{key}: deadline passed")
            timeout = min(self.rdap_timeout, remaining)
            with self._lock:
                self.requests["rdap"] += 1
            try:
                with self._http.stream("GET", url, timeout=httpx.Timeout(timeout)) as r:
                    if r.status_code == 429:
                        delay = self.gate.penalise(key, _retry_after(r.headers.get("retry-after")))
                        last = f"{key}: 429 too many requests (backing off {delay:.1f}s)"
                        continue
                    body = self._read(r.iter_bytes(), deadline, key)
            except httpx.TimeoutException:
                delay = self.gate.penalise(key)
                raise LookupFailed(f"{key}: timed out after {timeout:.1f}s (backing off {delay:.1f}s)") from None
            except httpx.HTTPError as exc:
                raise LookupFailed(f"{key}: {type(exc).__name__}: {exc}") from None
            if r.status_code == 404:
                self.gate.success(key)
                raise LookupFailed(f"{key}: 404 not found")
            if r.status_code >= 400:
                raise LookupFailed(f"{key}: HTTP {r.status_code}")
            self.gate.success(key)
            try:
                doc = json.loads(body)
            except ValueError:
                raise LookupFailed(f"{key}: answer is not JSON") from None
            if not isinstance(doc, dict) or doc.get("objectClassName", "ip network") != "ip network":
                raise LookupFailed(f"{key}: answer is no ip network object")
            return doc
        raise LookupFailed(last)

    def _read(self, chunks, deadline: float, key: str) -> bytes:
        data = bytearray()
        for chunk in chunks:
            data += chunk
            if len(data) > self.max_bytes:
                raise LookupFailed(f"{key}: answer larger than {self.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise LookupFailed(f"{key}: deadline passed while reading")
        return bytes(data)

    # --- whois ---
    def _whois(self, addr, deadline: float) -> tuple[str, dict]:
        server = self._iana_referral(addr, deadline)
        seen = set()
        for _hop in range(3):
            seen.add(server)
            registry = registry_of(server)
            query = f"n + {addr}" if registry == "arin" else str(addr)
            text = self._whois_query(server, query, deadline)
            m = re.search(r"^ReferralServer:\s*whois://([^\s:/]+)(?::(\d+))?", text, re.MULTILINE | re.IGNORECASE)
            if m and m.group(1).lower() not in seen:
                server = m.group(1).lower()
                continue
            return registry, parse_whois(text, str(addr))
        raise LookupFailed("whois: too many referrals")

    def _iana_referral(self, addr, deadline: float) -> str:
        with self._lock:
            for low, high, server in self._referrals:
                if low.version == addr.version and low <= addr <= high:
                    return server
        text = self._whois_query(self.iana_whois, str(addr), deadline)
        m = re.search(r"^(?:refer|whois):\s*(\S+)", text, re.MULTILINE | re.IGNORECASE)
        if not m:
            raise LookupFailed(f"whois: {self.iana_whois} names no registry for {addr}")
        server = m.group(1).lower()
        block = re.search(r"^(?:inetnum|inet6num):\s*(.+)$", text, re.MULTILINE | re.IGNORECASE)
        r = _range_of(block.group(1)) if block else None
        if r is not None:
            with self._lock:
                self._referrals.append((r[0], r[1], server))
        return server

    def _whois_query(self, server: str, query: str, deadline: float) -> str:
        key = f"whois:{registry_of(server)}"
        self.gate.acquire(key, deadline)
        host, port = self.whois_hosts.get(server.lower(), (server, 43))
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LookupFailed(f"{key}: deadline passed")
        timeout = min(self.whois_timeout, remaining)
        with self._lock:
            self.requests["whois"] += 1
        data = bytearray()
        try:
            with socket.create_connection((host, port), timeout=timeout) as conn:
                conn.sendall(query.encode("ascii") + b"\r\n")
                while True:
                    conn.settimeout(max(0.01, min(self.whois_timeout, deadline - time.monotonic())))
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > self.max_bytes:
                        raise LookupFailed(f"{key}: answer larger than {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise LookupFailed(f"{key}: deadline passed while reading")
        except (socket.timeout, TimeoutError):
            delay = self.gate.penalise(key)
            raise LookupFailed(f"{key}: {server} timed out (backing off {delay:.1f}s)") from None
        except OSError as exc:
            raise LookupFailed(f"{key}: {server}: {exc.strerror or exc}") from None
        self.gate.success(key)
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("latin-1")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime
        try:
            return max(0.0, (parsedate_to_datetime(value) - datetime.now(timezone.utc)).total_seconds())
        except (TypeError, ValueError):
            return None


# --- the cache --------------------------------------------------------------------------

def cached_lookup(make_session: Callable[[], Session], lookups: Lookups, ip: str, refresh: bool = False,
                  ttl: float = CACHE_TTL, error_ttl: float = ERROR_TTL, deadline: float | None = None) -> dict:
    """``lookups.lookup(ip)`` through the cache: a fresh cached answer is returned
    with ``cached: True`` and no request; otherwise the answer is looked up and
    stored (failed lookups for ``error_ttl``, so a dead registry is not asked again
    at once). The session is not held open during the network lookup."""
    addr = str(ipaddress.ip_address(str(ip).strip()))
    if not refresh:
        with make_session() as session:
            row = session.get(IpLookup, addr)
            if row is not None and _aware(row.expires_at) > utcnow():
                result = json.loads(row.result)
                result["cached"] = True
                return result
    result = lookups.lookup(addr, deadline=deadline)
    if result["status"] in ("not_public", "not_looked_up"):
        return result
    lifetime = ttl if result["status"] == "ok" else error_ttl
    expires = utcnow() + timedelta(seconds=lifetime)
    result["expires_at"] = expires.isoformat()
    with make_session() as session:
        row = session.get(IpLookup, addr)
        if row is None:
            row = IpLookup(ip=addr)
            session.add(row)
        row.status, row.result, row.fetched_at, row.expires_at = result["status"], json.dumps(result), utcnow(), expires
        try:
            session.commit()
        except IntegrityError:  # another worker stored the same address meanwhile
            session.rollback()
    return result


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
