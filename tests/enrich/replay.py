"""Real local servers that replay the recorded registry answers of
corpora/ipwhois-rir (10 addresses, all five RIRs): an RDAP server over HTTP and
whois servers over TCP, on free loopback ports, each in its own thread.

- ``RdapReplay``: GET /<registry>/ip/<address> → the recorded RDAP JSON when the
  recording came from that registry, else 404. ``plan`` queues answers to give
  first (e.g. a 429 with Retry-After); ``silent`` accepts and never answers.
- ``WhoisReplay``: one TCP server per whois host name. An RIR's server answers
  its recorded text for the address in the query (ARIN's "n + " prefix
  accepted); the IANA server answers "refer: <the recording's whois host>", the
  IANA block being the one the shipped bootstrap file names. Queries are recorded.

Used by the tests and by bench/enrich.py.
"""
from __future__ import annotations

import ipaddress
import json
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from osprey.testing import corpora_dir
from services.enrich.lookup import REGISTRIES, Bootstrap, Lookups, registry_of

CORPUS = corpora_dir() / "ipwhois-rir"
IPS = tuple(json.loads((CORPUS / "json" / "whois.json").read_text()))
REGISTRY_NAMES = {"afrinic": "AFRINIC", "apnic": "APNIC", "arin": "ARIN", "lacnic": "LACNIC", "ripe": "RIPE NCC"}


def _stem(ip: str) -> str:
    return ip.replace(":", "_")


def rdap_doc(ip: str) -> bytes:
    return (CORPUS / "rdap" / f"{_stem(ip)}.json").read_bytes()


def whois_text(ip: str) -> bytes:
    return (CORPUS / "whois-raw" / f"{_stem(ip)}.txt").read_bytes()


def whois_host(ip: str) -> str:
    """The whois server the recording came from (its RDAP answer's port43)."""
    return json.loads(rdap_doc(ip))["port43"].lower()


def registry(ip: str) -> str:
    return registry_of(whois_host(ip))


class _RdapHandler(BaseHTTPRequestHandler):
    server: "RdapReplay"

    def log_message(self, *args):
        pass

    def do_GET(self):
        srv = self.server
        with srv.lock:
            srv.requests.append(self.path)
            planned = srv.plan.pop(0) if srv.plan else None
        if srv.silent:
            srv.release.wait(30)
            return
        if planned is not None:
            status, headers = planned
            self._send(status, b'{"errorCode": %d}' % status, headers)
            return
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[1] == "ip":
            reg, _, address = parts
            ip = next((i for i in IPS if i == address), None)
            if ip is not None and registry(ip) == reg:
                self._send(200, rdap_doc(ip), {})
                return
        self._send(404, b'{"errorCode": 404, "title": "Not Found"}', {})

    def _send(self, status: int, body: bytes, headers: dict):
        self.send_response(status)
        self.send_header("Content-Type", "application/rdap+json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class RdapReplay(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, silent: bool = False):
        super().__init__(("127.0.0.1", 0), _RdapHandler)
        self.silent = silent
        self.plan: list[tuple[int, dict]] = []
        self.requests: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def urls(self) -> dict[str, str]:
        """registry → this server's base URL for it (Lookups' rdap_urls)."""
        return {name: f"{self.url}/{name}/" for name in REGISTRIES}

    def start(self) -> "RdapReplay":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


class _WhoisHandler(socketserver.StreamRequestHandler):
    server: "WhoisServer"

    def handle(self):
        query = self.rfile.readline(1000).decode("ascii", "replace").strip()
        srv = self.server
        with srv.lock:
            srv.queries.append(query)
        if srv.silent:
            srv.release.wait(30)
            return
        self.wfile.write(srv.answer(query))


class WhoisServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host_name: str, bootstrap: Bootstrap, silent: bool = False):
        super().__init__(("127.0.0.1", 0), _WhoisHandler)
        self.host_name = host_name
        self.bootstrap = bootstrap
        self.silent = silent
        self.queries: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def answer(self, query: str) -> bytes:
        address = query.removeprefix("n + ").strip()
        ip = next((i for i in IPS if i == address), None)
        if self.host_name == "whois.iana.org":
            return self._iana(address, ip)
        if ip is None or whois_host(ip) != self.host_name:
            return b"% No entries found for the selected source(s).\n"
        return whois_text(ip)

    def _iana(self, address: str, ip: str | None) -> bytes:
        if ip is None:
            return b"% IANA WHOIS server\n\n% Error: no object found\n"
        addr = ipaddress.ip_address(ip)
        block = next(net for net, _urls in self.bootstrap.networks if net.version == addr.version and addr in net)
        reg = registry(ip)
        key = "inetnum" if addr.version == 4 else "inet6num"
        rng = f"{block.network_address} - {block.broadcast_address}" if addr.version == 4 else str(block)
        return (f"% IANA WHOIS server\n% for more information on IANA, visit http://www.iana.org\n"
                f"% This query returned 1 object\n\nrefer:        {whois_host(ip)}\n\n"
                f"{key}:      {rng}\norganisation: {REGISTRY_NAMES[reg]}\nstatus:       ALLOCATED\n\n"
                f"whois:        {whois_host(ip)}\n\nsource:       IANA\n").encode()


class WhoisReplay:
    """whois.iana.org and the five RIR whois hosts, each a server of its own."""

    HOSTS = ("whois.iana.org",) + tuple(whois for _rdap, whois in REGISTRIES.values())

    def __init__(self, silent: bool = False):
        bootstrap = Bootstrap.load()
        self.servers = {h: WhoisServer(h, bootstrap, silent=silent) for h in self.HOSTS}

    def hosts(self) -> dict[str, tuple[str, int]]:
        """whois host name → this machine's server for it (Lookups' whois_hosts)."""
        return {h: s.server_address for h, s in self.servers.items()}

    def queries(self, host: str) -> list[str]:
        return list(self.servers[host].queries)

    def total(self) -> int:
        return sum(len(s.queries) for s in self.servers.values())

    def start(self) -> "WhoisReplay":
        for s in self.servers.values():
            s.thread.start()
        return self

    def stop(self) -> None:
        for s in self.servers.values():
            s.release.set()
            s.shutdown()
            s.server_close()


def lookups_for(rdap: RdapReplay | None, whois: WhoisReplay | None, **options) -> Lookups:
    """A Lookups client that reaches only the replay servers (a registry without a
    replay server gets a closed loopback port: connection refused)."""
    closed = "http://127.0.0.1:9/"
    rdap_urls = rdap.urls() if rdap else {name: closed for name in REGISTRIES}
    whois_hosts = whois.hosts() if whois else {h: ("127.0.0.1", 9) for h in WhoisReplay.HOSTS}
    return Lookups(rdap_urls=rdap_urls, whois_hosts=whois_hosts, **options)
