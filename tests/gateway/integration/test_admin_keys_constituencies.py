"""The keys and constituencies admin pages against the running system (forms with CSRF)."""
from __future__ import annotations

import httpx

from tests.crypto.integration.test_keys_api import make_public_key
from tests.helpers import csrf_of, web_session


def test_import_trust_and_delete_a_key_on_the_admin_page(stack, api, marker):
    address = f"page-key-{marker}@example.net"
    armored = make_public_key(address)
    with web_session(stack) as web:
        page = web.get("/admin/keys").text
        r = web.post("/admin/keys", data={"csrf_token": csrf_of(page)}, files={"file": ("k.asc", armored)})
        assert r.status_code == 200 and address in r.text and "Imported openpgp" in r.text
        fp = next(k["fingerprint"] for k in api.get("/keys").json() if address in k.get("addresses", []))
        r = web.post("/admin/keys/change", data={"csrf_token": csrf_of(r.text), "fingerprint": fp, "action": "trust"})
        assert "trusted" in r.text and api.get(f"/keys/{fp}").json()["trusted"] is True
        r = web.post("/admin/keys/change", data={"csrf_token": csrf_of(r.text), "fingerprint": fp, "action": "delete"})
        assert f"Key {fp} deleted." in r.text and api.get(f"/keys/{fp}").status_code == 404
        # no CSRF token: refused
        assert web.post("/admin/keys/change", data={"fingerprint": fp, "action": "trust"}).status_code == 403


def test_add_a_routing_constituency_on_the_admin_page(stack, api, marker):
    name = f"page-c-{marker}"
    with web_session(stack) as web:
        page = web.get("/admin/constituencies").text
        r = web.post("/admin/constituencies", data={
            "csrf_token": csrf_of(page), "name": name, "contact": "noc@page.example",
            "netblocks": "198.18.0.0/15\n2001:db8:1::/48", "domains": "page.example", "asns": "AS64500",
            "queue": "general", "language": "de", "encryption": "pgp"})
        assert f"Constituency {name} added." in r.text and "198.18.0.0/15" in r.text and "AS64500" in r.text
    (c,) = [c for c in api.get("/constituencies").json() if c["name"] == name]
    assert (c["queue"], c["language"], c["encryption"], c["asns"]) == ("general", "de", "pgp", [64500])
    api.delete(f"/constituencies/{name}")


def test_the_admin_pages_are_for_administrators(stack, api, marker):
    password = "pw-" + marker
    api.post("/users", json={"username": f"nk-{marker}", "password": password, "role": "agent"})
    with web_session(stack, f"nk-{marker}", password) as web:
        assert web.get("/admin/keys").status_code == 403
        assert web.get("/admin/constituencies").status_code == 403
