"""Mail in → enrich finds its indicators → the ticket's fields and history show them,
against the running system (lookups off in the test stack: no outside requests)."""
from __future__ import annotations

from tests.helpers import make_mail, wait_for, web_session


def test_indicators_of_a_mail_land_on_its_ticket(stack, api, marker):
    raw = make_mail(f"Scan {marker}", f"Scanning from 198.51.100.23 and 8.8.8.8, see hxxp://evil[.]example/x "
                                       f"and CVE-2024-3094 {marker}; internal 10.1.2.3")
    assert stack.mailgate(raw).returncode == 0
    found = wait_for(lambda: api.get("/search", params={"q": marker}).json()["results"], timeout=60,
                     what="the ticket")
    tid = found[0]["id"]
    ticket = wait_for(lambda: (t := api.get(f"/tickets/{tid}").json())["indicators"] and t, timeout=60,
                      what="indicators on the ticket")
    values = {(i["type"], i["value"], i["class"]) for i in ticket["indicators"]}
    assert ("ipv4", "8.8.8.8", "global") in values
    assert ("ipv4", "198.51.100.23", "documentation") in values
    assert ("ipv4", "10.1.2.3", "private") in values
    assert ("cve", "CVE-2024-3094", None) in values
    assert ("url", "http://evil.example/x", None) in values
    assert ticket["fields"]["IP addresses"] == ["8.8.8.8"]          # only public addresses become the field
    entries = [h for h in ticket["history"] if h["actor"] == "enrich"]
    assert [h["action"] for h in entries] == ["changed", "enriched"]
    assert entries[0]["detail"]["field"] == "fields.IP addresses"


def test_the_ticket_page_lists_the_indicators(stack, api, marker):
    raw = make_mail(f"Phish {marker}", f"phishing at hxxps://bad[.]example/login from 9.9.9.9 {marker}")
    assert stack.mailgate(raw).returncode == 0
    found = wait_for(lambda: api.get("/search", params={"q": marker}).json()["results"], timeout=60, what="ticket")
    tid = found[0]["id"]
    wait_for(lambda: api.get(f"/tickets/{tid}").json()["indicators"], timeout=60, what="indicators")
    with web_session(stack) as web:
        page = web.get(f"/tickets/{tid}").text
    assert "https://bad.example/login" in page and "9.9.9.9" in page and 'id="indicators-h"' in page


def test_constituencies_and_lookups_through_api_and_cli(stack, api, marker):
    r = api.post("/constituencies", json={"name": f"c-{marker}", "contact": "noc@uni.example",
                                         "netblocks": ["192.0.2.0/24"], "domains": ["uni.example"]})
    assert r.status_code == 201, r.text
    assert f"c-{marker}" in [c["name"] for c in api.get("/constituencies").json()]
    assert f"c-{marker}".encode() in stack.cli("constituency", "list").stdout
    r = api.get("/ip/10.1.2.3")
    assert r.status_code == 200 and r.json()["status"] == "not_public"
    assert api.get("/ip/not-an-ip").status_code == 400
    out = stack.cli("enrich", "extract", "host 1.2.3[.]4 and evil[.]com")
    assert b"1.2.3.4" in out.stdout and b"evil.com" in out.stdout
    assert api.delete(f"/constituencies/c-{marker}").status_code == 200


def test_a_report_about_a_constituency_netblock_lands_in_its_queue(stack, api, marker):
    queue = f"campus-{marker}"
    assert api.post("/queues", json={"name": queue}).status_code == 201
    r = api.post("/constituencies", json={"name": f"campus {marker}", "contact": "noc@campus.example",
                                         "netblocks": ["203.0.113.0/25"], "queue": queue})
    assert r.status_code == 201 and r.json()["queue"] == queue
    raw = make_mail(f"Bot {marker}", f"infected host 203.0.113.17 {marker}")
    assert stack.mailgate(raw).returncode == 0
    tid = wait_for(lambda: api.get("/search", params={"q": marker}).json()["results"], timeout=60,
                   what="the ticket")[0]["id"]
    ticket = wait_for(lambda: (t := api.get(f"/tickets/{tid}").json())["queue"] == queue and t, timeout=60,
                      what="routing")
    assert ticket["fields"]["Constituency"] == f"campus {marker}"
    assert ticket["fields"]["Constituency contact"] == "noc@campus.example"
    api.delete(f"/constituencies/campus {marker}")
