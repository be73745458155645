"""osprey/contracts.py: IP keys and ranges, IPs found in text, intake ids."""
from __future__ import annotations

import hashlib
import random
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest

from osprey import contracts
from osprey.contracts import find_ips, intake_id, ip_key, key_to_ip, parse_ip_range


def key(text: str) -> bytes:
    return ip_key(ip_address(text))


# --- ip_key ----------------------------------------------------------------------

def test_ipv4_key_is_the_ipv4_mapped_ipv6_address():
    assert ip_key(IPv4Address("192.0.2.1")) == bytes(10) + b"\xff\xff" + bytes([192, 0, 2, 1])
    assert ip_key(IPv4Address("192.0.2.1")) == IPv6Address("::ffff:192.0.2.1").packed


def test_ipv6_key_is_the_packed_address():
    assert ip_key(IPv6Address("2001:db8::1")) == bytes.fromhex("20010db8000000000000000000000001")


@pytest.mark.parametrize("text", ["0.0.0.0", "192.0.2.1", "255.255.255.255", "::", "::1", "2001:db8::1",
                                  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"])
def test_key_round_trip(text):
    k = key(text)
    assert (len(k), key_to_ip(k)) == (16, ip_address(text))


@pytest.mark.parametrize("family", [
    ["0.0.0.0", "0.0.0.255", "9.255.255.255", "10.0.0.0", "192.0.2.1", "192.0.2.10", "192.0.2.200",
     "198.51.100.0", "255.255.255.255"],
    ["::", "::1", "::2", "1::", "2001:db8::", "2001:db8::1", "2001:db8:0:1::", "2001:db9::",
     "fe80::1", "ffff::"],
])
def test_key_order_is_address_order(family):
    addrs = [ip_address(t) for t in family]
    shuffled = random.Random(7).sample(addrs, len(addrs))
    assert [key_to_ip(k) for k in sorted(ip_key(a) for a in shuffled)] == sorted(addrs) == addrs


def test_ipv4_keys_sit_in_their_mapped_place_among_ipv6_keys():
    mixed = ["2001:db8::1", "192.0.2.1", "::1", "fe80::1", "10.0.0.1", "255.255.255.255", "::fffe:ffff:ffff"]
    assert [str(key_to_ip(k)) for k in sorted(key(t) for t in mixed)] == [
        "::1", "::fffe:ffff:ffff", "10.0.0.1", "192.0.2.1", "255.255.255.255", "2001:db8::1", "fe80::1"]


# --- parse_ip_range --------------------------------------------------------------

@pytest.mark.parametrize("text, low, high", [
    ("192.0.2.7", "192.0.2.7", "192.0.2.7"),
    (" 192.0.2.7\n", "192.0.2.7", "192.0.2.7"),
    ("192.0.2.0/24", "192.0.2.0", "192.0.2.255"),
    ("192.0.2.7/24", "192.0.2.0", "192.0.2.255"),            # host bits are ignored
    ("192.0.2.7/32", "192.0.2.7", "192.0.2.7"),
    ("0.0.0.0/0", "0.0.0.0", "255.255.255.255"),
    ("10.0.0.0/8", "10.0.0.0", "10.255.255.255"),
    ("2001:db8::/32", "2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("2001:DB8::1", "2001:db8::1", "2001:db8::1"),          # short (compressed) IPv6 forms
    ("::1", "::1", "::1"),
    ("::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
    ("192.0.2.1-192.0.2.100", "192.0.2.1", "192.0.2.100"),
    ("192.0.2.1 - 192.0.2.100", "192.0.2.1", "192.0.2.100"),
    ("192.0.2.9-192.0.2.9", "192.0.2.9", "192.0.2.9"),
    ("2001:db8::1-2001:db8::ff", "2001:db8::1", "2001:db8::ff"),
    ("10/8", "10.0.0.0", "10.255.255.255"),                 # short CIDR as whois and people write it
    ("192.168/16", "192.168.0.0", "192.168.255.255"),
    ("192.0.2/24", "192.0.2.0", "192.0.2.255"),
])
def test_parse_ip_range(text, low, high):
    assert parse_ip_range(text) == (key(low), key(high))


@pytest.mark.parametrize("text", [
    "", "phishing", "999.1.1.1", "192.0.2.256", "192.0.2.0/33", "2001:db8::/129",
    "192.0.2", "192.0.2.0/24-192.0.2.9",       # a short IPv4 address without a prefix stays no IP
    "10/33", "1.2.3.4.5/8",
    "192.0.2.100-192.0.2.1",                             # reversed
    "192.0.2.1-2001:db8::1",                             # families differ
    "192.0.2.1-", "-192.0.2.1", "1.2.3.4.5", "example.com", "12:30",
])
def test_parse_ip_range_of_no_ip_expression_is_none(text):
    assert parse_ip_range(text) is None


# --- find_ips ----------------------------------------------------------------------

@pytest.mark.parametrize("text, found", [
    ("seen 192.0.2.7, then 198.51.100.1; not 999.1.1.1", ["192.0.2.7", "198.51.100.1"]),
    ("src=2001:db8::1 dst=[2001:db8::2]:443", ["2001:db8::1", "2001:db8::2"]),
    ("2001:DB8:0:0:0:0:0:A", ["2001:db8::a"]),
    ("loopback ::1 and 127.0.0.1", ["::1", "127.0.0.1"]),
    ("192.0.2.7 again 192.0.2.7", ["192.0.2.7"]),
    ("network 192.0.2.0/24", ["192.0.2.0"]),
    ("end of sentence 192.0.2.7.", ["192.0.2.7"]),
    ("version 1.2.3.4.5 and 10.1.2.3.4 and 1.2.3.4.5.6", []),
    ("999.1.1.1 256.0.0.1 1.2.3.999", []),
    ("at 12:30:45 on 2025-11-25", []),
    ("01.02.03.04", []),                                   # leading zeros are ambiguous; ipaddress refuses them
    ("", []),
])
def test_find_ips(text, found):
    assert find_ips(text) == [ip_address(t) for t in found]


# --- intake ids and bytes --------------------------------------------------------

SHA = hashlib.sha256(b"a mail").hexdigest()


def test_intake_id_is_stable():
    # persisted in the ledger and on articles: the formula must never change
    assert intake_id(SHA, "general", "correspond") == hashlib.sha256(
        f"{SHA}\0general\0correspond".encode()).hexdigest()
    assert intake_id("0" * 64, "general", "correspond") == (
        "9067b2b0e09f3907ccd8d09af862daa463b066707e9315a9c5fab92bd8787662")


def test_intake_id_differs_by_bytes_queue_and_action():
    ids = {intake_id(SHA, "general", "correspond"), intake_id(SHA, "abuse", "correspond"),
           intake_id(SHA, "general", "comment"), intake_id("0" * 64, "general", "correspond")}
    assert len(ids) == 4


def test_intake_id_fields_cannot_run_into_each_other():
    assert intake_id(SHA, "a", "bc") != intake_id(SHA, "ab", "c")


def test_b64_round_trip():
    data = bytes(range(256))
    assert contracts.unb64(contracts.b64(data)) == data


def test_unb64_refuses_what_is_not_base64():
    with pytest.raises(ValueError):
        contracts.unb64("not base64!")


def test_sha256_hex():
    assert contracts.sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_find_ips_skips_cpp_scope_operators_and_keeps_text_order():
    assert [str(a) for a in find_ips("use std::vector; then 2001:db8::7 and 192.0.2.5")] == ["2001:db8::7", "192.0.2.5"]


def test_find_ips_mapped_dotted_quad_gives_the_ipv4_only():
    assert [str(a) for a in find_ips("from ::ffff:192.0.2.1 today")] == ["192.0.2.1"]


def test_find_ips_ipv6_at_the_end_of_a_sentence():
    assert [str(a) for a in find_ips("It came from fe80::1.")] == ["fe80::1"]


@pytest.mark.parametrize("text, normal", [
    ("192.0.2.7", "192.0.2.7"), ("192.0.2.0-192.0.2.255", "192.0.2.0/24"), ("10/8", "10.0.0.0/8"),
    ("192.0.2.1-192.0.2.9", "192.0.2.1-192.0.2.9"), ("2001:db8::/32", "2001:db8::/32"),
])
def test_format_ip_range_gives_the_normal_form(text, normal):
    from osprey.contracts import format_ip_range
    assert format_ip_range(*parse_ip_range(text)) == normal
