"""CryptoService as two replica processes (``python -m osprey.servicerunner crypto``,
what `make run` runs) on a real RabbitMQ node and one database, called over RPC the
way ingest and the gateway call it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from nameko.exceptions import RemoteError

from osprey import contracts
from osprey.broker import RabbitNode
from osprey.rpc import Rpc
from tests.helpers import wait_for

from ..conftest import CSIRT_PW, CSIRT_PW_ENV
from ..world import headers, mail, pgp_encrypted, text_part

ROOT = Path(__file__).resolve().parents[3]
ALICE = "Alice Reporter <alice@example.net>"


def agents_of(data_dir: str) -> list[int]:
    """gpg-agents started on behalf of the replicas with this data folder (an agent
    inherits the environment of the process whose gpg started it)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if not fh.read().startswith(b"gpg-agent"):
                    continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                if f"OSPREY_DATA_DIR={data_dir}".encode() in fh.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def crypto(tmp_path_factory):
    base = tmp_path_factory.mktemp("crypto-broker")
    node = RabbitNode(base / "rabbitmq")
    with open(base / "rabbitmq.log", "ab") as log:
        node.start(timeout=90, log=log)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSPREY_")}
    env.update({"OSPREY_DATA_DIR": str(base / "data"), "OSPREY_AMQP_URI": node.uri, "OSPREY_START_BROKER": "0",
                "PYTHONUNBUFFERED": "1", CSIRT_PW_ENV: CSIRT_PW,
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    procs, logs = [], []
    for i in range(2):
        log_path = base / f"crypto{i}.log"
        logs.append(log_path)
        with open(log_path, "ab") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "osprey.servicerunner", "crypto"], env=env,
                                          cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
    rpc = Rpc(amqp_uri=node.uri, timeout=30)

    def ready():
        for p, log_path in zip(procs, logs):
            assert p.poll() is None, log_path.read_text()
        try:
            return rpc.call(contracts.CRYPTO, "ping")
        except Exception:
            return False
    try:
        wait_for(ready, timeout=60, interval=0.3, what="the crypto service")
        yield rpc
        assert agents_of(env["OSPREY_DATA_DIR"])       # the replicas' homes have agents now
    finally:
        rpc.close()
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        node.stop()
        errors = [line for path in logs for line in path.read_text().splitlines() if " ERROR " in line]
        assert errors == []
        assert [p.returncode for p in procs] == [0, 0]
        assert agents_of(env["OSPREY_DATA_DIR"]) == []    # a stopped replica stops its gpg-agent


def test_ping_reaches_both_replicas(crypto):
    seen = set()
    for _ in range(20):
        pong = crypto.call(contracts.CRYPTO, "ping")
        assert pong["ok"] and "gpg (GnuPG)" in pong["tools"]["gpg"]
        seen.add(pong["replica"])
        if len(seen) == 2:
            break
    assert len(seen) == 2


def test_keys_and_unwrap_over_rpc(crypto, world):
    p = world.people
    made = crypto.call(contracts.CRYPTO, "import_key", contracts.b64(p["csirt"].secret), trusted=True,
                       queue="general", passphrase_env=CSIRT_PW_ENV)
    assert made[0]["fingerprint"] == p["csirt"].fpr and made[0]["queue"] == "general"
    crypto.call(contracts.CRYPTO, "import_key", contracts.b64(p["alice"].public))
    listed = {k["fingerprint"]: k for k in crypto.call(contracts.CRYPTO, "list_keys")}
    assert listed[p["alice"].fpr]["trusted"] is False and listed[p["csirt"].fpr]["problem"] is None

    raw = mail(headers(ALICE), pgp_encrypted(world, [p["csirt"]], text_part("over the bus\n"), signer=p["alice"]))
    # every replica answers from the same database: the verdict follows the trust flag
    for _ in range(4):
        res = crypto.call(contracts.CRYPTO, "unwrap", contracts.b64(raw))
        assert res["security"]["verdict"] == "unverified" and res["security"]["decrypted"]
        assert contracts.unb64(res["mime"]).endswith(b"over the bus\r\n")
    crypto.call(contracts.CRYPTO, "set_trust", p["alice"].fpr, True)
    for _ in range(4):
        res = crypto.call(contracts.CRYPTO, "unwrap", contracts.b64(raw))
        assert res["security"]["verdict"] == "verified"
        assert res["parts"] == [{"part": "1", "content_type": "text/plain", "filename": None, "attachment": False,
                                 "encrypted": True, "signatures": [1], "partial": False}]


def test_protect_over_rpc(crypto, world):
    p = world.people
    crypto.call(contracts.CRYPTO, "import_key", contracts.b64(p["csirt"].secret), trusted=True, queue="general",
                passphrase_env=CSIRT_PW_ENV)
    crypto.call(contracts.CRYPTO, "import_key", contracts.b64(p["alice"].public))
    raw = mail(headers("CSIRT <csirt@example.org>"), text_part("reply to alice\n"))
    out = crypto.call(contracts.CRYPTO, "protect", contracts.b64(raw), sign_with_queue="general",
                      encrypt_to=["alice@example.net"], scheme="pgp-mime")
    assert {e["address"] for e in out["encrypted_to"]} == {"alice@example.net", "(self)"}
    sent = contracts.unb64(out["mime"])
    res = world.gpg.decrypt(sent[sent.index(b"-----BEGIN PGP MESSAGE-----"):])
    assert res.decrypted and res.sigs[0].status == "good" and b"reply to alice" in res.data
    with pytest.raises(RemoteError) as exc:
        crypto.call(contracts.CRYPTO, "protect", contracts.b64(raw), encrypt_to=["nobody@example.com"])
    assert exc.value.exc_type == "NoUsableKey" and "nobody@example.com" in str(exc.value)


def test_refusals(crypto):
    with pytest.raises(RemoteError) as exc:
        crypto.call(contracts.CRYPTO, "delete_key", "00" * 20)
    assert exc.value.exc_type == "NotFound"
    with pytest.raises(RemoteError) as exc:
        crypto.call(contracts.CRYPTO, "unwrap", "not base64!")
    assert exc.value.exc_type == "BadRequest"
    with pytest.raises(RemoteError) as exc:
        crypto.call(contracts.CRYPTO, "import_key", contracts.b64(b"garbage"))
    assert exc.value.exc_type == "BadRequest"
    res = crypto.call(contracts.CRYPTO, "unwrap", contracts.b64(b"\x00garbage, not a mail"))
    assert res["security"]["verdict"] == "none"
