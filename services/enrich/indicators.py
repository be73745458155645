"""Indicators in a text: IPs, networks, ranges, domains, URLs, e-mail addresses,
hashes and CVE ids, including their defanged forms.

``extract(text, html=None, own_domains=(), own_addresses=())`` returns one dict per
distinct indicator, in order of first appearance::

    {"type": "ipv4", "value": "192.0.2.7", "raw": "192.0.2[.]7", "span": [12, 23],
     "count": 2, "source": "text", "class": "documentation"}

``span`` is [start, end) of the first occurrence in the scanned text (``source``:
"text" = the ``text`` argument itself, "html" = the text this module makes from the
``html`` argument), ``raw`` is that original, possibly defanged, substring and
``count`` how often the same value occurs there. IP indicators (ipv4, ipv6, cidr,
range) carry ``class`` (see ``ip_class``); domains carry ``registered`` (the
registrable domain under the public suffix).

The steps, one job each: refang (keeping a map back to the original offsets),
find candidates per type, validate and normalise each, drop the parts of URLs and
e-mail addresses that are not their host, drop the configured own domains and
addresses, count. docs/enrichment.md lists the rules.
"""
from __future__ import annotations

import bisect
import ipaddress
import re
from dataclasses import dataclass
from functools import lru_cache
from html.parser import HTMLParser
from typing import Iterable

from publicsuffixlist import PublicSuffixList

from osprey.contracts import parse_ip_range

from .exceptions import BadRequest

TYPES = ("ipv4", "ipv6", "cidr", "range", "url", "email", "domain", "md5", "sha1", "sha256", "cve")
IP_TYPES = ("ipv4", "ipv6", "cidr", "range")

# --- IP classification -------------------------------------------------------------

_DOCUMENTATION = tuple(ipaddress.ip_network(n) for n in (
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32", "3fff::/20"))
# RFC 1918, RFC 6598 shared address space (carrier-grade NAT), RFC 4193 unique local
_PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7"))
IP_CLASSES = ("loopback", "documentation", "link_local", "multicast", "private", "reserved", "global")


def ip_class(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """One word for what an address is, the first that applies in IP_CLASSES order.
    "reserved" is every other special-purpose block (unspecified, benchmarking,
    240/4, 6to4 relay, …): not routed on the Internet, no registry to ask."""
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return "loopback"
    if any(addr in net for net in _DOCUMENTATION if net.version == addr.version):
        return "documentation"
    if addr.is_link_local:
        return "link_local"
    if addr.is_multicast:
        return "multicast"
    if any(addr in net for net in _PRIVATE if net.version == addr.version):
        return "private"
    if addr.is_global:
        return "global"
    return "reserved"


def classify_ip(text: str) -> dict:
    try:
        addr = ipaddress.ip_address(str(text).strip())
    except ValueError:
        raise BadRequest(f"not an IP address: {text!r}") from None
    documentation = any(addr in net for net in _DOCUMENTATION if net.version == addr.version)
    return {"ip": str(addr), "version": addr.version, "global": addr.is_global,
            "private": addr.is_private, "loopback": addr.is_loopback, "link_local": addr.is_link_local,
            "multicast": addr.is_multicast, "reserved": addr.is_reserved, "documentation": documentation,
            "class": ip_class(addr)}


def network_class(first, last) -> str:
    """The class of a network or range: its first address's, unless the two ends
    differ (a range across blocks), then the class of the less special one."""
    a, b = ip_class(first), ip_class(last)
    return a if a == b else max(a, b, key=IP_CLASSES.index)


# --- refanging ----------------------------------------------------------------------

# Every rewrite is a bracketed token or the hxxp scheme; a bare " dot " or " at " in
# prose is left alone (too many false positives).
_DEFANG_RE = re.compile(
    r"(?P<scheme>\b[hH][xX*]{2}[pP](?P<s>[sS]?)(?=\[:\]|\(:\)|\{:\}|\[://\]|\(://\)|:))"
    r"|(?P<sep>\[://\]|\(://\))"
    r"|(?P<colon>\[:\]|\(:\)|\{:\})"
    r"|(?P<dot>\s?[\[\(\{]\s*(?:\.|dot|DOT)\s*[\]\)\}]\s?|\\\.)"
    r"|(?P<at>\s?[\[\(\{]\s*(?:@|at|AT)\s*[\]\)\}]\s?)"
    r"|(?P<slash>\[/\])")


@dataclass
class Refanged:
    """The text with defanged tokens rewritten, and how to map offsets back."""
    text: str
    # per rewrite: start in the new text, end in the new text, start/end in the original
    new_starts: list[int]
    new_ends: list[int]
    old_starts: list[int]
    old_ends: list[int]

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self._map(start, False), self._map(end, True)

    def _map(self, pos: int, is_end: bool) -> int:
        k = (bisect.bisect_left(self.new_starts, pos) if is_end else bisect.bisect_right(self.new_starts, pos)) - 1
        if k < 0:
            return pos
        if pos < self.new_ends[k] or (is_end and pos == self.new_ends[k]):
            return self.old_ends[k] if is_end else self.old_starts[k]
        return self.old_ends[k] + (pos - self.new_ends[k])


def refang(text: str) -> Refanged:
    out: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    old_starts: list[int] = []
    old_ends: list[int] = []
    last = 0
    length = 0
    for m in _DEFANG_RE.finditer(text):
        kind = "scheme" if m.group("scheme") is not None else m.lastgroup
        replacement = {"scheme": "http" + ("s" if m.group("s") else ""), "sep": "://", "colon": ":",
                       "dot": ".", "at": "@", "slash": "/"}[kind]
        out.append(text[last:m.start()])
        length += m.start() - last
        new_starts.append(length)
        out.append(replacement)
        length += len(replacement)
        new_ends.append(length)
        old_starts.append(m.start())
        old_ends.append(m.end())
        last = m.end()
    if not new_starts:
        return Refanged(text, [], [], [], [])
    out.append(text[last:])
    return Refanged("".join(out), new_starts, new_ends, old_starts, old_ends)


# --- HTML to text -------------------------------------------------------------------

_BLOCK = {"p", "div", "br", "li", "tr", "td", "th", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
          "pre", "blockquote", "hr", "section", "article", "header", "footer", "title", "dt", "dd"}
_SKIP = {"script", "style", "noscript", "template"}


class _TextMaker(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.links: list[tuple[str, int]] = []  # open <a href>: (href, len(parts) at open)

    def handle_starttag(self, tag, attrs):
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")
        values = dict(attrs)
        if tag == "a":
            self.links.append(((values.get("href") or "").strip(), len(self.parts)))
        elif tag in ("img", "iframe", "form") and (values.get("src") or values.get("action")):
            self.parts.append(f" <{(values.get('src') or values.get('action')).strip()}> ")

    def handle_endtag(self, tag):
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")
        if tag == "a" and self.links:
            href, at = self.links.pop()
            if href.lower().startswith("mailto:"):
                href = href[7:].split("?", 1)[0]
            shown = "".join(self.parts[at:])
            if href and not href.startswith("#") and href not in shown:
                self.parts.append(f" <{href}>")

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """Text of an HTML body for indicator extraction: scripts and styles dropped,
    block elements on their own lines, entities decoded, and each link target that
    the link's text does not show written after it as `` <target>`` (a phishing
    link's real target is the indicator)."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    return re.sub(r"\n\s*\n+", "\n\n", "".join(maker.parts)).strip()


# --- candidates ---------------------------------------------------------------------

_V4 = r"(?:\d{1,3}\.){3}\d{1,3}"
_V6 = r"(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
# an address, or a network a/len, or a range a-b; no digit, dot or word char around it
_IP_RE = re.compile(
    rf"(?<![\w.:/])(?P<a>{_V4}|{_V6})"
    rf"(?:(?P<len>/\d{{1,3}})|\s?-\s?(?P<b>{_V4}|{_V6}))?"
    r"(?![\w:/]|\.\d)")
_LABEL = r"[^\W_](?:[\w-]{0,61}[^\W_])?"
_DOMAIN_RE = re.compile(rf"(?<![\w@.-])(?:{_LABEL}\.)+{_LABEL}\.?(?![\w-]|\.\w)")
_URL_RE = re.compile(r"(?<![\w.+-])(?:https?|ftp)://[^\s<>\"'`{}|\\^]+", re.IGNORECASE)
_EMAIL_RE = re.compile(rf"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:{_LABEL}\.)+{_LABEL}(?![\w-]|\.\w)")
_HASH_RE = re.compile(r"(?<![0-9A-Za-z])(?:[0-9a-fA-F]{64}|[0-9a-fA-F]{40}|[0-9a-fA-F]{32})(?![0-9A-Za-z])")
_CVE_RE = re.compile(r"(?<![\w-])CVE[-\u2010\u2011\u2013](\d{4})[-\u2010\u2011\u2013](\d{4,7})(?!\d)", re.IGNORECASE)
_HASH_TYPES = {32: "md5", 40: "sha1", 64: "sha256"}

# Top-level domains that are also common file extensions. A two-label name under
# one of these ("report.zip", "README.md", "setup.sh") is taken for a file name,
# unless it was defanged or stands in a URL or an e-mail address.
FILE_EXTENSION_TLDS = frozenset({
    "zip", "mov", "md", "py", "sh", "pl", "rs", "ps", "cc", "cs", "js", "ts", "pm", "so", "sc", "ai", "am",
    "cx", "do", "gz", "im", "in", "it", "ml", "mp", "nf", "ph", "pn", "sb", "sx", "tf", "tk", "top", "ms",
    "bz", "jar", "app", "dev", "csv", "bat", "exe", "txt", "doc", "pdf", "log", "inf", "cfg", "ini", "bin",
})


@lru_cache(maxsize=1)
def _psl() -> PublicSuffixList:
    # the list bundled with the publicsuffixlist package: never fetched at run time
    return PublicSuffixList(only_icann=True)


def registered_domain(name: str) -> str | None:
    """``www.example.co.uk`` → ``example.co.uk``; None when the name does not end in
    a public suffix of the ICANN section or is a public suffix itself."""
    return _psl().privatesuffix(name, accept_unknown=False)


def normalise_domain(name: str) -> str | None:
    """Lower case, no trailing dot, IDN as A-labels (punycode); None when invalid."""
    name = name.strip().rstrip(".").lower()
    if not name or len(name) > 253:
        return None
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    labels = name.split(".")
    if any(not label or len(label) > 63 or label.startswith("-") or label.endswith("-") for label in labels):
        return None
    return name


def _own_domain(domain: str, own_domains: tuple[str, ...]) -> bool:
    return any(domain == own or domain.endswith("." + own) for own in own_domains)


@dataclass
class _Hit:
    type: str
    value: str
    start: int  # in the refanged text
    end: int
    extra: dict


class _Scan:
    """One pass over one text: collects hits, then resolves overlaps."""

    def __init__(self, text: str):
        self.original = text
        self.ref = refang(text)
        self.text = self.ref.text
        self.hits: list[_Hit] = []
        # URL and e-mail spans (only their hosts count), sorted, never overlapping
        self._claimed_starts: list[int] = []
        self._claimed_ends: list[int] = []

    def claim(self, start: int, end: int) -> None:
        k = bisect.bisect_right(self._claimed_starts, start)
        self._claimed_starts.insert(k, start)
        self._claimed_ends.insert(k, end)

    def inside_claimed(self, start: int, end: int) -> bool:
        k = bisect.bisect_right(self._claimed_starts, start) - 1
        return k >= 0 and end <= self._claimed_ends[k]

    def defanged(self, start: int, end: int) -> bool:
        s, e = self.ref.original_span(start, end)
        return self.original[s:e] != self.text[start:end]


def _host_hit(scan: _Scan, host: str, start: int, end: int) -> _Hit | None:
    """The host part of a URL or address as its own indicator (domain or IP)."""
    bare = host.strip("[]")
    try:
        addr = ipaddress.ip_address(bare)
    except ValueError:
        domain = normalise_domain(host)
        if domain is None or registered_domain(domain) is None:
            return None
        return _Hit("domain", domain, start, end, {"registered": registered_domain(domain)})
    return _Hit(f"ipv{addr.version}", str(addr), start, end, {"class": ip_class(addr)})


_TRAILING = ".,;:!?'\">"
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _trim_url(url: str) -> str:
    while url:
        last = url[-1]
        if last in _TRAILING:
            url = url[:-1]
        elif last in _PAIRS and url.count(last) > url.count(_PAIRS[last]):
            url = url[:-1]
        else:
            break
    return url


_URL_PARTS_RE = re.compile(r"^(?P<scheme>[A-Za-z]+)://(?:(?P<userinfo>[^@/?#]*)@)?"
                           r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:/?#\[\]@]+)(?P<port>:\d{1,5})?(?P<rest>[/?#].*)?$",
                           re.DOTALL)


def _find_urls(scan: _Scan) -> None:
    for m in _URL_RE.finditer(scan.text):
        url = _trim_url(m.group(0))
        parts = _URL_PARTS_RE.match(url)
        if not parts:
            continue
        start, end = m.start(), m.start() + len(url)
        host_text = parts.group("host")
        host_start = start + parts.start("host") + (1 if host_text.startswith("[") else 0)
        host = _host_hit(scan, host_text, host_start, host_start + len(host_text.strip("[]")))
        host_ok = host is not None or re.fullmatch(r"[A-Za-z0-9.-]+", parts.group("host") or "")
        if not host_ok:
            continue
        hostname = host.value if host is not None else parts.group("host").lower()
        if host is not None and host.type == "ipv6":
            hostname = f"[{host.value}]"
        value = (f"{parts.group('scheme').lower()}://"
                 + (f"{parts.group('userinfo')}@" if parts.group("userinfo") is not None else "")
                 + hostname + (parts.group("port") or "") + (parts.group("rest") or ""))
        scan.claim(start, end)
        scan.hits.append(_Hit("url", value, start, end, {"host": hostname.strip("[]")}))
        if host is not None:
            scan.hits.append(host)


def _find_emails(scan: _Scan) -> None:
    for m in _EMAIL_RE.finditer(scan.text):
        if scan.inside_claimed(m.start(), m.end()):
            continue
        local, _, domain_text = m.group(0).rpartition("@")
        local = local.strip(".")
        domain = normalise_domain(domain_text)
        if not local or domain is None or registered_domain(domain) is None:
            continue
        scan.claim(m.start(), m.end())
        scan.hits.append(_Hit("email", f"{local.lower()}@{domain}", m.start(), m.end(), {"domain": domain}))
        d_start = m.end() - len(domain_text)
        scan.hits.append(_Hit("domain", domain, d_start, m.end(), {"registered": registered_domain(domain)}))


def _find_ips(scan: _Scan) -> None:
    for m in _IP_RE.finditer(scan.text):
        if scan.inside_claimed(m.start(), m.end()):
            continue
        a_text, length, b_text = m.group("a"), m.group("len"), m.group("b")
        if ":" in a_text and not a_text.strip(":"):
            continue  # a bare "::" in prose or code is no address
        try:
            a = ipaddress.ip_address(a_text)
        except ValueError:
            continue
        if b_text is not None:
            if parse_ip_range(f"{a_text}-{b_text}") is None:
                # "10.0.0.1 - 2001:db8::1" or a > b: the first address alone
                b_text = None
            else:
                b = ipaddress.ip_address(b_text)
                scan.hits.append(_Hit("range", f"{a}-{b}", m.start(), m.end(), {"class": network_class(a, b)}))
                continue
        if length is not None:
            try:
                net = ipaddress.ip_network(f"{a}{length}", strict=False)
            except ValueError:
                length = None
            else:
                if net.num_addresses > 1:
                    scan.hits.append(_Hit("cidr", str(net), m.start(), m.end(),
                                          {"class": network_class(net.network_address, net.broadcast_address)}))
                    continue
        end = m.start() + len(a_text)
        scan.hits.append(_Hit(f"ipv{a.version}", str(a), m.start(), end, {"class": ip_class(a)}))


def _find_domains(scan: _Scan) -> None:
    for m in _DOMAIN_RE.finditer(scan.text):
        if scan.inside_claimed(m.start(), m.end()):
            continue
        text = m.group(0).rstrip(".")
        labels = text.split(".")
        if labels[-1].isdigit():
            continue  # a version number, a date, an IP address
        domain = normalise_domain(text)
        if domain is None:
            continue
        registered = registered_domain(domain)
        if registered is None:
            continue
        end = m.start() + len(text)
        if not scan.defanged(m.start(), end):
            tld = labels[-1]
            if len(labels) == 2 and tld.lower() in FILE_EXTENSION_TLDS:
                continue  # "report.zip", "README.md": a file name
            capitalised = len(tld) > 1 and tld[:1].isupper() and tld[1:].islower()
            if len(labels) == 2 and capitalised and not labels[0].isupper():
                continue  # "the end.It was": two sentences without a space
        scan.hits.append(_Hit("domain", domain, m.start(), end, {"registered": registered}))


def _find_hashes(scan: _Scan) -> None:
    for m in _HASH_RE.finditer(scan.text):
        if scan.inside_claimed(m.start(), m.end()):
            continue
        value = m.group(0)
        letters = [c for c in value if c.isalpha()]
        if not letters or not any(c.isdigit() for c in value):
            continue  # all digits: a number; all letters: a word
        if any(c.isupper() for c in letters) and any(c.islower() for c in letters):
            continue  # mixed case: a token or base64, not a hex digest
        scan.hits.append(_Hit(_HASH_TYPES[len(value)], value.lower(), m.start(), m.end(), {}))


def _find_cves(scan: _Scan) -> None:
    for m in _CVE_RE.finditer(scan.text):
        scan.hits.append(_Hit("cve", f"CVE-{m.group(1)}-{m.group(2)}", m.start(), m.end(), {}))


# The order of the steps: URLs and e-mail addresses first (they claim their span, so
# only their host is seen again), then IPs, domains, hashes, CVE ids.
STEPS = (_find_urls, _find_emails, _find_ips, _find_domains, _find_hashes, _find_cves)


# --- own domains and addresses ------------------------------------------------------

@dataclass(frozen=True)
class Own:
    domains: tuple[str, ...] = ()
    emails: frozenset[str] = frozenset()
    ranges: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(cls, own_domains: Iterable[str] = (), own_addresses: Iterable[str] = ()) -> "Own":
        """``own_domains``: names whose indicators (and their subdomains, URLs on them,
        addresses at them) are dropped. ``own_addresses``: e-mail addresses (with an
        "@") and IP addresses, CIDR networks or a-b ranges to drop."""
        domains = tuple(d for d in (normalise_domain(x) for x in own_domains or ()) if d)
        emails, ranges = set(), []
        for item in own_addresses or ():
            item = str(item).strip()
            if "@" in item:
                emails.add(item.lower())
                continue
            r = parse_ip_range(item)
            if r is None:
                raise BadRequest(f"not an e-mail address, IP address, network or range: {item!r}")
            ranges.append(r)
        return cls(domains, frozenset(emails), tuple(ranges))

    def covers(self, hit: _Hit) -> bool:
        if hit.type == "domain":
            return _own_domain(hit.value, self.domains)
        if hit.type == "email":
            return hit.value in self.emails or _own_domain(hit.extra["domain"], self.domains)
        if hit.type == "url":
            host = hit.extra["host"]
            r = parse_ip_range(host) if any(c.isdigit() for c in host) else None
            if r is not None:
                return self._in_ranges(r)
            return _own_domain(host, self.domains)
        if hit.type in IP_TYPES:
            r = parse_ip_range(hit.value)
            return r is not None and self._in_ranges(r)
        return False

    def _in_ranges(self, r: tuple[bytes, bytes]) -> bool:
        return any(low <= r[0] and r[1] <= high for low, high in self.ranges)


# --- the whole ----------------------------------------------------------------------

def scan_text(text: str, source: str = "text", own: Own | None = None) -> list[dict]:
    scan = _Scan(text)
    for step in STEPS:
        step(scan)
    own = own or Own()
    found: dict[tuple[str, str], dict] = {}
    for hit in sorted(scan.hits, key=lambda h: (h.start, -h.end, TYPES.index(h.type))):
        if own.covers(hit):
            continue
        key = (hit.type, hit.value)
        if key in found:
            found[key]["count"] += 1
            continue
        start, end = scan.ref.original_span(hit.start, hit.end)
        item = {"type": hit.type, "value": hit.value, "raw": text[start:end], "span": [start, end],
                "count": 1, "source": source}
        if hit.type in IP_TYPES:
            item["class"] = hit.extra["class"]
        elif hit.type == "domain":
            item["registered"] = hit.extra["registered"]
        found[key] = item
    return list(found.values())


def extract(text: str | None, html: str | None = None, own_domains: Iterable[str] = (),
            own_addresses: Iterable[str] = ()) -> list[dict]:
    """Indicators of ``text`` and, when given, of ``html`` (made text by
    ``html_to_text``): those of the text first, then those only the HTML has."""
    own = Own.of(own_domains, own_addresses)
    result = scan_text(text or "", "text", own)
    if html:
        seen = {(i["type"], i["value"]) for i in result}
        result += [i for i in scan_text(html_to_text(html), "html", own) if (i["type"], i["value"]) not in seen]
    return result
