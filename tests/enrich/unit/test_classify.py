import pytest

from services.enrich.exceptions import BadRequest
from services.enrich.service import classify_ip


def test_documentation_and_public_addresses():
    assert classify_ip("192.0.2.7") == {"ip": "192.0.2.7", "version": 4, "global": False, "private": True,
                                        "loopback": False, "link_local": False, "multicast": False,
                                        "reserved": False, "documentation": True, "class": "documentation"}
    assert classify_ip(" 2001:DB8::1 ")["ip"] == "2001:db8::1"
    assert classify_ip("2001:db8::1")["documentation"] is True
    assert classify_ip("9.9.9.9")["global"] is True
    assert classify_ip("10.1.2.3")["private"] is True and classify_ip("10.1.2.3")["documentation"] is False


@pytest.mark.parametrize("ip,cls", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("198.51.100.1", "documentation"),
    ("3fff::1", "documentation"), ("169.254.0.1", "link_local"), ("fe80::1", "link_local"),
    ("239.1.2.3", "multicast"), ("ff05::2", "multicast"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("100.64.1.1", "private"), ("fd12::1", "private"), ("0.0.0.0", "reserved"), ("::", "reserved"),
    ("198.18.0.1", "reserved"), ("255.255.255.255", "reserved"), ("62.239.237.1", "global"),
    ("2a00:2381:ffff::1", "global"), ("::ffff:10.0.0.1", "private"), ("::ffff:8.8.8.8", "global"),
])
def test_class(ip, cls):
    assert classify_ip(ip)["class"] == cls


def test_not_an_address():
    with pytest.raises(BadRequest, match="not an IP address"):
        classify_ip("example.com")
