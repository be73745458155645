import pytest

from services.enrich.exceptions import BadRequest
from services.enrich.service import classify_ip


def test_documentation_and_public_addresses():
    assert classify_ip("192.0.2.7") == {"ip": "192.0.2.7", "version": 4, "global": False, "private": True,
                                        "loopback": False, "link_local": False, "multicast": False,
                                        "reserved": False, "documentation": True}
    assert classify_ip(" 2001:DB8::1 ")["ip"] == "2001:db8::1"
    assert classify_ip("2001:db8::1")["documentation"] is True
    assert classify_ip("9.9.9.9")["global"] is True
    assert classify_ip("10.1.2.3")["private"] is True and classify_ip("10.1.2.3")["documentation"] is False


def test_not_an_address():
    with pytest.raises(BadRequest, match="not an IP address"):
        classify_ip("example.com")
