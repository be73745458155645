"""Indicator extraction: whole expected lists per input (IntelMQ style), the
defanged forms, and the false-positive guards (docs/enrichment.md lists the rules)."""
import pytest

from services.enrich.exceptions import BadRequest
from services.enrich.indicators import extract, html_to_text, refang

CASES = [
    ('defanged_ipv4_brackets',
     'seen from 1.2.3[.]4 today',
     [
         {'type': 'ipv4', 'value': '1.2.3.4', 'raw': '1.2.3[.]4', 'span': [10, 19], 'count': 1, 'source': 'text', 'class': 'global'},
     ]),
    ('defanged_ipv4_parens',
     'seen from 1.2.3(.)4 today',
     [
         {'type': 'ipv4', 'value': '1.2.3.4', 'raw': '1.2.3(.)4', 'span': [10, 19], 'count': 1, 'source': 'text', 'class': 'global'},
     ]),
    ('hxxp_url',
     'payload at hxxp://evil.example.com/a.exe',
     [
         {'type': 'url', 'value': 'http://evil.example.com/a.exe', 'raw': 'hxxp://evil.example.com/a.exe', 'span': [11, 40], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'evil.example.com', 'raw': 'evil.example.com', 'span': [18, 34], 'count': 1, 'source': 'text', 'registered': 'example.com'},
     ]),
    ('hxxps_colon_brackets',
     'login: hxxps[:]//bank.example.co.uk/login?x=1.',
     [
         {'type': 'url', 'value': 'https://bank.example.co.uk/login?x=1', 'raw': 'hxxps[:]//bank.example.co.uk/login?x=1', 'span': [7, 45], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'bank.example.co.uk', 'raw': 'bank.example.co.uk', 'span': [17, 35], 'count': 1, 'source': 'text', 'registered': 'example.co.uk'},
     ]),
    ('defanged_domain',
     'C2 is example[.]com and evil[dot]example[.]net',
     [
         {'type': 'domain', 'value': 'example.com', 'raw': 'example[.]com', 'span': [6, 19], 'count': 1, 'source': 'text', 'registered': 'example.com'},
         {'type': 'domain', 'value': 'evil.example.net', 'raw': 'evil[dot]example[.]net', 'span': [24, 46], 'count': 1, 'source': 'text', 'registered': 'example.net'},
     ]),
    ('defanged_email_at',
     'write to user[at]example.com or admin [@] example.org',
     [
         {'type': 'email', 'value': 'user@example.com', 'raw': 'user[at]example.com', 'span': [9, 28], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'example.com', 'raw': 'example.com', 'span': [17, 28], 'count': 1, 'source': 'text', 'registered': 'example.com'},
         {'type': 'email', 'value': 'admin@example.org', 'raw': 'admin [@] example.org', 'span': [32, 53], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'example.org', 'raw': 'example.org', 'span': [42, 53], 'count': 1, 'source': 'text', 'registered': 'example.org'},
     ]),
    ('version_numbers',
     'upgrade to 1.2.3.4.5 or v2.10.1; build 10.0.19041.1',
     [
     ]),
    ('dates',
     'on 2024.01.15 and 15.01.2024 at 10:30:45',
     [
     ]),
    ('file_names',
     'see report.pdf, invoice.zip, README.md, setup.exe and data.tar.gz',
     [
     ]),
    ('file_name_tld_defanged_or_url',
     'but evil[.]zip and http://files.example.zip/x are meant',
     [
         {'type': 'domain', 'value': 'evil.zip', 'raw': 'evil[.]zip', 'span': [4, 14], 'count': 1, 'source': 'text', 'registered': 'evil.zip'},
         {'type': 'url', 'value': 'http://files.example.zip/x', 'raw': 'http://files.example.zip/x', 'span': [19, 45], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'files.example.zip', 'raw': 'files.example.zip', 'span': [26, 43], 'count': 1, 'source': 'text', 'registered': 'example.zip'},
     ]),
    ('ipv6',
     'from 2001:db8::1, fe80::1 and 2a00:2381:ffff::1; not ::',
     [
         {'type': 'ipv6', 'value': '2001:db8::1', 'raw': '2001:db8::1', 'span': [5, 16], 'count': 1, 'source': 'text', 'class': 'documentation'},
         {'type': 'ipv6', 'value': 'fe80::1', 'raw': 'fe80::1', 'span': [18, 25], 'count': 1, 'source': 'text', 'class': 'link_local'},
         {'type': 'ipv6', 'value': '2a00:2381:ffff::1', 'raw': '2a00:2381:ffff::1', 'span': [30, 47], 'count': 1, 'source': 'text', 'class': 'global'},
     ]),
    ('cidr_and_range',
     'block 192.0.2.0/24 and 198.51.100.10-198.51.100.20 and 10.0.0.1 - 10.0.0.9',
     [
         {'type': 'cidr', 'value': '192.0.2.0/24', 'raw': '192.0.2.0/24', 'span': [6, 18], 'count': 1, 'source': 'text', 'class': 'documentation'},
         {'type': 'range', 'value': '198.51.100.10-198.51.100.20', 'raw': '198.51.100.10-198.51.100.20', 'span': [23, 50], 'count': 1, 'source': 'text', 'class': 'documentation'},
         {'type': 'range', 'value': '10.0.0.1-10.0.0.9', 'raw': '10.0.0.1 - 10.0.0.9', 'span': [55, 74], 'count': 1, 'source': 'text', 'class': 'private'},
     ]),
    ('hashes',
     'md5 D41D8CD98F00B204E9800998ECF8427E sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 sha256 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
     [
         {'type': 'md5', 'value': 'd41d8cd98f00b204e9800998ecf8427e', 'raw': 'D41D8CD98F00B204E9800998ECF8427E', 'span': [4, 36], 'count': 1, 'source': 'text'},
         {'type': 'sha1', 'value': 'da39a3ee5e6b4b0d3255bfef95601890afd80709', 'raw': 'da39a3ee5e6b4b0d3255bfef95601890afd80709', 'span': [42, 82], 'count': 1, 'source': 'text'},
         {'type': 'sha256', 'value': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'raw': 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'span': [90, 154], 'count': 1, 'source': 'text'},
     ]),
    ('hash_false_positives',
     'id 12345678901234567890123456789012 token aBcDeF0123456789aBcDeF0123456789',
     [
     ]),
    ('cve',
     'patch cve-2021-44228 and CVE-2014-0160, not CVE-21-1',
     [
         {'type': 'cve', 'value': 'CVE-2021-44228', 'raw': 'cve-2021-44228', 'span': [6, 20], 'count': 1, 'source': 'text'},
         {'type': 'cve', 'value': 'CVE-2014-0160', 'raw': 'CVE-2014-0160', 'span': [25, 38], 'count': 1, 'source': 'text'},
     ]),
    ('url_parts',
     'http://user@198.51.100.7:8080/path/evil.com?q=d41d8cd98f00b204e9800998ecf8427e (see http://en.wikipedia.org/wiki/Foo_(bar))',
     [
         {'type': 'url', 'value': 'http://user@198.51.100.7:8080/path/evil.com?q=d41d8cd98f00b204e9800998ecf8427e', 'raw': 'http://user@198.51.100.7:8080/path/evil.com?q=d41d8cd98f00b204e9800998ecf8427e', 'span': [0, 78], 'count': 1, 'source': 'text'},
         {'type': 'ipv4', 'value': '198.51.100.7', 'raw': '198.51.100.7', 'span': [12, 24], 'count': 1, 'source': 'text', 'class': 'documentation'},
         {'type': 'url', 'value': 'http://en.wikipedia.org/wiki/Foo_(bar)', 'raw': 'http://en.wikipedia.org/wiki/Foo_(bar)', 'span': [84, 122], 'count': 1, 'source': 'text'},
         {'type': 'domain', 'value': 'en.wikipedia.org', 'raw': 'en.wikipedia.org', 'span': [91, 107], 'count': 1, 'source': 'text', 'registered': 'wikipedia.org'},
     ]),
    ('ipv6_url',
     'http://[2001:db8::7]/x',
     [
         {'type': 'url', 'value': 'http://[2001:db8::7]/x', 'raw': 'http://[2001:db8::7]/x', 'span': [0, 22], 'count': 1, 'source': 'text'},
         {'type': 'ipv6', 'value': '2001:db8::7', 'raw': '2001:db8::7', 'span': [8, 19], 'count': 1, 'source': 'text', 'class': 'documentation'},
     ]),
    ('sentence_boundary',
     'That was the end.It was dark. Visit WWW.EXAMPLE.COM.',
     [
         {'type': 'domain', 'value': 'www.example.com', 'raw': 'WWW.EXAMPLE.COM', 'span': [36, 51], 'count': 1, 'source': 'text', 'registered': 'example.com'},
     ]),
    ('repeat',
     '1.1.1.1 then 1.1.1.1 again',
     [
         {'type': 'ipv4', 'value': '1.1.1.1', 'raw': '1.1.1.1', 'span': [0, 7], 'count': 2, 'source': 'text', 'class': 'global'},
     ]),
    ('ip_classes',
     '127.0.0.1 10.1.2.3 100.64.0.1 169.254.1.1 224.0.0.1 0.0.0.0 240.0.0.1 8.8.8.8 fc00::1 ff02::1',
     [
         {'type': 'ipv4', 'value': '127.0.0.1', 'raw': '127.0.0.1', 'span': [0, 9], 'count': 1, 'source': 'text', 'class': 'loopback'},
         {'type': 'ipv4', 'value': '10.1.2.3', 'raw': '10.1.2.3', 'span': [10, 18], 'count': 1, 'source': 'text', 'class': 'private'},
         {'type': 'ipv4', 'value': '100.64.0.1', 'raw': '100.64.0.1', 'span': [19, 29], 'count': 1, 'source': 'text', 'class': 'private'},
         {'type': 'ipv4', 'value': '169.254.1.1', 'raw': '169.254.1.1', 'span': [30, 41], 'count': 1, 'source': 'text', 'class': 'link_local'},
         {'type': 'ipv4', 'value': '224.0.0.1', 'raw': '224.0.0.1', 'span': [42, 51], 'count': 1, 'source': 'text', 'class': 'multicast'},
         {'type': 'ipv4', 'value': '0.0.0.0', 'raw': '0.0.0.0', 'span': [52, 59], 'count': 1, 'source': 'text', 'class': 'reserved'},
         {'type': 'ipv4', 'value': '240.0.0.1', 'raw': '240.0.0.1', 'span': [60, 69], 'count': 1, 'source': 'text', 'class': 'reserved'},
         {'type': 'ipv4', 'value': '8.8.8.8', 'raw': '8.8.8.8', 'span': [70, 77], 'count': 1, 'source': 'text', 'class': 'global'},
         {'type': 'ipv6', 'value': 'fc00::1', 'raw': 'fc00::1', 'span': [78, 85], 'count': 1, 'source': 'text', 'class': 'private'},
         {'type': 'ipv6', 'value': 'ff02::1', 'raw': 'ff02::1', 'span': [86, 93], 'count': 1, 'source': 'text', 'class': 'multicast'},
     ]),
    ('public_suffix_only',
     'co.uk and github.io and foo.github.io',
     [
         {'type': 'domain', 'value': 'github.io', 'raw': 'github.io', 'span': [10, 19], 'count': 1, 'source': 'text', 'registered': 'github.io'},
         {'type': 'domain', 'value': 'foo.github.io', 'raw': 'foo.github.io', 'span': [24, 37], 'count': 1, 'source': 'text', 'registered': 'github.io'},
     ]),
    ('idn',
     'visit bücher.example and www.bücher.de',
     [
         {'type': 'domain', 'value': 'www.xn--bcher-kva.de', 'raw': 'www.bücher.de', 'span': [25, 38], 'count': 1, 'source': 'text', 'registered': 'xn--bcher-kva.de'},
     ]),
]


@pytest.mark.parametrize("name,text,expected", CASES, ids=[c[0] for c in CASES])
def test_extract(name, text, expected):
    found = extract(text)
    assert found == expected
    for item in found:  # every span points at the original (possibly defanged) text
        assert text[item["span"][0]:item["span"][1]] == item["raw"]


def test_refang_maps_offsets_back():
    text = "a hxxps[:]//x[.]example[.]com b user[at]y[.]org c"
    ref = refang(text)
    assert ref.text == "a https://x.example.com b user@y.org c"
    start = ref.text.index("x.example.com")
    assert ref.original_span(start, start + len("x.example.com")) == (12, 29)
    assert text[12:29] == "x[.]example[.]com"
    tail = ref.text.index(" c")
    assert text[ref.original_span(tail, tail + 2)[0]:] == " c"


HTML = """<html><head><title>Report</title><style>a.x{color:red}</style>
<script>var ip = "203.0.113.99";</script></head>
<body><p>Phishing at <a href="http://phish.example.net/login">your bank</a> from 198.51.100.23.</p>
<p>Mail <a href="mailto:abuse@example.org?subject=x">us</a>, or see
<a href="https://www.example.com/">https://www.example.com/</a> &amp; 192.0.2.1&#46;</p>
<img src="hxxp://tracker[.]example[.]org/p.gif"></body></html>"""


def test_html_to_text():
    assert html_to_text(HTML) == (
        "Report\n\nPhishing at your bank <http://phish.example.net/login> from 198.51.100.23.\n\n"
        "Mail us <abuse@example.org>, or see\nhttps://www.example.com/ & 192.0.2.1.\n\n"
        " <hxxp://tracker[.]example[.]org/p.gif>")


def test_extract_html_adds_what_only_the_html_has():
    found = extract("Phishing from 198.51.100.23", html=HTML)
    assert [(i["type"], i["value"], i["source"]) for i in found] == [
        ("ipv4", "198.51.100.23", "text"),
        ("url", "http://phish.example.net/login", "html"),
        ("domain", "phish.example.net", "html"),
        ("email", "abuse@example.org", "html"),
        ("domain", "example.org", "html"),
        ("url", "https://www.example.com/", "html"),
        ("domain", "www.example.com", "html"),
        ("ipv4", "192.0.2.1", "html"),
        ("url", "http://tracker.example.org/p.gif", "html"),
        ("domain", "tracker.example.org", "html"),
    ]
    text = html_to_text(HTML)
    for item in found:
        if item["source"] == "html":
            assert text[item["span"][0]:item["span"][1]] == item["raw"]


def test_own_domains_and_addresses_are_left_out():
    text = ("From abuse@csirt.example.org (see https://www.csirt.example.org/x and csirt.example.org) about "
            "203.0.113.5, 192.0.2.9, 192.0.2.0/25, http://192.0.2.7/ and evil.example.com; "
            "cc soc@partner.example.net and ops@partner.example.net")
    found = extract(text, own_domains=["Example.ORG"],
                    own_addresses=["192.0.2.0/24", "ops@partner.example.net"])
    assert [(i["type"], i["value"]) for i in found] == [
        ("ipv4", "203.0.113.5"),
        ("domain", "evil.example.com"),
        ("email", "soc@partner.example.net"),
        ("domain", "partner.example.net"),
    ]


def test_own_addresses_must_be_addresses():
    with pytest.raises(BadRequest, match="not an e-mail address, IP address"):
        extract("x", own_addresses=["not-an-address"])


def test_empty_and_large_input():
    assert extract("") == []
    assert extract(None, html="") == []
    text = "line 198.51.100.1 host-a.example.com\n" * 20000
    found = extract(text)
    assert [(i["type"], i["value"], i["count"]) for i in found] == [
        ("ipv4", "198.51.100.1", 20000), ("domain", "host-a.example.com", 20000)]
