"""osprey-poller without servers: the accounts file (what a good one becomes; every
mistake refused with a message naming the account and the key) and the resume state
(a real SQLite file). The polling itself: tests/ingest/integration/test_poller.py."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.ingest.poller import Account, ConfigError, State, load_accounts


def write(tmp_path: Path, doc) -> Path:
    path = tmp_path / "accounts.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def test_a_good_file_with_defaults(tmp_path):
    (tmp_path / "secret").write_text("s3cret\n")
    path = write(tmp_path, {"accounts": [
        {"name": "abuse", "protocol": "imaps", "host": "mail.example.net", "username": "abuse@example.net",
         "password_file": "secret", "queue": "abuse"},
        {"name": "cert-pop", "protocol": "pop3", "host": "pop.example.net", "port": 1110, "username": "cert",
         "password": "pw", "keep": True, "starttls": True, "action": "comment", "timeout": 5},
    ]})
    assert load_accounts(path) == [
        Account(name="abuse", protocol="imaps", host="mail.example.net", port=993, username="abuse@example.net",
                password=None, password_file=tmp_path / "secret", queue="abuse", action="correspond",
                folder="INBOX", done_folder="Osprey-done", failed_folder="Osprey-failed", delete=False,
                keep=False, tls_verify=True, ca_file=None, starttls=False, timeout=60.0),
        Account(name="cert-pop", protocol="pop3", host="pop.example.net", port=1110, username="cert",
                password="pw", password_file=None, queue="general", action="comment", folder="INBOX",
                done_folder=None, failed_folder=None, delete=False, keep=True, tls_verify=True, ca_file=None,
                starttls=True, timeout=5.0),
    ]
    abuse, pop = load_accounts(path)
    assert abuse.read_password() == "s3cret"
    assert (abuse.source, pop.source) == ("imap:abuse", "pop3:cert-pop")
    assert abuse.mailbox == "imap://abuse@example.net@mail.example.net:993/INBOX"


def test_imap_delete_and_keep_need_no_done_folder(tmp_path):
    base = {"protocol": "imap", "host": "h", "username": "u", "password": "p"}
    deleting, keeping = load_accounts(write(tmp_path, {"accounts": [
        {"name": "d", "delete": True, **base}, {"name": "k", "keep": True, "failed_folder": "Bad", **base}]}))
    assert (deleting.done_folder, deleting.delete, deleting.failed_folder) == (None, True, "Osprey-failed")
    assert (keeping.done_folder, keeping.keep, keeping.failed_folder) == (None, True, "Bad")


GOOD = {"name": "a", "protocol": "imap", "host": "h", "username": "u", "password": "p"}


@pytest.mark.parametrize("doc, message", [
    ("accounts: [", "is not valid YAML"),
    ({"mailboxes": []}, "expected one top-level key `accounts:`"),
    ({"accounts": [{**GOOD, "pasword": "x"}]}, "account 1 (a): unknown key(s) pasword"),
    ({"accounts": [{**GOOD, "protocol": "imap4"}]}, "account 1 (a): `protocol` must be one of imap, imaps, pop3, pop3s"),
    ({"accounts": [{k: v for k, v in GOOD.items() if k != "host"}]}, "account 1 (a): `host` must be a non-empty string"),
    ({"accounts": [{**GOOD, "password_file": "f"}]}, "give exactly one of `password` and `password_file`"),
    ({"accounts": [{**GOOD, "port": 70000}]}, "`port` must be a number from 1 to 65535"),
    ({"accounts": [{**GOOD, "keep": "yes please"}]}, "`keep` must be true or false"),
    ({"accounts": [{**GOOD, "keep": True, "delete": True}]}, "`delete: true` and `keep: true` exclude each other"),
    ({"accounts": [{**GOOD, "keep": True, "done_folder": "X"}]}, "`done_folder` makes no sense with"),
    ({"accounts": [{**GOOD, "done_folder": "INBOX"}]}, "`folder` must differ from `done_folder`"),
    ({"accounts": [{**GOOD, "protocol": "pop3", "done_folder": "X"}]}, "`done_folder` is for IMAP"),
    ({"accounts": [{**GOOD, "protocol": "imaps", "starttls": True}]}, "`starttls` is for imap/pop3"),
    ({"accounts": [{**GOOD, "action": "reply"}]}, "`action` must be one of correspond, comment"),
    ({"accounts": [{**GOOD, "name": "a b"}]}, "`name` may hold letters, digits"),
    ({"accounts": [GOOD, GOOD]}, "two accounts are named 'a'"),
])
def test_mistakes_are_refused_with_a_clear_message(tmp_path, doc, message):
    with pytest.raises(ConfigError) as err:
        load_accounts(write(tmp_path, doc))
    assert message in str(err.value)


def test_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.yaml: No such file or directory"):
        load_accounts(tmp_path / "nope.yaml")


def test_state_resumes_by_uid_and_a_new_uidvalidity_starts_over(tmp_path):
    acct, = load_accounts(write(tmp_path, {"accounts": [{**GOOD, "keep": True}]}))
    state = State(tmp_path / "ingest" / "poller.db")
    assert state.imap_last_uid(acct, 1000) == 0
    state.imap_done(acct, 1000, 7)
    state.close()
    state = State(tmp_path / "ingest" / "poller.db")          # a restart
    assert state.imap_last_uid(acct, 1000) == 7
    assert state.imap_last_uid(acct, 2000) == 0               # the folder was recreated: its UIDs are new
    state.imap_done(acct, 2000, 1)
    assert state.imap_last_uid(acct, 2000) == 1


def test_state_remembers_pop3_uidls_only_while_they_are_on_the_server(tmp_path):
    acct, = load_accounts(write(tmp_path, {"accounts": [{**GOOD, "protocol": "pop3", "keep": True}]}))
    state = State(tmp_path / "poller.db")
    state.pop3_mark(acct, "u1", "delivered")
    state.pop3_mark(acct, "u2", "failed")
    assert state.pop3_seen(acct) == {"u1": "delivered", "u2": "failed"}
    state.pop3_forget_except(acct, {"u2", "u3"})
    assert state.pop3_seen(acct) == {"u2": "failed"}
