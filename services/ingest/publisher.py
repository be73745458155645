"""Handing one raw mail to the bus: a persistent message on the intake queue, and
a return only after the broker confirmed it. Shared by every intake front end.

* ``publish()`` — one-shot: connect, publish, wait for the confirm, close. The
  MTA pipe (``osprey-mailgate``) uses it; it bounds the whole call with its own
  timer.
* ``Publisher`` — long-lived: one connection and one confirm channel reused for
  every mail, reconnecting after a failure. The LMTP listener uses one.

Both raise on any failure (connection refused or lost, channel closed,
``UnroutableError``, ``NackError``, a blocked connection past the timeout); the
caller decides what the MTA hears (exit 75, ``451 4.3.0``). Nothing here retries
a publish: the MTA does, and a repeated delivery of the same bytes for the same
queue and action is recognised by ingest (``contracts.intake_id``).

Threads: pika's ``BlockingConnection`` is not thread-safe, so a ``Publisher`` is
confined to one thread — the one that first uses it. Calling it from another
thread raises ``RuntimeError``. The LMTP listener gives its publisher a thread of
its own and hands mails to it through an executor.
"""
from __future__ import annotations

import threading

import pika

from osprey import contracts

from .headers import intake_headers


def intake_properties(raw: bytes, queue: str, action: str, source: str,
                      ticket: int | None = None, envelope: dict | None = None) -> pika.BasicProperties:
    """The AMQP properties of one intake message: persistent, raw bytes, the
    delivery envelope in ``x-osprey-*`` headers (``intake_headers``)."""
    return pika.BasicProperties(
        delivery_mode=pika.DeliveryMode.Persistent,
        content_type=contracts.INTAKE_CONTENT_TYPE,
        content_encoding=contracts.INTAKE_CONTENT_ENCODING,
        headers=intake_headers(raw, queue, action, source, ticket, envelope),
    )


def connection_parameters(amqp_uri: str, timeout: float, heartbeat: int | None = None) -> pika.URLParameters:
    """Parameters that keep every blocking step under ``timeout`` where pika can:
    TCP connect, the AMQP handshake, and a connection the broker blocks (memory
    or disk alarm). ``heartbeat`` None accepts the broker's proposal."""
    params = pika.URLParameters(amqp_uri)
    params.socket_timeout = timeout
    params.stack_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    if heartbeat is not None:
        params.heartbeat = heartbeat
    return params


class Publisher:
    """One connection + confirm channel to the intake queue, reused across mails.

    ``publish`` connects when there is no usable connection (first use, or after
    a failure), so a broker restart costs the mails in flight at that moment a
    temporary failure and nothing more. Call ``keepalive`` every few seconds while
    idle: it answers heartbeats and notices a connection the broker closed. Confined
    to one thread (module docstring)."""

    def __init__(self, amqp_uri: str, timeout: float, heartbeat: int | None = None):
        self.amqp_uri = amqp_uri
        self.timeout = timeout
        self.heartbeat = heartbeat
        self._conn: pika.BlockingConnection | None = None
        self._channel = None
        self._owner: int | None = None
        self.connects = 0   # how many connections were opened (a reconnect counts)

    # --- public ----------------------------------------------------------------------
    def publish(self, raw: bytes, queue: str, action: str, source: str, ticket: int | None = None,
                envelope: dict | None = None) -> None:
        """Returns only when the broker confirmed a persistent copy on the intake
        queue; raises otherwise (and drops the connection, so the next call starts
        with a fresh one)."""
        self._check_thread()
        channel = self._ready_channel()
        try:
            # mandatory + confirms: returns only when the broker took responsibility;
            # raises UnroutableError / NackError otherwise
            channel.basic_publish(exchange="", routing_key=contracts.INTAKE_QUEUE, body=raw,
                                  properties=intake_properties(raw, queue, action, source, ticket, envelope),
                                  mandatory=True)
        except BaseException:
            self._drop()
            raise

    def connect(self) -> None:
        """Open the connection now rather than on the first mail (raises if the
        broker cannot be reached)."""
        self._check_thread()
        self._ready_channel()

    def keepalive(self) -> None:
        """Process what the broker sent while we were idle (heartbeats, a close);
        a dead connection is dropped quietly and replaced on the next publish."""
        self._check_thread()
        if self._conn is None:
            return
        try:
            self._conn.process_data_events(0)
        except Exception:
            self._drop()

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.is_open

    def close(self) -> None:
        self._check_thread()
        self._drop()

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- inside ------------------------------------------------------------------------
    def _check_thread(self) -> None:
        me = threading.get_ident()
        if self._owner is None:
            self._owner = me
        elif self._owner != me:
            raise RuntimeError("a Publisher is confined to the thread that first used it")

    def _ready_channel(self):
        if self._conn is not None:
            try:
                # a close, reset or missed heartbeat that arrived while idle shows here
                self._conn.process_data_events(0)
            except Exception:
                self._drop()
        if self._conn is None or not self._conn.is_open or self._channel is None or not self._channel.is_open:
            self._drop()
            self._open()
        return self._channel

    def _open(self) -> None:
        conn = pika.BlockingConnection(connection_parameters(self.amqp_uri, self.timeout, self.heartbeat))
        try:
            channel = conn.channel()
            channel.confirm_delivery()
            channel.queue_declare(queue=contracts.INTAKE_QUEUE, durable=True)
        except BaseException:
            _close_quietly(conn)
            raise
        self._conn, self._channel = conn, channel
        self.connects += 1

    def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None:
            _close_quietly(conn)


def _close_quietly(conn) -> None:
    try:
        if conn.is_open:
            conn.close()
    except Exception:
        pass


def publish(raw: bytes, queue: str, action: str, source: str, amqp_uri: str, timeout: float,
            ticket: int | None = None, envelope: dict | None = None) -> None:
    """One-shot: publish ``raw`` persistently to the intake queue on a connection of
    its own and wait for the broker's confirm. Raises on any failure; the caller
    maps that to a temporary failure (the mailgate: EX_TEMPFAIL)."""
    with Publisher(amqp_uri, timeout) as publisher:
        publisher.publish(raw, queue, action, source, ticket, envelope)
