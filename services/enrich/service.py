"""services/enrich: indicators, abuse contacts, constituency routing.

``extract`` finds indicators in a text (indicators.py), ``lookup_ip`` asks the
registries who holds a public address (lookup.py, cached in this service's
database), ``enrich_text`` does both and routes the result to a constituency
(routing.py). A lookup that fails is a result with its reason, never an exception.
"""
from __future__ import annotations

import ipaddress
import logging
import time
from pathlib import Path

from nameko.events import event_handler
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy, rpc

from osprey import contracts
from osprey.config import settings
from osprey.db import Database

from . import lookup, routing
from .dependencies import RegistryLookups
from .exceptions import BadRequest, NotFound
from .indicators import classify_ip, extract
from .models import MIGRATIONS, Base

__all__ = ["EnrichService", "classify_ip", "db_url"]

log = logging.getLogger(__name__)

# refusals the caller is meant to get; nameko logs them as warnings, not errors
api = rpc(expected_exceptions=(BadRequest, NotFound))

# Until osprey.config has OSPREY_ENRICH_DB_URL / OSPREY_ENRICH_OWN_DOMAINS /
# OSPREY_ENRICH_OWN_ADDRESSES / OSPREY_ENRICH_MAX_LOOKUPS these stay here.
OWN_DOMAINS: tuple[str, ...] = ()
OWN_ADDRESSES: tuple[str, ...] = ()
MAX_LOOKUPS = 20   # distinct public IPs enrich_text looks up per text; the rest are listed as skipped
TEXT_DEADLINE = 20.0  # seconds enrich_text spends on lookups in all (keep it under OSPREY_RPC_TIMEOUT)


def db_url() -> str:
    """OSPREY_ENRICH_DB_URL; empty: SQLite in DATA_DIR/enrich/enrich.db."""
    return settings().enrich_db_url


def _text_arg(value, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


class EnrichService:
    name = contracts.ENRICH

    db = Database(Base, url=db_url, migrations=MIGRATIONS)
    lookups = RegistryLookups()
    tickets = RpcProxy(contracts.TICKETS)

    @rpc
    def ping(self):
        return {"service": self.name, "ok": True}

    @api
    def classify_ip(self, ip):
        return classify_ip(ip)

    @api
    def extract(self, text, html=None):
        """Indicators of a text (and an HTML body): a list of dicts, see indicators.py."""
        return extract(_text_arg(text, "text"), _text_arg(html, "html") or None,
                       own_domains=settings().enrich_own_domains or OWN_DOMAINS, own_addresses=OWN_ADDRESSES)

    @api
    def lookup_ip(self, ip, refresh=False):
        """Network, ASN, country and abuse contact of one address (lookup.RESULT_KEYS)."""
        try:
            ipaddress.ip_address(str(ip).strip())
        except ValueError:
            raise BadRequest(f"not an IP address: {ip!r}") from None
        return self._lookup(str(ip), bool(refresh))

    def _lookup(self, ip: str, refresh: bool = False, deadline: float | None = None) -> dict:
        try:
            return lookup.cached_lookup(self.db.get_session, self.lookups, ip, refresh=refresh, deadline=deadline)
        except Exception as exc:  # a bug or the database: still a result, and a log line
            log.exception("lookup of %s failed", ip)
            return {"schema": contracts.SCHEMA, "ip": ip, "status": "error", "errors": [f"{type(exc).__name__}: {exc}"]}

    @api
    def enrich_text(self, text, html=None):
        """{"schema", "indicators", "networks": {ip: lookup result}, "skipped": [ip…],
        "constituency": routing.route(...) or None}. Only public addresses are
        looked up, at most MAX_LOOKUPS per call, all within TEXT_DEADLINE seconds (an
        address whose turn comes after that is answered from the cache or not at all,
        with the reason)."""
        indicators = self.extract(text, html)
        public = [i["value"] for i in indicators if i["type"] in ("ipv4", "ipv6") and i["class"] == "global"]
        deadline = time.monotonic() + TEXT_DEADLINE
        limit = MAX_LOOKUPS if settings().enrich_lookups else 0
        networks = {ip: self._lookup(ip, deadline=deadline) for ip in public[:limit]}
        try:
            with self.db.get_session() as session:
                constituency = routing.route(session, indicators, networks)
        except Exception:
            log.exception("routing failed")
            constituency = None
        return {"schema": contracts.SCHEMA, "indicators": indicators, "networks": networks,
                "skipped": public[limit:], "constituency": constituency}

    @event_handler(contracts.TICKETS, contracts.EV_ARTICLE_ADDED)
    def handle_article_added(self, payload):
        """Every article that came in: its indicators, networks and constituency go
        back to tickets (asynchronous: a slow registry never holds up ingest)."""
        if payload.get("direction", "in") != "in" or not payload.get("article_id"):
            return
        try:
            article = self.tickets.get_article_text(payload["article_id"])
        except RemoteError as exc:
            log.warning("article %s not enriched: %s", payload.get("article_id"), exc)
            return
        if article.get("direction") != "in":
            return
        result = self.enrich_text(f"{article.get('subject') or ''}\n{article.get('body_text') or ''}",
                                  article.get("body_html"))
        self.tickets.add_enrichment(article["id"], result)

    @api
    def add_constituency(self, name, netblocks=(), domains=(), asns=(), contact="", queue=None, language="",
                         encryption=""):
        with self.db.get_session() as session:
            result = routing.add_constituency(session, name, netblocks, domains, asns, contact, queue, language,
                                              encryption)
            session.commit()
            return result

    @api
    def list_constituencies(self):
        with self.db.get_session() as session:
            return routing.list_constituencies(session)

    @api
    def delete_constituency(self, name):
        with self.db.get_session() as session:
            result = routing.delete_constituency(session, name)
            session.commit()
            return result
