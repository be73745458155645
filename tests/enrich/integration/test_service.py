"""EnrichService as its own process on a real RabbitMQ node, called over RPC the
way the gateway and the other services call it; lookups go to the replay servers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nameko.exceptions import RemoteError

from osprey.broker import RabbitNode
from osprey.rpc import Rpc
from tests.helpers import wait_for

RUNNER = Path(__file__).with_name("enrich_runner.py")
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def enrich(tmp_path_factory, rdap, whois):
    base = tmp_path_factory.mktemp("enrich-broker")
    node = RabbitNode(base / "rabbitmq")
    with open(base / "rabbitmq.log", "ab") as log:
        node.start(timeout=90, log=log)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSPREY_")}
    env.update({"OSPREY_DATA_DIR": str(base / "data"), "OSPREY_AMQP_URI": node.uri, "OSPREY_START_BROKER": "0",
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    options = {"rdap_urls": rdap.urls(), "whois_hosts": whois.hosts()}
    log_path = base / "enrich.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, str(RUNNER), json.dumps(options)], env=env, cwd=ROOT,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    rpc = Rpc(amqp_uri=node.uri, timeout=20)

    def ready():
        assert proc.poll() is None, log_path.read_text()
        try:
            return rpc.call("enrich", "ping")
        except Exception:
            return False
    try:
        wait_for(ready, timeout=60, interval=0.3, what="the enrich service")
        yield rpc
    finally:
        rpc.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        node.stop()
        errors = [line for line in log_path.read_text().splitlines() if " ERROR " in line]
        assert errors == []
        assert (base / "data" / "enrich" / "enrich.db").exists()


def test_enrich_text_over_rpc(enrich):
    enrich.call("enrich", "add_constituency", "Google", ["2001:4860::/32"], ["google.example.com"], [],
                "cert@google.example.com")
    result = enrich.call("enrich", "enrich_text", "from 2001:4860:4860::8888 and 210.107.73.73[.]",
                         "<p>and <a href='hxxp://x.example.net'>this</a></p>")
    assert [(i["type"], i["value"], i["source"]) for i in result["indicators"]] == [
        ("ipv6", "2001:4860:4860::8888", "text"), ("ipv4", "210.107.73.73", "text"),
        ("url", "http://x.example.net", "html"), ("domain", "x.example.net", "html")]
    assert {ip: (n["status"], n["abuse_contact"]) for ip, n in result["networks"].items()} == {
        "2001:4860:4860::8888": ("ok", "arin-contact@google.com"), "210.107.73.73": ("ok", "hostmaster@nic.or.kr")}
    assert result["constituency"] == {"name": "Google", "contact": "cert@google.example.com",
                                      "matched": {"by": "netblock", "value": "2001:4860::/32",
                                                  "indicator": "2001:4860:4860::8888"}}
    assert enrich.call("enrich", "lookup_ip", "210.107.73.73")["cached"] is True
    assert [c["name"] for c in enrich.call("enrich", "list_constituencies")] == ["Google"]


def test_refusals_cross_as_remote_errors(enrich):
    with pytest.raises(RemoteError) as err:
        enrich.call("enrich", "lookup_ip", "not-an-ip")
    assert err.value.exc_type == "BadRequest"
    with pytest.raises(RemoteError) as err:
        enrich.call("enrich", "delete_constituency", "nobody")
    assert err.value.exc_type == "NotFound"
