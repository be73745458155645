"""Constituencies in a real SQLite database (routing.py): validation, storage,
and which one a set of indicators is routed to."""
import pytest

from services.enrich import routing
from services.enrich.exceptions import BadRequest, NotFound
from services.enrich.indicators import extract

UNI = dict(name="University", netblocks=["198.51.100.0/24", "2001:db8:100::/48"], domains=["uni.example.net"],
           asns=["AS64500"], contact="CERT@uni.example.net")
DEPT = dict(name="Physics", netblocks=["198.51.100.128-198.51.100.191"], domains=["phys.uni.example.net"], asns=[],
            contact="noc@phys.uni.example.net")
ISP = dict(name="ISP", netblocks=["198.51.0.0/16"], domains=["isp.example.com"], asns=[64501, "2856"],
           contact="abuse@isp.example.com")


@pytest.fixture
def session(make_session):
    with make_session() as session:
        for c in (UNI, DEPT, ISP):
            routing.add_constituency(session, **c)
        session.commit()
        yield session


def test_stored_and_listed(session):
    assert routing.list_constituencies(session) == [
        {"name": "ISP", "contact": "abuse@isp.example.com", "netblocks": ["198.51.0.0/16"], "domains": ["isp.example.com"],
         "asns": [64501, 2856]},
        {"name": "Physics", "contact": "noc@phys.uni.example.net", "netblocks": ["198.51.100.128-198.51.100.191"],
         "domains": ["phys.uni.example.net"], "asns": []},
        {"name": "University", "contact": "cert@uni.example.net", "netblocks": ["198.51.100.0/24", "2001:db8:100::/48"],
         "domains": ["uni.example.net"], "asns": [64500]},
    ]


@pytest.mark.parametrize("args,message", [
    (dict(UNI), "constituency 'University' exists"),
    (dict(UNI, name=" "), "a constituency needs a name"),
    (dict(UNI, name="X", netblocks=["198.51.100.0/33"]), "not an IP network or range: '198.51.100.0/33'"),
    (dict(UNI, name="X", netblocks=["10.0.0.9-10.0.0.1"]), "not an IP network or range"),
    (dict(UNI, name="X", domains=["no_dots"]), "not a domain: 'no_dots'"),
    (dict(UNI, name="X", asns=["ASX"]), "not an AS number: 'ASX'"),
    (dict(UNI, name="X", asns=[2 ** 32]), "not an AS number"),
    (dict(UNI, name="X", contact="nobody"), "not an e-mail address: 'nobody'"),
    (dict(UNI, name="X", netblocks="198.51.100.0/24"), "netblocks and domains are lists"),
])
def test_refused(session, args, message):
    with pytest.raises(BadRequest, match=message):
        routing.add_constituency(session, **args)


def test_delete(session):
    assert routing.delete_constituency(session, "Physics")["name"] == "Physics"
    session.commit()
    assert [c["name"] for c in routing.list_constituencies(session)] == ["ISP", "University"]
    with pytest.raises(NotFound, match="no constituency 'Physics'"):
        routing.delete_constituency(session, "Physics")


def route(session, text, networks=None):
    return routing.route(session, extract(text), networks)


@pytest.mark.parametrize("text,expected", [
    # the most specific netblock wins, whatever the order in the text
    ("scan from 198.51.7.7 and 198.51.100.20", ("University", "netblock", "198.51.100.0/24", "198.51.100.20")),
    ("scan from 198.51.100.150 and 198.51.100.20",
     ("Physics", "netblock", "198.51.100.128-198.51.100.191", "198.51.100.150")),
    ("from 198.51.7.7", ("ISP", "netblock", "198.51.0.0/16", "198.51.7.7")),
    ("v6 2001:db8:100:5::1", ("University", "netblock", "2001:db8:100::/48", "2001:db8:100:5::1")),
    # a network or range indicator matches a netblock that holds all of it
    ("block 198.51.100.128/27", ("Physics", "netblock", "198.51.100.128-198.51.100.191", "198.51.100.128/27")),
    ("block 198.51.100.0/23", ("ISP", "netblock", "198.51.0.0/16", "198.51.100.0/23")),
    # netblocks before domains; the longest domain wins
    ("host www.phys.uni.example.net at 198.51.7.7", ("ISP", "netblock", "198.51.0.0/16", "198.51.7.7")),
    ("see https://www.phys.uni.example.net/x and mail.uni.example.net",
     ("Physics", "domain", "phys.uni.example.net", "www.phys.uni.example.net")),
    ("write to someone@UNI.example.net", ("University", "domain", "uni.example.net", "uni.example.net")),
    ("nothing of ours: 203.0.113.9, other.example", None),
])
def test_route(session, text, expected):
    result = route(session, text)
    if expected is None:
        assert result is None
        return
    name, by, value, indicator = expected
    contact = {"University": "cert@uni.example.net", "Physics": "noc@phys.uni.example.net", "ISP": "abuse@isp.example.com"}[name]
    assert result == {"name": name, "contact": contact, "matched": {"by": by, "value": value, "indicator": indicator}}


def test_route_by_asn_of_a_lookup(session):
    networks = {"62.239.237.1": {"asn": 2856}, "203.0.113.9": {"asn": None}}
    assert route(session, "from 203.0.113.9 and 62.239.237.1 (bt.example)", networks) == {
        "name": "ISP", "contact": "abuse@isp.example.com",
        "matched": {"by": "asn", "value": "AS2856", "indicator": "62.239.237.1"}}
    # ASN before domain
    assert route(session, "62.239.237.1 www.uni.example.net", networks)["matched"]["by"] == "asn"
