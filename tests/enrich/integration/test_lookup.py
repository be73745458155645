"""Lookups against real local servers replaying the recorded RDAP and whois
answers of corpora/ipwhois-rir (tests/enrich/replay.py): what is extracted from
each recorded answer, the cache, timeouts, 429 backoff and the rate limit."""
from __future__ import annotations

import functools
import shutil
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.enrich.lookup import (BOOTSTRAP_DIR, BOOTSTRAP_FILES, RESULT_KEYS, Bootstrap, Gate, cached_lookup,
                                    update_bootstrap)
from tests.enrich.conftest import fast_gate
from tests.enrich.replay import IPS, RdapReplay, WhoisReplay, lookups_for

FIELDS = ("ip", "status", "class", "registry", "source", "name", "handle", "start", "end", "cidr", "asn",
          "country", "abuse_contact", "abuse_emails", "abuse_source", "errors", "cached")


def fields(result: dict) -> dict:
    assert tuple(result) == RESULT_KEYS
    return {k: result[k] for k in FIELDS}


def expect(ip, registry, source, name, handle, start, end, cidr, asn, country, abuse, emails, abuse_source,
           errors=()):
    return {"ip": ip, "status": "ok", "class": "global", "registry": registry, "source": source, "name": name,
            "handle": handle, "start": start, "end": end, "cidr": cidr, "asn": asn, "country": country,
            "abuse_contact": abuse, "abuse_emails": emails, "abuse_source": abuse_source, "errors": list(errors),
            "cached": False}


BT = ["zzdnsr@bt.com", "steve.a.marshall@bt.com", "lee.bailey-hague@bt.com"]
MTN_CIDR = ["196.11.239.0/24", "196.11.240.0/22", "196.11.244.0/23", "196.11.246.0/24"]

# What each recorded RDAP answer says (no whois asked). Old recordings (2015): no
# ASN in any RDAP answer, ARIN gives no country, AfriNIC's entities have no roles
# (196.11.240.215's abuse address is on a remark), LACNIC answered start = end =
# the address asked, RIPE's abuse entity lists its role's e-mail attributes.
RDAP = {
    "196.11.240.215": expect("196.11.240.215", "afrinic", "rdap", "ORG-VSA1-AFRINIC", "196.11.239.0 - 196.11.246.255",
                             "196.11.239.0", "196.11.246.255", MTN_CIDR, None, "ZA", "abuse@mtnbusiness.co.za",
                             ["abuse@mtnbusiness.co.za"], "rdap:remarks"),
    "62.239.237.1": expect("62.239.237.1", "ripe", "rdap", "BT-CORPORATE", "62.239.237.0 - 62.239.237.255",
                           "62.239.237.0", "62.239.237.255", ["62.239.237.0/24"], None, "GB", "zzdnsr@bt.com", BT,
                           "rdap:abuse-entity"),
    "210.107.73.73": expect("210.107.73.73", "apnic", "rdap", "BORANET-NET-210-107", "210.107.0.0 - 210.107.127.255",
                            "210.107.0.0", "210.107.127.255", ["210.107.0.0/17"], None, "KR", "hostmaster@nic.or.kr",
                            ["hostmaster@nic.or.kr"], "rdap:abuse-entity"),
    "2001:4860:4860::8888": expect("2001:4860:4860::8888", "arin", "rdap", "GOOGLE-IPV6", "NET6-2001-4860-1",
                                   "2001:4860::", "2001:4860:ffff:ffff:ffff:ffff:ffff:ffff", ["2001:4860::/32"], None,
                                   None, "arin-contact@google.com", ["arin-contact@google.com"], "rdap:abuse-entity"),
    "2801:10:c000::": expect("2801:10:c000::", "lacnic", "rdap", "Universidad Catolica de Oriente", "2801:10:c000::",
                             "2801:10:c000::", "2801:10:c000::", ["2801:10:c000::/128"], None, "CO",
                             "sistemas.red@uco.edu.co", ["sistemas.red@uco.edu.co"], "rdap:abuse-entity"),
    "2a00:2381:ffff::1": expect("2a00:2381:ffff::1", "ripe", "rdap", "BT-WORLD-IPVSIX-LAUNCH", "2a00:2381:ffff::/64",
                                "2a00:2381:ffff::", "2a00:2381:ffff:0:ffff:ffff:ffff:ffff", ["2a00:2381:ffff::/64"],
                                None, "GB", "zzdnsr@bt.com", BT, "rdap:abuse-entity"),
    "74.125.225.229": expect("74.125.225.229", "arin", "rdap", "GOOGLE", "NET-74-125-0-0-1", "74.125.0.0",
                             "74.125.255.255", ["74.125.0.0/16"], None, None, "arin-contact@google.com",
                             ["arin-contact@google.com"], "rdap:abuse-entity"),
    "2001:43f8:7b0::": expect("2001:43f8:7b0::", "afrinic", "rdap", "ORG-TA38-AFRINIC", "2001:43f8:07b0::/48",
                              "2001:43f8:7b0::", "2001:43f8:7b0:ffff:ffff:ffff:ffff:ffff", ["2001:43f8:7b0::/48"],
                              None, "KE", None, [], None),
    "200.57.141.161": expect("200.57.141.161", "lacnic", "rdap", "Triara.com, S.A. de C.V.", "200.57.141.161",
                             "200.57.141.161", "200.57.141.161", ["200.57.141.161/32"], None, "MX",
                             "operacion.redes@triara.com", ["operacion.redes@triara.com"], "rdap:abuse-entity"),
    "2001:240:10c:1::ca20:9d1d": expect("2001:240:10c:1::ca20:9d1d", "apnic", "rdap", "IIJ-JPNIC-JP-20000308",
                                        "2001:0240::/32", "2001:240::", "2001:240:ffff:ffff:ffff:ffff:ffff:ffff",
                                        ["2001:240::/32"], None, "JP", None, [], None),
}


def refused(registry):
    return [f"rdap:{registry}: ConnectError: [Errno 111] Connection refused"]


# What each recorded whois answer says (reached through whois.iana.org's refer:).
# The most specific network object holding the address wins (APNIC returns the
# JPNIC /48 and the KRNIC-mirrored /17 beside larger blocks); RIPE's "% Abuse
# contact" line, ARIN's RAbuseEmail/OrgAbuseEmail, LACNIC's abuse-c, APNIC's
# mnt-irt and AfriNIC's remark give the abuse address; ASNs from ARIN's OriginAS
# and RIPE's route objects.
WHOIS = {
    "196.11.240.215": expect("196.11.240.215", "afrinic", "whois", "NET-196-11-239-0", None, "196.11.239.0",
                             "196.11.246.255", MTN_CIDR, None, "ZA", "abuse@mtnbusiness.co.za",
                             ["abuse@mtnbusiness.co.za"], "whois:remarks", refused("afrinic")),
    "62.239.237.1": expect("62.239.237.1", "ripe", "whois", "BT-CORPORATE", None, "62.239.237.0", "62.239.237.255",
                           ["62.239.237.0/24"], 2856, "GB", "protect@bt.com", ["protect@bt.com"],
                           "whois:abuse-contact", refused("ripe")),
    "210.107.73.73": expect("210.107.73.73", "apnic", "whois", "BORANET-NET-210-107", None, "210.107.0.0",
                            "210.107.127.255", ["210.107.0.0/17"], None, "KR", "hostmaster@nic.or.kr",
                            ["hostmaster@nic.or.kr"], "whois:mnt-irt", refused("apnic")),
    "2001:4860:4860::8888": expect("2001:4860:4860::8888", "arin", "whois", "GOOGLE-IPV6", "NET6-2001-4860-1",
                                   "2001:4860::", "2001:4860:ffff:ffff:ffff:ffff:ffff:ffff", ["2001:4860::/32"], 15169,
                                   "US", "arin-contact@google.com", ["arin-contact@google.com"], "whois:rabuseemail",
                                   refused("arin")),
    "2801:10:c000::": expect("2801:10:c000::", "lacnic", "whois", "Universidad Catolica de Oriente", None,
                             "2801:10:c000::", "2801:10:c000:ffff:ffff:ffff:ffff:ffff", ["2801:10:c000::/48"], None,
                             "CO", "sistemas.red@uco.edu.co", ["sistemas.red@uco.edu.co"], "whois:abuse-c",
                             refused("lacnic")),
    "2a00:2381:ffff::1": expect("2a00:2381:ffff::1", "ripe", "whois", "BT-WORLD-IPVSIX-LAUNCH", None,
                                "2a00:2381:ffff::", "2a00:2381:ffff:0:ffff:ffff:ffff:ffff", ["2a00:2381:ffff::/64"],
                                2856, "GB", "protect@bt.com", ["protect@bt.com"], "whois:abuse-contact",
                                refused("ripe")),
    "74.125.225.229": expect("74.125.225.229", "arin", "whois", "GOOGLE", "NET-74-125-0-0-1", "74.125.0.0",
                             "74.125.255.255", ["74.125.0.0/16"], None, "US", "arin-contact@google.com",
                             ["arin-contact@google.com"], "whois:orgabuseemail", refused("arin")),
    "2001:43f8:7b0::": expect("2001:43f8:7b0::", "afrinic", "whois", "Tespok", None, "2001:43f8:7b0::",
                              "2001:43f8:7b0:ffff:ffff:ffff:ffff:ffff", ["2001:43f8:7b0::/48"], None, "KE", None, [],
                              None, refused("afrinic")),
    "200.57.141.161": expect("200.57.141.161", "lacnic", "whois", "Triara.com, S.A. de C.V.", None, "200.57.128.0",
                             "200.57.159.255", ["200.57.128.0/19"], None, "MX", "operacion.redes@triara.com",
                             ["operacion.redes@triara.com"], "whois:abuse-c", refused("lacnic")),
    "2001:240:10c:1::ca20:9d1d": expect("2001:240:10c:1::ca20:9d1d", "apnic", "whois", "IIJ-PRJNET", None,
                                        "2001:240:10c::", "2001:240:10c:ffff:ffff:ffff:ffff:ffff",
                                        ["2001:240:10c::/48"], None, "JP", None, [], None, refused("apnic")),
}


def test_the_corpus_has_the_ten_addresses():
    assert sorted(IPS) == sorted(RDAP) == sorted(WHOIS)


@pytest.mark.parametrize("ip", list(RDAP))
def test_rdap(ip, rdap, whois):
    client = lookups_for(rdap, whois, gate=fast_gate(), complete=False)
    before = whois.total()
    assert fields(client.lookup(ip)) == RDAP[ip]
    assert client.requests == {"rdap": 1, "whois": 0} and whois.total() == before


@pytest.mark.parametrize("ip", list(WHOIS))
def test_whois_fallback(ip, whois):
    client = lookups_for(None, whois, gate=fast_gate())
    assert fields(client.lookup(ip)) == WHOIS[ip]
    assert client.requests == {"rdap": 1, "whois": 2}  # whois.iana.org, then the RIR it refers to


def test_whois_completes_rdap(lookups):
    """RDAP first; whois fills what RDAP left empty (here ASN and country), the RDAP
    answer's own fields stay."""
    result = fields(lookups.lookup("2001:4860:4860::8888"))
    assert result == {**RDAP["2001:4860:4860::8888"], "source": "rdap+whois", "asn": 15169, "country": "US"}
    result = fields(lookups.lookup("62.239.237.1"))
    assert result == {**RDAP["62.239.237.1"], "source": "rdap+whois", "asn": 2856}


def test_queries_go_to_the_referred_registry(whois):
    client = lookups_for(None, whois, gate=fast_gate())
    arin_before = whois.queries("whois.arin.net")
    iana_before = len(whois.queries("whois.iana.org"))
    client.lookup("74.125.225.229")
    client.lookup("74.125.225.229")
    assert whois.queries("whois.arin.net")[len(arin_before):] == ["n + 74.125.225.229"] * 2
    # IANA was asked once: its answer's block (74.0.0.0/8) is remembered
    assert len(whois.queries("whois.iana.org")) == iana_before + 1


def test_not_public_is_not_looked_up(lookups):
    result = lookups.lookup("10.1.2.3")
    assert (result["status"], result["class"], result["errors"]) == (
        "not_public", "private", ["private address: no registry holds it"])
    assert lookups.requests == {"rdap": 0, "whois": 0}


def test_cache_hit_avoids_a_second_request(make_session, lookups, rdap):
    first = cached_lookup(make_session, lookups, "210.107.73.73")
    requests = dict(lookups.requests)
    second = cached_lookup(make_session, lookups, "210.107.73.73")
    assert lookups.requests == requests
    assert second["cached"] is True and first["cached"] is False
    assert {**second, "cached": False} == first
    third = cached_lookup(make_session, lookups, "210.107.73.73", refresh=True)
    assert lookups.requests["rdap"] == requests["rdap"] + 1 and third["cached"] is False


def test_failures_are_cached_briefly(make_session):
    client = lookups_for(None, None, gate=fast_gate())
    failed = cached_lookup(make_session, client, "62.239.237.1")
    assert failed["status"] == "error" and failed["errors"] == [
        "rdap:ripe: ConnectError: [Errno 111] Connection refused",
        "whois:whois.iana.org: whois.iana.org: Connection refused"]
    assert cached_lookup(make_session, client, "62.239.237.1")["cached"] is True
    assert client.requests == {"rdap": 1, "whois": 1}
    # an answer past its time is looked up again
    assert cached_lookup(make_session, client, "74.125.225.229", error_ttl=0)["cached"] is False
    assert cached_lookup(make_session, client, "74.125.225.229")["cached"] is False
    assert client.requests == {"rdap": 3, "whois": 3}


def test_silent_servers_give_an_error_result_in_time():
    rdap, whois = RdapReplay(silent=True).start(), WhoisReplay(silent=True).start()
    try:
        gate = Gate(rate=1000.0, burst=1000, max_wait=0.2)
        client = lookups_for(rdap, whois, gate=gate, rdap_timeout=0.5, whois_timeout=0.5, deadline=3.0)
        started = time.monotonic()
        result = client.lookup("62.239.237.1")
        elapsed = time.monotonic() - started
        assert result["status"] == "error"
        assert result["errors"] == ["rdap:ripe: timed out after 0.5s (backing off 2.0s)",
                                    "whois:whois.iana.org: whois.iana.org timed out (backing off 2.0s)"]
        assert elapsed < 1.5
        # within the backoff the silent registry is not asked again
        again = client.lookup("62.239.237.1")
        assert again["errors"][0].startswith("rdap:ripe: backing off for")
        assert len(rdap.requests) == 1
    finally:
        rdap.stop()
        whois.stop()


def test_a_429_is_retried_after_its_retry_after(rdap, whois):
    client = lookups_for(rdap, whois, gate=fast_gate(), complete=False)
    rdap.plan.append((429, {"Retry-After": "0.4"}))
    before = len(rdap.requests)
    started = time.monotonic()
    result = client.lookup("200.57.141.161")
    assert time.monotonic() - started >= 0.4
    assert fields(result) == RDAP["200.57.141.161"]
    assert rdap.requests[before:] == ["/lacnic/ip/200.57.141.161"] * 2


def test_a_long_retry_after_falls_back_to_whois_and_holds_off(rdap, whois):
    client = lookups_for(rdap, whois, gate=fast_gate(), complete=False)
    rdap.plan.append((429, {"Retry-After": "120"}))
    before = len(rdap.requests)
    result = client.lookup("74.125.225.229")
    assert (result["status"], result["source"], result["abuse_contact"]) == ("ok", "whois", "arin-contact@google.com")
    assert result["errors"] == ["rdap:arin: backing off for 120.0s more"]
    # the other ARIN address: RDAP not asked at all while ARIN's backoff lasts
    result = client.lookup("2001:4860:4860::8888")
    assert result["source"] == "whois" and result["errors"] == ["rdap:arin: backing off for 120.0s more"]
    assert len(rdap.requests) == before + 1


def test_rate_limit_per_registry(rdap, whois):
    client = lookups_for(rdap, whois, gate=Gate(rate=5.0, burst=1), complete=False)
    started = time.monotonic()
    for _ in range(4):
        assert client.lookup("62.239.237.1")["status"] == "ok"
    ripe = time.monotonic() - started
    assert ripe >= 0.55  # 1 at once, then one per 0.2 s
    started = time.monotonic()
    client.lookup("74.125.225.229")  # another registry is not held up by RIPE's bucket
    assert time.monotonic() - started < 0.15


def test_bootstrap_names_each_recorded_registry():
    boot = Bootstrap.load()
    from ipaddress import ip_address
    from tests.enrich.replay import registry
    from services.enrich.lookup import registry_of
    for ip in IPS:
        assert registry_of(boot.rdap_base(ip_address(ip))) == registry(ip)
    assert boot.rdap_base(ip_address("8.8.8.8")) is None
    assert boot.rdap_base_asn(2856) == "https://rdap.db.ripe.net/"


def test_update_bootstrap_from_a_mirror(tmp_path):
    """`osprey enrich update-bootstrap` fetches the three files (here from a local
    copy of data.iana.org/rdap/) and replaces the local ones."""
    mirror = tmp_path / "mirror"
    shutil.copytree(BOOTSTRAP_DIR, mirror)
    target = tmp_path / "data"
    target.mkdir()
    (target / "ipv4.json").write_text("{}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(SimpleHTTPRequestHandler, directory=str(mirror)))
    SimpleHTTPRequestHandler.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        counts = update_bootstrap(target, f"http://127.0.0.1:{server.server_address[1]}/")
    finally:
        server.shutdown()
        server.server_close()
    assert counts == {"ipv4.json": 5, "ipv6.json": 5, "asn.json": 5}
    for name in BOOTSTRAP_FILES:
        assert (target / name).read_text() == (BOOTSTRAP_DIR / name).read_text()
