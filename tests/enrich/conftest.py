"""Fixtures of the enrich tests: a real SQLite database prepared as the service
prepares its own (osprey.db.prepare with services/enrich/migrations), and the
replay servers of tests/enrich/replay.py."""
from __future__ import annotations

import pytest
from sqlalchemy.orm import sessionmaker

from osprey.db import make_engine, prepare
from services.enrich.lookup import Gate
from services.enrich.models import MIGRATIONS
from tests.enrich.replay import RdapReplay, WhoisReplay, lookups_for


class SessionSource:
    """What EnrichService.db gives a worker, for worker_factory: ``get_session()``."""

    def __init__(self, make_session: sessionmaker):
        self.get_session = make_session


@pytest.fixture
def make_session(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'enrich.db'}")
    prepare(engine, MIGRATIONS)
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture(scope="module")
def rdap():
    server = RdapReplay().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def whois():
    servers = WhoisReplay().start()
    yield servers
    servers.stop()


def fast_gate() -> Gate:
    """No waiting for rate limits in tests that are not about them."""
    return Gate(rate=1000.0, burst=1000)


@pytest.fixture
def lookups(rdap, whois):
    client = lookups_for(rdap, whois, gate=fast_gate())
    yield client
    client.close()
