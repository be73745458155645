"""What the shared publisher promises without a broker: the intake message's
properties, a refusal in milliseconds when nothing listens, and its confinement to
one thread. (Publishing against the real broker: tests/ingest/integration.)"""
from __future__ import annotations

import threading
import time

import pika
import pytest

from osprey import contracts
from osprey.broker import free_port
from services.ingest.publisher import Publisher, intake_properties, publish


def test_intake_properties_are_persistent_raw_bytes_with_the_envelope():
    raw = b"Subject: x\r\n\r\nbody\r\n"
    props = intake_properties(raw, "general", "comment", "lmtp")
    assert props.delivery_mode == pika.DeliveryMode.Persistent.value
    assert (props.content_type, props.content_encoding) == (contracts.INTAKE_CONTENT_TYPE,
                                                            contracts.INTAKE_CONTENT_ENCODING)
    received = props.headers.pop(contracts.H_RECEIVED)
    assert received.endswith("+00:00")
    assert props.headers == {contracts.H_QUEUE: "general", contracts.H_ACTION: "comment",
                             contracts.H_SOURCE: "lmtp", contracts.H_SHA256: contracts.sha256_hex(raw)}


def test_nothing_listening_is_refused_at_once():
    uri = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    t = time.monotonic()
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        publish(b"x", "general", "correspond", "test", uri, timeout=5)
    publisher = Publisher(uri, timeout=5)
    with pytest.raises(pika.exceptions.AMQPConnectionError):
        publisher.publish(b"x", "general", "correspond", "test")
    assert not publisher.connected
    assert time.monotonic() - t < 2


def test_a_publisher_belongs_to_the_thread_that_first_used_it():
    publisher = Publisher(f"amqp://guest:guest@127.0.0.1:{free_port()}/", timeout=1)
    publisher.keepalive()                       # first use: this thread owns it
    errors = []

    def elsewhere():
        try:
            publisher.keepalive()
        except RuntimeError as exc:
            errors.append(str(exc))
    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    assert errors == ["a Publisher is confined to the thread that first used it"]
    publisher.close()                           # still fine on its own thread
