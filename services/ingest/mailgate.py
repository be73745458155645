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
output would override the exit status in Postfix). The publishing itself is
``services.ingest.publisher.publish``, shared with the LMTP listener.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

EX_OK, EX_USAGE, EX_DATAERR, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 64, 65, 69, 75


class _Timeout(Exception):
    pass


def _alarm(_signum, _frame):
    raise _Timeout()


def main(argv: list[str] | None = None) -> int:
    from osprey.config import settings

    s = settings()
    parser = argparse.ArgumentParser(prog="osprey-mailgate", description="Deliver one mail from stdin to Osprey.")
    parser.add_argument("--queue", default="general", help="target queue (default: general)")
    parser.add_argument("--action", default="correspond", choices=["correspond", "comment"],
                        help="correspond (a message to or from the requestor) or comment (staff-only)")
    parser.add_argument("--ticket", type=int, default=None,
                        help="add the mail to this ticket (as a [tag #N] subject tag would)")
    parser.add_argument("--extension", choices=["queue", "action", "ticket"],
                        help="take the queue, action or ticket from the EXTENSION environment variable "
                             "(as rt-mailgate: the MTA maps osprey-EXT@ to it)")
    parser.add_argument("--timeout", type=float, default=s.mailgate_timeout,
                        help=f"seconds to wait for the broker before exiting 75 (default {s.mailgate_timeout:g})")
    parser.add_argument("--amqp-uri", default=s.amqp_uri, help="broker URI (default: OSPREY_AMQP_URI)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    extension = os.environ.get("EXTENSION", "").strip()
    if args.extension and extension:
        if args.extension == "queue":
            args.queue = extension
        elif args.extension == "action" and extension in ("correspond", "comment"):
            args.action = extension
        elif args.extension == "ticket" and extension.isdigit():
            args.ticket = int(extension)
        else:
            print(f"osprey-mailgate: EXTENSION {extension!r} is no {args.extension}", file=sys.stderr)
            return EX_USAGE

    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, args.timeout)
    try:
        raw = sys.stdin.buffer.read(s.max_mail_bytes + 1)
        if not raw:
            print("osprey-mailgate: empty input, nothing delivered", file=sys.stderr)
            return EX_DATAERR
        if len(raw) > s.max_mail_bytes:
            print(f"osprey-mailgate: mail larger than {s.max_mail_bytes} bytes (OSPREY_MAX_MAIL_BYTES); "
                  "not taken", file=sys.stderr)
            return EX_UNAVAILABLE
        from .publisher import publish   # here, not at the top: `--help` stays quick

        publish(raw, args.queue, args.action, "mailgate", args.amqp_uri, args.timeout, args.ticket)
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


if __name__ == "__main__":
    sys.exit(main())
