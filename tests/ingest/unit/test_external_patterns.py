"""The site's own per-sender patterns for other teams' ticket numbers
(followup.load_patterns / external_refs), and threading by them through the real
pipeline and a real tickets database."""
from __future__ import annotations

import re
import textwrap

import pytest

from osprey import contracts
from services.ingest import followup, models as ingest_models, pipeline
from services.ingest.rawstore import RawStore
from services.tickets import models as tickets_models
from tests.helpers import make_mail
from tests.unit_fixtures import TicketsOverSQLite, ingest_db, tickets_db

GOOD = """\
patterns:
  - sender: cert.example.de
    system: certbund
    regex: '\\[CB-Report#(\\d+)\\]'
  - sender: noc@isp.example
    system: isp-noc
    regex: 'Case (\\d{6})'
  - sender: "*"
    system: jira-sec
    regex: '\\b(SEC-\\d+)\\b'
    ignore_case: true
"""


def write(tmp_path, text: str):
    path = tmp_path / "patterns.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_file_loads_in_order(tmp_path):
    patterns = followup.load_patterns(write(tmp_path, GOOD))
    assert [(p.sender, p.system, p.regex.pattern, bool(p.regex.flags & re.IGNORECASE)) for p in patterns] == [
        ("cert.example.de", "certbund", r"\[CB-Report#(\d+)\]", False),
        ("noc@isp.example", "isp-noc", r"Case (\d{6})", False),
        ("*", "jira-sec", r"\b(SEC-\d+)\b", True)]


def test_no_file_is_no_patterns(tmp_path):
    assert followup.load_patterns("") == ()
    assert followup.EXTERNAL_REF_PATTERNS_FILE == "" and followup.load_patterns() == ()
    assert followup.load_patterns(write(tmp_path, "# nothing yet\n")) == ()
    assert followup.load_patterns(write(tmp_path, "patterns: []\n")) == ()


@pytest.mark.parametrize("text, message", [
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: '(\\d+'\n",
     r"pattern 1 \(x\): `regex` '\(\\\\d\+' is not a valid regular expression: missing \), unterminated subpattern"),
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: 'INC\\d+'\n",
     r"pattern 1 \(x\): `regex` 'INC\\\\d\+' must have exactly one group \(the number\), it has 0"),
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: '(A)-(\\d+)'\n",
     r"must have exactly one group \(the number\), it has 2; write other groups as \(\?:\.\.\.\)"),
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: '(\\d*)'\n", r"matches an empty subject"),
    ("patterns:\n  - sender: a.example\n    system: x\n", r"pattern 1: `regex` must be a non-empty string"),
    ("patterns:\n  - sender: a.example\n    system: 'two words'\n    regex: '(\\d+)'\n",
     r"`system` may hold letters, digits"),
    ("patterns:\n  - sender: 'not a domain'\n    system: x\n    regex: '(\\d+)'\n",
     r"`sender` must be a domain \(example.org\), an address \(noc@example.org\) or \"\*\""),
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: '(\\d+)'\n    flags: i\n",
     r"pattern 1: unknown key\(s\) flags"),
    ("patterns:\n  - sender: a.example\n    system: x\n    regex: '(\\d+)'\n    ignore_case: 'yes'\n",
     r"`ignore_case` must be true or false"),
    ("- sender: a.example\n", r"expected one top-level key `patterns:`"),
    ("patterns:\n  - just a string\n", r"pattern 1: expected a mapping"),
    ("patterns: [\n", r"is not valid YAML"),
])
def test_a_wrong_file_is_a_clear_error(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(followup.PatternError, match=message) as caught:
        followup.load_patterns(path)
    assert str(caught.value).startswith(str(path))


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(followup.PatternError, match=r"cannot read .*nope.yaml: No such file or directory"):
        followup.load_patterns(tmp_path / "nope.yaml")


@pytest.mark.parametrize("sender, subject, expected", [
    ("reports@cert.example.de", "Re: [CB-Report#4711] Botnet", [("certbund", "4711")]),
    ("reports@mail.cert.example.de", "[CB-Report#4711]", [("certbund", "4711")]),      # a subdomain
    ("reports@notcert.example.de", "[CB-Report#4711]", []),                             # not a subdomain
    ("someone@other.example", "[CB-Report#4711]", []),
    ("noc@isp.example", "Case 123456 opened", [("isp-noc", "123456")]),
    ("NOC@ISP.EXAMPLE", "Case 123456 opened", [("isp-noc", "123456")]),                  # case of the address
    ("abuse@isp.example", "Case 123456 opened", []),                                     # another address there
    ("anyone@anywhere.example", "fix sec-12 and SEC-13", [("jira-sec", "sec-12"), ("jira-sec", "SEC-13")]),
    # the built-ins still apply beside them
    ("reports@cert.example.de", "[CB-Report#1] [Ticket#2024010112345] INC0012345",
     [("otrs", "2024010112345"), ("servicenow", "INC0012345"), ("certbund", "1")]),
])
def test_patterns_apply_per_sender(tmp_path, sender, subject, expected):
    patterns = followup.load_patterns(write(tmp_path, GOOD))
    refs = followup.external_refs(subject, "Osprey", sender, patterns)
    assert [(r["system"], r["ref"]) for r in refs] == expected


# --- threading by a custom number, end to end through the pipeline --------------------------

@pytest.fixture
def setup(databases, tmp_path):
    ledger_engine, ledger = ingest_db(databases.url("ingest", ingest_models.MIGRATIONS))
    tickets_engine, tickets = tickets_db(databases.url("tickets", tickets_models.MIGRATIONS))
    yield ledger, tickets, RawStore(tmp_path / "raw")
    ledger_engine.dispose()
    tickets_engine.dispose()


def deliver(setup, raw: bytes, patterns) -> dict:
    make_ledger, make_tickets, store = setup
    with make_ledger() as session:
        intake, _new = pipeline.receive(session, store, pipeline.Delivery(raw, "general", "correspond", "mailgate"))
        ctx = pipeline.Context(intake=intake, raw=raw, tickets=TicketsOverSQLite(make_tickets), ticket_tag="Osprey",
                               max_body_chars=1 << 20, external_patterns=patterns)
        row = pipeline.process(session, ctx)
        return {"ticket_id": row.ticket_id, "status": row.status, "refs": ctx.threading["external_refs"]}


def test_a_later_mail_with_their_number_threads_to_the_ticket(setup, tmp_path):
    patterns = followup.load_patterns(write(tmp_path, GOOD))
    first = deliver(setup, make_mail("[CB-Report#4711] Botnet C2 in your network", "details",
                                     sender="CERT-Bund <reports@cert.example.de>"), patterns)
    assert (first["status"], first["refs"]) == ("delivered", [{"system": "certbund", "ref": "4711"}])
    # a new mail (no tag of ours, no References) carrying their number
    second = deliver(setup, make_mail("Update on CB-Report#4711? [CB-Report#4711]", "any news?",
                                      sender="reports@cert.example.de"), patterns)
    assert second["ticket_id"] == first["ticket_id"]
    # the same number from another domain is another team's ticket
    other = deliver(setup, make_mail("[CB-Report#4711] elsewhere", "x", sender="reports@other.example"), patterns)
    assert other["ticket_id"] != first["ticket_id"] and other["refs"] == []
    # without the site's patterns, the number means nothing
    plain = deliver(setup, make_mail("[CB-Report#4711] again", "y", sender="reports@cert.example.de"), ())
    assert plain["ticket_id"] not in (first["ticket_id"], other["ticket_id"])
    assert contracts.INTAKE_DELIVERED == plain["status"]


def test_the_envelope_header_is_the_contract_s():
    from osprey import contracts
    from services.ingest import envelope
    assert envelope.H_ENVELOPE == contracts.H_ENVELOPE
