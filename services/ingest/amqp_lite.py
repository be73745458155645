"""A one-shot AMQP 0-9-1 publisher with publisher confirms, on the stdlib alone:
the mailgate's hot path. A process per mail (as an MTA runs the pipe) spends most
of its time starting Python and importing; pika alone costs ~50 ms of CPU per run
(it imports asyncio, ssl and its adapters), this module ~1 ms.

It does exactly what ``publisher.publish`` does with pika, and no more: connect,
PLAIN login, one channel in confirm mode, declare the intake queue (durable), one
persistent mandatory publish, wait for the broker's ack, close. Every failure
raises ``AMQPError`` (or OSError for the socket), like pika's exceptions: a refused
login, a channel or connection closed by the broker, an unroutable message
(basic.return) or a nack. The caller bounds the whole call (the mailgate's SIGALRM
timer); the socket has the same timeout.

``supports(uri)`` says whether a broker URI is one this client handles: amqp:// and
amqps:// with user, password, host, port and vhost, and no query options (TLS
options, heartbeat, …). For anything else the mailgate uses pika.
"""
from __future__ import annotations

import _socket   # socket.py's wrapper builds its enums at import: 3.5 CPU-ms per mailgate run
import struct
from urllib.parse import unquote, urlsplit   # imported by the interpreter's start already

FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_END = b"\xce"
PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"

# (class, method) ids
CONNECTION_START, CONNECTION_START_OK = (10, 10), (10, 11)
CONNECTION_TUNE, CONNECTION_TUNE_OK = (10, 30), (10, 31)
CONNECTION_OPEN, CONNECTION_OPEN_OK = (10, 40), (10, 41)
CONNECTION_CLOSE, CONNECTION_CLOSE_OK = (10, 50), (10, 51)
CONNECTION_BLOCKED, CONNECTION_UNBLOCKED = (10, 60), (10, 61)
CHANNEL_OPEN, CHANNEL_OPEN_OK = (20, 10), (20, 11)
CHANNEL_CLOSE, CHANNEL_CLOSE_OK = (20, 40), (20, 41)
QUEUE_DECLARE, QUEUE_DECLARE_OK = (50, 10), (50, 11)
BASIC_PUBLISH, BASIC_RETURN, BASIC_ACK, BASIC_NACK = (60, 40), (60, 50), (60, 80), (60, 120)
CONFIRM_SELECT, CONFIRM_SELECT_OK = (85, 10), (85, 11)
BASIC_CLASS = 60

PERSISTENT = 2
CHANNEL = 1


class AMQPError(Exception):
    """The broker refused or did not take the message; the text says what it said."""


class UnroutableError(AMQPError):
    pass


class NackError(AMQPError):
    pass


class ClosedByBroker(AMQPError):
    pass


# --- the broker URI ------------------------------------------------------------------

def supports(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return False
    return parts.scheme in ("amqp", "amqps") and not parts.query and not parts.fragment and bool(parts.hostname)


def parse_uri(uri: str) -> dict:
    """host, port, tls, user, password, vhost of an amqp(s):// URI, with the defaults
    pika applies (guest/guest, port 5672/5671, vhost "/")."""
    parts = urlsplit(uri)
    tls = parts.scheme == "amqps"
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return {
        "host": parts.hostname,
        "port": parts.port or (5671 if tls else 5672),
        "tls": tls,
        "user": unquote(parts.username) if parts.username is not None else "guest",
        "password": unquote(parts.password) if parts.password is not None else "guest",
        "vhost": unquote(path) if path else "/",
    }


# --- encoding ----------------------------------------------------------------------------

def shortstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    if len(data) > 255:
        raise AMQPError(f"a short string is at most 255 bytes: {data[:40]!r}…")
    return bytes((len(data),)) + data


def longstr(value: str | bytes) -> bytes:
    data = value.encode("utf-8") if isinstance(value, str) else value
    return struct.pack(">I", len(data)) + data


def table(values: dict) -> bytes:
    """A field table of strings, booleans and nested tables (all we send)."""
    out = []
    for key, value in values.items():
        out.append(shortstr(key))
        if isinstance(value, bool):
            out.append(b"t" + (b"\x01" if value else b"\x00"))
        elif isinstance(value, dict):
            out.append(b"F" + table(value))
        else:
            out.append(b"S" + longstr(str(value)))
    body = b"".join(out)
    return struct.pack(">I", len(body)) + body


def method_frame(channel: int, method: tuple[int, int], args: bytes = b"") -> bytes:
    payload = struct.pack(">HH", *method) + args
    return struct.pack(">BHI", FRAME_METHOD, channel, len(payload)) + payload + FRAME_END


# --- the connection -------------------------------------------------------------------------

class _Connection:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.frame_max = 131072

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ClosedByBroker("the broker closed the connection")
            self.buf += chunk
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    def frame(self) -> tuple[int, int, bytes]:
        ftype, channel, size = struct.unpack(">BHI", self._read(7))
        payload = self._read(size)
        if self._read(1) != FRAME_END:
            raise AMQPError("bad frame end from the broker")
        return ftype, channel, payload

    def method(self, *expected: tuple[int, int]) -> tuple[tuple[int, int], bytes]:
        """The next method frame (heartbeats and the content of a returned message
        are read past); a close by the broker raises with its reason."""
        while True:
            ftype, channel, payload = self.frame()
            if ftype != FRAME_METHOD:
                continue                         # heartbeat, or a returned message's content
            method = struct.unpack(">HH", payload[:4])
            args = payload[4:]
            if method == CONNECTION_CLOSE:
                self._reply_close_ok(0, CONNECTION_CLOSE_OK)
                raise ClosedByBroker(f"connection closed by the broker: {_close_reason(args)}")
            if method == CHANNEL_CLOSE:
                self._reply_close_ok(channel, CHANNEL_CLOSE_OK)
                raise ClosedByBroker(f"channel closed by the broker: {_close_reason(args)}")
            if method in (CONNECTION_BLOCKED, CONNECTION_UNBLOCKED):
                continue                         # the caller's timer bounds a blocked wait
            if expected and method not in expected:
                raise AMQPError(f"unexpected method {method} from the broker (waiting for {expected})")
            return method, args

    def _reply_close_ok(self, channel: int, method: tuple[int, int]) -> None:
        try:
            self.send(method_frame(channel, method))
        except OSError:
            pass


def _close_reason(args: bytes) -> str:
    try:
        code = struct.unpack(">H", args[:2])[0]
        text = args[3:3 + args[2]].decode("utf-8", "replace")
        return f"{code} {text}"
    except (struct.error, IndexError):
        return "no reason given"


def _skip_table(args: bytes, offset: int) -> int:
    return offset + 4 + struct.unpack(">I", args[offset:offset + 4])[0]


def publish(uri: str, timeout: float, queue: str, body: bytes, headers: dict[str, str],
            content_type: str, content_encoding: str) -> None:
    """Publish ``body`` persistently to ``queue`` (declared durable) through the default
    exchange, mandatory, and return once the broker confirmed it; raise otherwise."""
    params = parse_uri(uri)
    sock = _connect(params["host"], params["port"], timeout)
    try:
        if params["tls"]:
            import socket
            import ssl
            plain = socket.socket(fileno=sock.detach())
            plain.settimeout(timeout)
            sock = ssl.create_default_context().wrap_socket(plain, server_hostname=params["host"])
        conn = _Connection(sock)
        _open(conn, params)
        _publish(conn, queue, body, headers, content_type, content_encoding)
        conn.send(method_frame(0, CONNECTION_CLOSE, struct.pack(">H", 200) + shortstr("") + b"\x00" * 4))
        try:
            conn.method(CONNECTION_CLOSE_OK)
        except (AMQPError, OSError):
            pass                                 # confirmed already; how the close ends does not matter
    finally:
        sock.close()


def _connect(host: str, port: int, timeout: float):
    """A TCP connection to the first address of ``host`` that answers (as
    socket.create_connection, on _socket)."""
    # an ASCII host as bytes: a str goes through the idna codec (1 CPU-ms to import)
    name = host.encode("ascii") if host.isascii() else host
    error: OSError | None = None
    for family, kind, proto, _name, address in _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f"cannot resolve {host}")


def _open(conn: _Connection, params: dict) -> None:
    conn.send(PROTOCOL_HEADER)
    try:
        _method, args = conn.method(CONNECTION_START)
    except ClosedByBroker:
        raise ClosedByBroker("the broker closed the connection before the handshake (not AMQP 0-9-1?)") from None
    offset = _skip_table(args, 2)                       # version-major, version-minor, server-properties
    mechanisms = args[offset + 4:offset + 4 + struct.unpack(">I", args[offset:offset + 4])[0]].split()
    if b"PLAIN" not in mechanisms:
        raise AMQPError(f"the broker offers no PLAIN login ({b' '.join(mechanisms).decode()})")
    client = {"product": "osprey-mailgate", "platform": "Python",
              "capabilities": {"publisher_confirms": True, "basic.nack": True,
                               "authentication_failure_close": True}}
    login = b"\x00" + params["user"].encode() + b"\x00" + params["password"].encode()
    conn.send(method_frame(0, CONNECTION_START_OK, table(client) + shortstr("PLAIN") + longstr(login)
                           + shortstr("en_US")))
    _method, args = conn.method(CONNECTION_TUNE)
    channel_max, frame_max, _heartbeat = struct.unpack(">HIH", args[:8])
    conn.frame_max = frame_max or 131072
    # heartbeat 0: a one-shot connection that lives for well under a heartbeat interval
    conn.send(method_frame(0, CONNECTION_TUNE_OK, struct.pack(">HIH", channel_max, conn.frame_max, 0)))
    conn.send(method_frame(0, CONNECTION_OPEN, shortstr(params["vhost"]) + shortstr("") + b"\x00"))
    conn.method(CONNECTION_OPEN_OK)
    conn.send(method_frame(CHANNEL, CHANNEL_OPEN, shortstr("")))
    conn.method(CHANNEL_OPEN_OK)


def _publish(conn: _Connection, queue: str, body: bytes, headers: dict[str, str], content_type: str,
             content_encoding: str) -> None:
    conn.send(method_frame(CHANNEL, CONFIRM_SELECT, b"\x00"))
    conn.method(CONFIRM_SELECT_OK)
    # reserved short, queue, bits (passive, durable, exclusive, auto-delete, no-wait), arguments
    conn.send(method_frame(CHANNEL, QUEUE_DECLARE, struct.pack(">H", 0) + shortstr(queue) + b"\x02" + table({})))
    conn.method(QUEUE_DECLARE_OK)
    # reserved short, exchange "" (default), routing key, bits (mandatory)
    publish = method_frame(CHANNEL, BASIC_PUBLISH, struct.pack(">H", 0) + shortstr("") + shortstr(queue) + b"\x01")
    # content header: class, weight, body size, property flags (content-type, content-encoding,
    # headers, delivery-mode), the properties in that order
    props = shortstr(content_type) + shortstr(content_encoding) + table(headers) + bytes((PERSISTENT,))
    header_payload = struct.pack(">HHQH", BASIC_CLASS, 0, len(body), 0x8000 | 0x4000 | 0x2000 | 0x1000) + props
    frames = [publish, struct.pack(">BHI", FRAME_HEADER, CHANNEL, len(header_payload)) + header_payload + FRAME_END]
    chunk = conn.frame_max - 8                           # frame header (7) + frame end (1)
    view = memoryview(body)
    for start in range(0, len(body), chunk):
        piece = view[start:start + chunk]
        frames.append(struct.pack(">BHI", FRAME_BODY, CHANNEL, len(piece)))
        frames.append(piece)
        frames.append(FRAME_END)
        if len(frames) > 64:                             # send as we go: no second copy of a large mail
            conn.send(b"".join(frames))
            frames = []
    conn.send(b"".join(frames))
    returned = None
    while True:
        method, args = conn.method(BASIC_ACK, BASIC_NACK, BASIC_RETURN)
        if method == BASIC_RETURN:                       # then its content, then the ack
            returned = _close_reason(args)
            continue
        if method == BASIC_NACK:
            raise NackError("the broker refused the message (nack)")
        if returned is not None:
            raise UnroutableError(f"the broker returned the message: {returned}")
        return
