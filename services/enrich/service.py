"""services/enrich: indicators, abuse contacts, constituency routing.

The walking skeleton runs it as its own process with the first piece every later
step needs: what kind of address an IP is (public, private, documentation, …)."""
from __future__ import annotations

import ipaddress

from nameko.rpc import rpc

from osprey import contracts

from .exceptions import BadRequest


def classify_ip(text: str) -> dict:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        raise BadRequest(f"not an IP address: {text!r}") from None
    documentation = any(addr in net for net in (
        ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("198.51.100.0/24"),
        ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8::/32")))
    return {"ip": str(addr), "version": addr.version, "global": addr.is_global,
            "private": addr.is_private, "loopback": addr.is_loopback, "link_local": addr.is_link_local,
            "multicast": addr.is_multicast, "reserved": addr.is_reserved, "documentation": documentation}


class EnrichService:
    name = contracts.ENRICH

    @rpc
    def ping(self):
        return {"service": self.name, "ok": True}

    @rpc(expected_exceptions=BadRequest)
    def classify_ip(self, ip):
        return classify_ip(ip)
