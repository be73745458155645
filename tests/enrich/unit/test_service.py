"""EnrichService's RPCs on a worker (nameko's worker_factory) with a real SQLite
database and lookups against the local replay servers."""
import pytest
from nameko.testing.services import worker_factory

from services.enrich import service as enrich_service
from services.enrich.exceptions import BadRequest, NotFound
from services.enrich.service import EnrichService
from tests.enrich.conftest import SessionSource, fast_gate
from tests.enrich.replay import lookups_for

REPORT = """Dear abuse team,

we saw brute-force logins from 62.239.237.1 and 2001:4860:4860::8888 (also 10.0.0.7 internally)
against hxxps://portal.example[.]com/login, CVE-2021-44228.

-- 
SOC, soc@reporter.example.org
"""


@pytest.fixture
def worker(make_session, lookups):
    return worker_factory(EnrichService, db=SessionSource(make_session), lookups=lookups)


def test_ping_and_classify(worker):
    assert worker.ping() == {"service": "enrich", "ok": True}
    assert worker.classify_ip("192.0.2.1")["class"] == "documentation"
    with pytest.raises(BadRequest):
        worker.classify_ip("nope")


def test_extract(worker):
    found = worker.extract(REPORT)
    assert [(i["type"], i["value"]) for i in found] == [
        ("ipv4", "62.239.237.1"), ("ipv6", "2001:4860:4860::8888"), ("ipv4", "10.0.0.7"),
        ("url", "https://portal.example.com/login"), ("domain", "portal.example.com"), ("cve", "CVE-2021-44228"),
        ("email", "soc@reporter.example.org"), ("domain", "reporter.example.org")]
    assert worker.extract("", html="<p>from <b>203.0.113.7</b></p>")[0]["source"] == "html"
    with pytest.raises(BadRequest, match="text must be a string"):
        worker.extract(42)


def test_own_domains_from_the_module_setting(worker, monkeypatch):
    monkeypatch.setattr(enrich_service, "OWN_DOMAINS", ("example.org",))
    assert "soc@reporter.example.org" not in [i["value"] for i in worker.extract(REPORT)]


def test_lookup_ip(worker, lookups):
    result = worker.lookup_ip("62.239.237.1")
    assert (result["status"], result["name"], result["asn"], result["abuse_contact"], result["cached"]) == (
        "ok", "BT-CORPORATE", 2856, "zzdnsr@bt.com", False)
    assert worker.lookup_ip(" 62.239.237.1 ")["cached"] is True
    assert worker.lookup_ip("62.239.237.1", refresh=True)["cached"] is False
    with pytest.raises(BadRequest, match="not an IP address"):
        worker.lookup_ip("62.239.237")


def test_enrich_text_routes_by_lookup_asn(worker):
    worker.add_constituency("BT customers", [], [], ["AS2856"], "cert@bt.example.net")
    result = worker.enrich_text(REPORT)
    assert set(result) == {"schema", "indicators", "networks", "skipped", "constituency"}
    assert result["indicators"] == worker.extract(REPORT)
    assert sorted(result["networks"]) == ["2001:4860:4860::8888", "62.239.237.1"]  # public ones only
    assert result["networks"]["2001:4860:4860::8888"]["abuse_contact"] == "arin-contact@google.com"
    assert result["skipped"] == []
    assert result["constituency"] == {"name": "BT customers", "contact": "cert@bt.example.net",
                                      "matched": {"by": "asn", "value": "AS2856", "indicator": "62.239.237.1"}}


def test_enrich_text_never_raises_for_unreachable_registries(make_session):
    worker = worker_factory(EnrichService, db=SessionSource(make_session),
                            lookups=lookups_for(None, None, gate=fast_gate()))
    result = worker.enrich_text("from 74.125.225.229")
    net = result["networks"]["74.125.225.229"]
    assert net["status"] == "error" and len(net["errors"]) == 2
    assert result["constituency"] is None


def test_constituency_crud(worker):
    added = worker.add_constituency("Campus", ["192.0.2.0/24"], ["campus.example.net"], [64500], "cert@campus.example.net")
    assert added == {"name": "Campus", "contact": "cert@campus.example.net", "netblocks": ["192.0.2.0/24"],
                     "domains": ["campus.example.net"], "asns": [64500]}
    assert worker.list_constituencies() == [added]
    assert worker.enrich_text("scan from 192.0.2.44")["constituency"]["name"] == "Campus"
    with pytest.raises(BadRequest, match="exists"):
        worker.add_constituency("Campus", [], [], [], "x@campus.example.net")
    assert worker.delete_constituency("Campus") == added
    assert worker.list_constituencies() == []
    with pytest.raises(NotFound):
        worker.delete_constituency("Campus")


def test_enrich_text_keeps_to_its_time_budget(worker, lookups, monkeypatch):
    worker.lookup_ip("62.239.237.1")  # in the cache now
    monkeypatch.setattr(enrich_service, "TEXT_DEADLINE", 0.0)
    requests = dict(lookups.requests)
    result = worker.enrich_text("from 62.239.237.1 and 74.125.225.229")
    assert lookups.requests == requests
    assert result["networks"]["62.239.237.1"]["cached"] is True
    late = result["networks"]["74.125.225.229"]
    assert (late["status"], late["errors"]) == ("not_looked_up", ["no time left for a lookup"])
    monkeypatch.setattr(enrich_service, "TEXT_DEADLINE", 20.0)
    assert worker.enrich_text("from 74.125.225.229")["networks"]["74.125.225.229"]["status"] == "ok"
