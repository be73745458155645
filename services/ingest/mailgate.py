"""osprey-mailgate: the MTA pipe. Reads one mail on stdin and hands it to the bus.

Exit status is the contract with the MTA (sysexits.h, as rt-mailgate):
  0   delivered: the broker confirmed a persistent message on the intake queue
  75  EX_TEMPFAIL: broker down, refused, or slower than --timeout; the MTA retries
      (a retry is harmless: the same bytes for the same queue are one delivery)
  65  EX_DATAERR: stdin was empty; there is nothing to deliver
  69  EX_UNAVAILABLE: the mail is larger than OSPREY_MAX_MAIL_BYTES; the MTA
      bounces it, so its sender learns it was not taken
  64  EX_USAGE: bad command line
Messages go to stderr as plain text (an enhanced status code at the start of the
output would override the exit status in Postfix).

The envelope the MTA knows (``--sender``, ``--recipient``, ``--client-address``) is
kept with the mail as evidence (envelope.py; docs/intake.md shows the Postfix and
Exim lines).

A process per mail is started for every mail, so what it imports is what it costs:
this module imports nothing heavy; the message is published by ``amqp_lite`` (the
stdlib, ~1 ms) when the broker URI is a plain amqp(s):// one, else by
``services.ingest.publisher.publish`` (pika, shared with the LMTP listener).
"""
from __future__ import annotations

import os
import signal
import sys

EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 64, 65, 69, 75
SOURCE = "mailgate"
ACTIONS = ("correspond", "comment")            # osprey.contracts.ACTIONS (a test keeps them equal)
EXTENSIONS = ("queue", "action", "ticket")


class _Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Timeout()


# --- settings ----------------------------------------------------------------------------

def _settings() -> tuple[str, float, int]:
    """OSPREY_AMQP_URI, OSPREY_MAILGATE_TIMEOUT and OSPREY_MAX_MAIL_BYTES, read as
    ``osprey.config.settings()`` reads them, without importing osprey.config: its
    import costs ~12 CPU-ms (dataclasses, inspect, the Settings class) of a run that
    should take 45. tests/ingest/unit/test_mailgate.py holds both to the same values
    and defaults."""
    env = os.environ
    uri = env.get("OSPREY_AMQP_URI", "") or \
        f"amqp://guest:guest@127.0.0.1:{int(env.get('OSPREY_BROKER_PORT', '5673'))}/"
    return (uri, float(env.get("OSPREY_MAILGATE_TIMEOUT", "30")),
            int(env.get("OSPREY_MAX_MAIL_BYTES", str(64 * 1024 * 1024))))


# --- the command line ----------------------------------------------------------------------

class Args:
    def __init__(self, amqp_uri: str, timeout: float):
        self.queue = "general"
        self.action = "correspond"
        self.ticket: int | None = None
        self.extension: str | None = None
        self.sender: str | None = None
        self.recipient: list[str] = []
        self.client_address: str | None = None
        self.timeout = timeout
        self.amqp_uri = amqp_uri


# option → (attribute, kind): a type, a tuple of choices, or "append"
OPTIONS = {
    "--queue": ("queue", str), "--action": ("action", ACTIONS), "--ticket": ("ticket", int),
    "--extension": ("extension", EXTENSIONS), "--sender": ("sender", str), "--recipient": ("recipient", "append"),
    "--client-address": ("client_address", str), "--timeout": ("timeout", float), "--amqp-uri": ("amqp_uri", str),
}


def quick_args(argv: list[str], amqp_uri: str, timeout: float) -> Args | None:
    """The command line as ``parser()`` reads it, for the lines an MTA writes
    (``--option value`` / ``--option=value``); None for anything else (--help, a
    mistake, an abbreviation), which then goes to argparse (3 CPU-ms to import, and 4
    more for what it pulls in) for its help or its error message."""
    args = Args(amqp_uri, timeout)
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if name not in OPTIONS:
            return None
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            value = argv[i + 1]
            i += 1
        i += 1
        attr, kind = OPTIONS[name]
        if kind == "append":
            args.recipient.append(value)
        elif isinstance(kind, tuple):
            if value not in kind:
                return None
            setattr(args, attr, value)
        else:
            try:
                setattr(args, attr, kind(value))
            except ValueError:
                return None
    return args


def parser(amqp_uri: str, timeout: float):
    import argparse

    p = argparse.ArgumentParser(prog="osprey-mailgate", description="Deliver one mail from stdin to Osprey.")
    p.add_argument("--queue", default="general", help="target queue (default: general)")
    p.add_argument("--action", default="correspond", choices=list(ACTIONS),
                   help="correspond (a message to or from the requestor) or comment (staff-only)")
    p.add_argument("--ticket", type=int, default=None,
                   help="add the mail to this ticket (as a [tag #N] subject tag would)")
    p.add_argument("--extension", choices=list(EXTENSIONS),
                   help="take the queue, action or ticket from the EXTENSION environment variable "
                        "(as rt-mailgate: the MTA maps osprey-EXT@ to it)")
    p.add_argument("--sender", metavar="ADDRESS",
                   help="the envelope sender (MAIL FROM; empty for a bounce), kept with the mail as evidence "
                        "(Postfix pipe: --sender=${sender} with null_sender=)")
    p.add_argument("--recipient", metavar="ADDRESS", action="append", default=[],
                   help="an envelope recipient (RCPT TO), kept with the mail; repeatable "
                        "(Postfix pipe: --recipient=${recipient})")
    p.add_argument("--client-address", metavar="IP",
                   help="the SMTP client that handed the mail to the MTA, kept with the mail "
                        "(Postfix pipe: --client-address=${client_address})")
    p.add_argument("--timeout", type=float, default=timeout,
                   help=f"seconds to wait for the broker before exiting 75 (default OSPREY_MAILGATE_TIMEOUT, "
                        f"{timeout:g})")
    p.add_argument("--amqp-uri", default=amqp_uri, help="broker URI (default: OSPREY_AMQP_URI)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    amqp_uri, timeout, max_mail_bytes = _settings()
    args = quick_args(argv, amqp_uri, timeout)
    if args is None:
        try:
            args = parser(amqp_uri, timeout).parse_args(argv)
        except SystemExit as exc:
            return EX_USAGE if exc.code else EX_OK
    extension = os.environ.get("EXTENSION", "").strip()
    if args.extension and extension:
        if args.extension == "queue":
            args.queue = extension
        elif args.extension == "action" and extension in ACTIONS:
            args.action = extension
        elif args.extension == "ticket" and extension.isdigit():
            args.ticket = int(extension)
        else:
            print(f"osprey-mailgate: EXTENSION {extension!r} is no {args.extension}", file=sys.stderr)
            return EX_USAGE

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        raw = sys.stdin.buffer.read(max_mail_bytes + 1)
        if not raw:
            print("osprey-mailgate: empty input, nothing delivered", file=sys.stderr)
            return EX_DATAERR
        if len(raw) > max_mail_bytes:
            print(f"osprey-mailgate: mail larger than {max_mail_bytes} bytes (OSPREY_MAX_MAIL_BYTES); "
                  "not taken", file=sys.stderr)
            return EX_UNAVAILABLE
        from . import envelope

        deliver(raw, args.queue, args.action, args.amqp_uri, args.timeout, args.ticket,
                envelope.make(mail_from=args.sender, rcpt_to=args.recipient, client_address=args.client_address))
    except _Timeout:
        print(f"osprey-mailgate: broker did not confirm within {args.timeout:g}s; try again later",
              file=sys.stderr)
        return EX_TEMPFAIL
    except Exception as exc:
        print(f"osprey-mailgate: could not hand the mail to the broker ({type(exc).__name__}: {exc}); "
              "try again later", file=sys.stderr)
        return EX_TEMPFAIL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    return EX_OK


def deliver(raw: bytes, queue: str, action: str, amqp_uri: str, timeout: float, ticket: int | None,
            envelope: dict) -> None:
    """Publish the mail and return once the broker confirmed it; raise otherwise."""
    from . import amqp_lite

    if amqp_lite.supports(amqp_uri):
        from osprey import contracts

        from .headers import intake_headers

        amqp_lite.publish(amqp_uri, timeout, contracts.INTAKE_QUEUE, raw,
                          intake_headers(raw, queue, action, SOURCE, ticket, envelope),
                          contracts.INTAKE_CONTENT_TYPE, contracts.INTAKE_CONTENT_ENCODING)
    else:   # URI options (TLS settings, …) only pika understands
        from .publisher import publish

        publish(raw, queue, action, SOURCE, amqp_uri, timeout, ticket, envelope)


if __name__ == "__main__":
    sys.exit(main())
