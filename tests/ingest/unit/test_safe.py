"""services/ingest/safe.py: stdlib helpers that real mail cannot make fail."""
from __future__ import annotations

import pytest

from services.ingest.safe import getaddresses, parseaddr, text

NESTED = "g:" * 1000 + "a@example.org"     # a group inside a group, a thousand deep


def test_ordinary_addresses_are_parsed_as_email_utils_does():
    assert parseaddr("Alice <alice@example.net>") == ("Alice", "alice@example.net")
    assert getaddresses(["Alice <alice@example.net>, bob@example.org"]) == [
        ("Alice", "alice@example.net"), ("", "bob@example.org")]


def test_groups_nested_past_the_recursion_limit_give_no_address():
    assert parseaddr(NESTED) == ("", "")
    assert getaddresses([NESTED]) == []


@pytest.mark.parametrize("value, expected", [
    ("Grüße ✓", "Grüße ✓"),                                       # valid text is kept as it is
    ("Gr\udcc3\udcbc\udcc3\udc9fe", "Grüße"),                     # escaped UTF-8 bytes are read as UTF-8
    ("caf\udce9", "caf\ufffd"),                                   # escaped bytes that are no UTF-8
    ("a\ud800b\udfffc", "a\ufffdb\ufffdc"),                       # lone surrogates from a codec (UTF-7)
])
def test_text_is_always_valid_unicode(value, expected):
    assert text(value) == expected
    text(value).encode("utf-8")
