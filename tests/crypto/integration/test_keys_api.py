"""Keys through the REST API and the osprey CLI against the running system."""
from __future__ import annotations

import json
import subprocess
import tempfile

import httpx


def make_public_key(address: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="kg", dir="/tmp") as home:
        subprocess.run(["gpg", "--homedir", home, "--batch", "--passphrase", "", "--quick-gen-key", address,
                        "ed25519", "sign", "1y"], check=True, capture_output=True, timeout=60)
        armored = subprocess.run(["gpg", "--homedir", home, "--armor", "--export", address], check=True,
                                 capture_output=True, timeout=60).stdout
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, timeout=30)
    return armored


def test_import_trust_list_and_delete_a_key(stack, api, token, marker):
    address = f"soc-{marker}@example.net"
    armored = make_public_key(address)
    r = api.post("/keys", content=b"not a key at all")
    assert r.status_code == 400
    r = api.post("/keys", content=armored)
    assert r.status_code == 201, r.text
    (record,) = r.json()
    assert record["kind"] == "openpgp" and address in record["addresses"] and record["trusted"] is False
    fp = record["fingerprint"]
    r = api.patch(f"/keys/{fp}", json={"trusted": True})
    assert r.status_code == 200 and r.json()["trusted"] is True
    listed = json.loads(stack.cli("keys", "list", "--json").stdout)
    assert [k["trusted"] for k in listed if k.get("fingerprint") == fp] == [True]
    assert fp.encode() in stack.cli("keys", "list").stdout
    assert stack.cli("keys", "delete", fp).returncode == 0
    assert api.get(f"/keys/{fp}").status_code == 404


def test_keys_are_for_administrators_only(stack, api, marker):
    password = "pw-" + marker
    api.post("/users", json={"username": f"k-{marker}", "password": password, "role": "agent"})
    agent = httpx.post(f"{stack.url}/api/v1/tokens", json={"username": f"k-{marker}", "password": password}).json()
    r = httpx.get(f"{stack.url}/api/v1/keys", headers={"Authorization": f"Bearer {agent['token']}"})
    assert r.status_code == 403
