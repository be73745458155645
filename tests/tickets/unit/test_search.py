"""services/tickets/search.py: words, "phrases" and IP expressions over the
embedded index, filled by records.add_mail in a real tickets database: every test
that searches runs on SQLite (FTS5) and on PostgreSQL (tsvector)."""
from __future__ import annotations

import ipaddress

import pytest

from osprey.contracts import ip_key, parse_ip_range
from services.tickets import records, search
from services.tickets.exceptions import BadRequest
from services.tickets.models import MIGRATIONS
from tests.storage import DIALECTS, databases_for
from tests.unit_fixtures import tickets_db

# (ticket_hint, subject, body): article n is the n-th row; article 4 follows up ticket 1
ARTICLES = [
    (None, "Phishing report", "A phishing kit is hosted on 192.0.2.15, reported by CERT-Example."),
    (None, "SSH brute force", "Brute force logins from 192.0.2.200 and 2001:db8::7 against ssh."),
    (None, "Malware beacon", "Workstation contacted C2 at 198.51.100.5 and evil.example.com."),
    (1, "Re: Phishing report", "The kit on 192.0.2.15 is gone; hosting provider fixed it."),
]


@pytest.fixture(scope="module", params=DIALECTS)
def session(request, tmp_path_factory):
    databases = databases_for(request, request.param, tmp_path_factory.mktemp("search"))
    engine, make_session = tickets_db(databases.url("tickets", MIGRATIONS))
    with make_session() as session:
        for n, (hint, subject, body) in enumerate(ARTICLES, start=1):
            records.add_mail(session, {"intake_id": f"{n:064x}", "queue": "general", "ticket_hint": hint,
                                       "subject": subject, "body_text": body, "sender": "a@example.net",
                                       "sender_address": "a@example.net"})
        session.commit()
        yield session
    engine.dispose()
    databases.drop()


def found(session, q: str) -> list[tuple[int, int]]:
    """(article_id, ticket_id) of each hit (the best article of each ticket), in the order search gives them."""
    return [(h["article_id"], h["ticket_id"]) for h in search.search_articles(session, q)]


@pytest.mark.parametrize("q, hits", [
    ("workstation", [(3, 3)]),                # a word only in a body
    ("phishing", [(1, 1)]),                   # subject or body; one hit per ticket: article 1 has it in both, ranks first
    ("PHISHING", [(1, 1)]),           # case-insensitive
    ("phish", []),                            # whole words, no stemming
    ("brute ssh", [(2, 2)]),                  # every word must match
    ("brute phishing", []),
    ("evil.example.com", [(3, 3)]),           # has dots but is no IP: a word
    ("AND", [(3, 3), (2, 2)]),                # FTS5 operators are plain words here
    ("NEAR(", []),
    ("   ", []),
])
def test_word_search(session, q, hits):
    assert found(session, q) == hits


@pytest.mark.parametrize("q, hits", [
    ('"kit is hosted"', [(1, 1)]),
    ('"hosted kit"', []),                     # a phrase keeps its word order
    ('"kit is hosted" phishing', [(1, 1)]),
    ('""', []),                               # an empty phrase is no term at all
])
def test_phrase_search(session, q, hits):
    assert found(session, q) == hits


@pytest.mark.parametrize("q, hits", [
    ("192.0.2.15", [(4, 1)]),                                 # no words: the newest article of each ticket
    ("192.0.2.0/24", [(4, 1), (2, 2)]),
    ("192.0.2.1-192.0.2.100", [(4, 1)]),
    ("2001:db8::/32", [(2, 2)]),
    ("2001:db8::7", [(2, 2)]),
    ("198.51.100.0/24", [(3, 3)]),
    ("203.0.113.1", []),
    ("192.0.2.16-192.0.2.199", []),
    ("2001:db9::/32", []),
    ("::ffff:192.0.2.15", [(4, 1)]),                  # IPv4-mapped form finds the IPv4 address
    ("ssh 192.0.2.0/24", [(2, 2)]),                           # a word and an IP expression
    ("phishing 192.0.2.200", []),
    ("192.0.2.0/24 2001:db8::/32", [(2, 2)]),                 # every IP expression must match
])
def test_ip_search(session, q, hits):
    assert found(session, q) == hits


def test_ip_hits_show_the_start_of_the_body(session):
    assert search.search_articles(session, "198.51.100.5") == [
        {"article_id": 3, "ticket_id": 3, "snippet": "Workstation contacted C2 at 198.51.100.5 and evil.example.com."}]


def test_word_hits_show_a_snippet_with_the_match_marked(session):
    (hit,) = search.search_articles(session, '"kit is hosted"')
    assert hit["snippet"].replace("\x02", "[[").replace("\x03", "]]") == (
        "A phishing [[kit is hosted]] on 192.0.2.15, reported by … ")


def test_limit(session):
    assert [h["article_id"] for h in search.search_articles(session, "192.0.2.0/24", limit=2)] == [4, 2]


@pytest.mark.parametrize("q, message", [
    ('phishing "kit hosted', "unclosed quote at position 10: '\"kit hosted'"),
    ('"', "unclosed quote at position 1: '\"'"),
    ('"a" "b" "c', "unclosed quote at position 9: '\"c'"),
])
def test_unclosed_quote_is_a_bad_request_naming_the_position(session, q, message):
    with pytest.raises(BadRequest) as caught:
        search.search_articles(session, q)
    assert str(caught.value) == message


def test_parse_query():
    assert search.parse_query('ssh "kit  hosted" 192.0.2.0/24 say"hi"') == search.Query(
        terms=['"ssh"', '"kit  hosted"', '"say"', '"hi"'], ip_ranges=[parse_ip_range("192.0.2.0/24")])


def test_parse_query_quotes_every_term_for_fts():
    assert search.parse_query('kit* NEAR( a"b"') == search.Query(terms=['"kit*"', '"NEAR("', '"a"', '"b"'])


def test_parse_query_ip_ranges_are_key_ranges():
    assert search.parse_query("192.0.2.1-192.0.2.9 2001:db8::1").ip_ranges == [
        (ip_key(ipaddress.ip_address("192.0.2.1")), ip_key(ipaddress.ip_address("192.0.2.9"))),
        (ip_key(ipaddress.ip_address("2001:db8::1")), ip_key(ipaddress.ip_address("2001:db8::1"))),
    ]


def test_search_tickets_gives_each_ticket_once(session):
    hits = records.search_tickets(session, "kit", limit=10)
    assert [(h["id"], h["article_id"], h["subject"]) for h in hits] == [(1, 4, "Phishing report")]


def test_search_tickets_limit(session):
    assert [h["id"] for h in records.search_tickets(session, "192.0.2.0/24", limit=1)] == [1]

