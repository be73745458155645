"""Signed and encrypted mail through the whole system: mailgate → ingest → crypto →
tickets; the article carries crypto's honest status, the raw original stays the
evidence and a decrypted mail's attachments come from its unwrapped MIME."""
from __future__ import annotations

import hashlib
import subprocess
import tempfile
from email.message import EmailMessage

import httpx

from tests.helpers import wait_for, web_session


class Gpg:
    def __init__(self, home: str):
        self.home = home

    def run(self, *args: str, data: bytes | None = None) -> bytes:
        return subprocess.run(["gpg", "--homedir", self.home, "--batch", "--yes", "--pinentry-mode", "loopback",
                               "--passphrase", "", *args], input=data, check=True, capture_output=True,
                              timeout=60).stdout

    def kill(self):
        subprocess.run(["gpgconf", "--homedir", self.home, "--kill", "all"], capture_output=True, timeout=30)


def article_of(api, marker):
    found = wait_for(lambda: api.get("/search", params={"q": marker}).json()["results"], timeout=60, what="ticket")
    return api.get(f"/tickets/{found[0]['id']}/articles").json()[0]


def clearsigned_mail(gpg: Gpg, sender: str, subject: str, text: str) -> bytes:
    signed = gpg.run("--local-user", sender, "--clearsign", data=text.encode()).decode()
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "csirt@example.org", subject
    msg["Message-ID"] = f"<{hashlib.sha1(subject.encode()).hexdigest()}@example.net>"
    msg.set_content(signed, cte="7bit")
    return msg.as_bytes()


def test_signed_mail_is_verified_only_with_a_trusted_key_from_the_sender(stack, api, marker):
    sender = f"reporter-{marker}@example.net"
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as home:
        gpg = Gpg(home)
        gpg.run("--quick-gen-key", sender, "ed25519", "sign", "1y")
        public = gpg.run("--armor", "--export", sender)
        unknown = clearsigned_mail(gpg, sender, f"unknown key {marker}", f"scan from 192.0.2.8 {marker}-a\n")
        assert stack.mailgate(unknown).returncode == 0
        first = article_of(api, f"{marker}-a")
        assert first["security"]["signature"] == "unknown-key" and first["security"]["verdict"] != "verified"

        fp = api.post("/keys", content=public).json()[0]["fingerprint"]
        api.patch(f"/keys/{fp}", json={"trusted": True})
        good = clearsigned_mail(gpg, sender, f"trusted key {marker}", f"scan from 192.0.2.9 {marker}-b\n")
        assert stack.mailgate(good).returncode == 0
        second = article_of(api, f"{marker}-b")
        assert second["security"]["verdict"] == "verified" and second["security"]["signature"] == "good"

        # the same signed text prepended with words of an attacker: never "verified"
        tampered = good.replace(b"-----BEGIN PGP SIGNED MESSAGE-----",
                                f"URGENT: wire money {marker}-c\n\n-----BEGIN PGP SIGNED MESSAGE-----".encode(), 1)
        assert stack.mailgate(tampered).returncode == 0
        third = article_of(api, f"{marker}-c")
        assert third["security"]["verdict"] != "verified" and third["security"]["covers_all"] is False
        gpg.kill()


def test_encrypted_mail_is_decrypted_and_its_original_kept(stack, api, token, marker):
    team = f"team-{marker}@example.org"
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as home:
        gpg = Gpg(home)
        gpg.run("--quick-gen-key", team, "ed25519", "sign", "1y")
        fp = gpg.run("--list-keys", "--with-colons", team).decode().split("fpr:::::::::")[1].split(":")[0]
        gpg.run("--quick-add-key", fp, "cv25519", "encr", "1y")
        secret = gpg.run("--armor", "--export-secret-keys", team)
        assert api.post("/keys", content=secret).status_code == 201
        inner = EmailMessage()
        inner.set_content(f"compromised host 192.0.2.77 {marker}\n")
        inner.add_attachment(b"evidence bytes\n", maintype="text", subtype="plain", filename="evidence.txt")
        ciphertext = gpg.run("--armor", "--trust-model", "always", "--recipient", team, "--encrypt",
                             data=inner.as_bytes()).decode()
        gpg.kill()
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = "partner@example.net", team, f"encrypted {marker}"
    outer.set_type("multipart/encrypted")
    outer.set_param("protocol", "application/pgp-encrypted")
    control = EmailMessage()
    control.set_content("Version: 1\n", subtype="pgp-encrypted", cte="7bit")
    del control["Content-Type"]
    control["Content-Type"] = "application/pgp-encrypted"
    data = EmailMessage()
    data.set_content(ciphertext, cte="7bit")
    del data["Content-Type"]
    data["Content-Type"] = 'application/octet-stream; name="encrypted.asc"'
    outer.attach(control)
    outer.attach(data)
    raw = outer.as_bytes()
    assert stack.mailgate(raw).returncode == 0
    article = article_of(api, marker)
    sec = article["security"]
    assert sec["encrypted"] is True and sec["decrypted"] is True and sec["verdict"] == "encrypted-only"
    assert marker in article["body_text"] and article["mime_sha256"] != article["raw_sha256"]
    with httpx.Client(base_url=f"{stack.url}/api/v1", headers={"Authorization": f"Bearer {token}"}) as c:
        assert c.get(f"/articles/{article['id']}/raw").content == raw          # the evidence, byte-exact
        (att,) = [a for a in article["attachments"] if a["filename"] == "evidence.txt"]
        assert c.get(f"/attachments/{att['id']}").content == b"evidence bytes\n"


def test_the_ticket_page_shows_the_status_and_green_only_for_verified(stack, api, marker):
    sender = f"page-{marker}@example.net"
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as home:
        gpg = Gpg(home)
        gpg.run("--quick-gen-key", sender, "ed25519", "sign", "1y")
        raw = clearsigned_mail(gpg, sender, f"page {marker}", f"host 192.0.2.10 {marker}\n")
        gpg.kill()
    assert stack.mailgate(raw).returncode == 0
    article = article_of(api, marker)
    with web_session(stack) as web:
        page = web.get(f"/tickets/{article['ticket_id']}").text
    assert "security-unverified" in page and "signature not verified" in page
    assert "security-verified" not in page and "signature: unknown-key" in page


def test_commands_by_mail_apply_only_from_a_verified_staff_member(stack, api, marker):
    staff = f"staff-{marker}@csirt.example"
    password = "pw-" + marker
    assert api.post("/users", json={"username": f"s-{marker}", "password": password, "role": "agent",
                                    "email": staff}).status_code == 201
    r = api.post("/tickets", json={"queue": "general", "subject": f"cmd {marker}", "text": f"start {marker}"})
    tid = r.json()["id"]
    with tempfile.TemporaryDirectory(prefix="g", dir="/tmp") as home:
        gpg = Gpg(home)
        gpg.run("--quick-gen-key", staff, "ed25519", "sign", "1y")
        fp = api.post("/keys", content=gpg.run("--armor", "--export", staff)).json()[0]["fingerprint"]
        api.patch(f"/keys/{fp}", json={"trusted": True})
        good = clearsigned_mail(gpg, staff, f"Re: [Osprey #{tid}] cmd {marker}",
                                f"Status: open\nPriority: 77\n\nhandled, {marker}-ok\n")
        gpg.kill()
    assert stack.mailgate(good).returncode == 0
    ticket = wait_for(lambda: (t := api.get(f"/tickets/{tid}").json())["priority"] == 77 and t, timeout=60,
                      what="the commands applied")
    assert ticket["state"] == "open"
    # the same commands unsigned: shown as text, flagged, nothing changes
    forged = EmailMessage()
    forged["From"], forged["To"] = staff, "csirt@example.org"
    forged["Subject"] = f"Re: [Osprey #{tid}] cmd {marker}"
    forged.set_content(f"Status: resolved\nOutcome: solved\n\nforged {marker}-forged\n")
    assert stack.mailgate(forged.as_bytes()).returncode == 0
    article = wait_for(lambda: [a for a in api.get(f"/tickets/{tid}/articles").json()
                                if f"{marker}-forged" in a["body_text"]], timeout=60, what="the forged mail")[0]
    assert article["auto"]["commands"]["applied"] is False
    assert api.get(f"/tickets/{tid}").json()["state"] == "open"
