"""The outbound commands of the `osprey` CLI: templates, reply, forward, the outbox,
a queue's mail policy. ``register(sub, add)`` is called by cli.main.build_parser."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .main import _call, _print, _rpc

KINDS = ["reply", "forward", "notification", "bulk", "auto-reply", "introduction", "signature"]


def _text(value: str | None) -> str | None:
    """'-' reads stdin, '@FILE' reads a file, anything else is the text itself."""
    if value is None:
        return None
    if value == "-":
        return sys.stdin.read()
    if value.startswith("@"):
        return Path(value[1:]).read_text()
    return value


def cmd_template_save(args) -> int:
    body = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
    _print(_call(_rpc(), "notify", "save_template", args.as_user, args.name, args.kind, body, args.subject or "",
                 args.lang or "", args.queue or "", args.description or ""), args.json)
    return 0


def cmd_template_list(args) -> int:
    rows = _call(_rpc(), "notify", "list_templates", args.as_user, args.kind, args.queue)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for t in rows:
            print(f"{t['kind']:<13} {t['name']:<28} {t['lang'] or '-':<6} {t['queue'] or '(every queue)':<16} "
                  f"{t['description']}")
    return 0


def cmd_template_show(args) -> int:
    t = _call(_rpc(), "notify", "get_template", args.as_user, args.name, args.lang or "")
    if args.json:
        print(json.dumps(t, indent=2))
    else:
        print(f"# {t['kind']} {t['name']} lang={t['lang'] or '-'} queue={t['queue'] or '-'}")
        if t["subject"]:
            print(f"# subject: {t['subject']}")
        print(t["body"])
    return 0


def cmd_template_delete(args) -> int:
    _print(_call(_rpc(), "notify", "delete_template", args.as_user, args.name, args.lang or ""), args.json)
    return 0


def cmd_template_preview(args) -> int:
    template = args.name
    if args.file:
        template = {"body": Path(args.file).read_text(), "subject": args.subject or "", "kind": args.kind}
    result = _call(_rpc(), "notify", "preview", args.as_user, args.ticket, template, args.lang, args.article)
    if args.json:
        print(json.dumps(result, indent=2))
    elif "error" in result:
        print(f"osprey: template {result['template']}"
              + (f" line {result['line']}" if result.get("line") else "") + f": {result['error']}", file=sys.stderr)
    else:
        print(f"Subject: {result['subject']}\n\n{result['body']}", end="")
    return 1 if "error" in result else 0


def _send(args, action: str) -> int:
    result = _call(_rpc(), "notify", "send", args.as_user, args.id, action, args.to or None, args.cc or None,
                   args.bcc or None, args.subject, _text(args.text), args.template, args.lang, args.article,
                   "inline" if getattr(args, "inline", False) else "attach", args.sign, args.encrypt,
                   getattr(args, "remind_after", None), getattr(args, "remind_third_party", False), args.time,
                   args.idempotency_key)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{action} for #{result['ticket_id']} queued as {result['id']} ({result['message_id']}) "
              f"to {', '.join(result['recipients'])}" + (" (replayed)" if result.get("replayed") else ""))
    return 0


def cmd_reply(args) -> int:
    return _send(args, "reply")


def cmd_forward(args) -> int:
    return _send(args, "forward")


def cmd_mail_staff(args) -> int:
    return _send(args, "comment")


def cmd_outbox(args) -> int:
    rpc = _rpc()
    if args.retry:
        _print(_call(rpc, "notify", "retry_outbox", args.as_user, args.retry), args.json)
        return 0
    rows = _call(rpc, "notify", "list_outbox", args.as_user, args.state, args.ticket, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['created'][:19]}  {r['id']}  #{r['ticket_id'] or '-':<6} {r['kind']:<12} {r['state']:<7} "
                  f"attempts {r['attempts']}  to {', '.join(r['recipients'])}")
            if r["last_error"]:
                print(f"    {r['last_error']}")
    return 0


def cmd_mail_policy(args) -> int:
    rpc = _rpc()
    if any(v is not None for v in (args.from_address, args.from_name, args.sign, args.encrypt, args.scheme)):
        result = _call(rpc, "notify", "set_queue_policy", args.as_user, args.queue, args.from_address, args.from_name,
                       args.sign, args.encrypt, args.scheme)
    else:
        result = _call(rpc, "notify", "get_queue_policy", args.as_user, args.queue)
    _print(result, args.json)
    return 0


def register(sub, add) -> None:
    """Add the outbound commands to the `osprey` parser (``add`` is build_parser's)."""
    def as_user(sp):
        sp.add_argument("--as", dest="as_user", default="admin", help="act as this user (default admin)")
        return sp

    tpl = sub.add_parser("template", help="mail templates").add_subparsers(dest="sub", required=True)
    sp = as_user(add("save", cmd_template_save, "create or replace a template from a file ('-': stdin)", tpl))
    sp.add_argument("name")
    sp.add_argument("file")
    sp.add_argument("--kind", required=True, choices=KINDS)
    sp.add_argument("--subject", help="the subject template (bodies only)")
    sp.add_argument("--lang", help="a language variant, e.g. de (default: the default one)")
    sp.add_argument("--queue", help="introduction / signature / auto-reply: the queue (default: every queue)")
    sp.add_argument("--description")
    sp = as_user(add("list", cmd_template_list, "list templates", tpl))
    sp.add_argument("--kind", choices=KINDS)
    sp.add_argument("--queue")
    for name, func, help_ in (("show", cmd_template_show, "print a template"),
                              ("delete", cmd_template_delete, "delete a template")):
        sp = as_user(add(name, func, help_, tpl))
        sp.add_argument("name")
        sp.add_argument("--lang")
    sp = as_user(add("preview", cmd_template_preview,
                     "render a template against a ticket (errors give the line); --file previews an unsaved one", tpl))
    sp.add_argument("name", nargs="?", default="unsaved")
    sp.add_argument("ticket", type=int)
    sp.add_argument("--lang")
    sp.add_argument("--article", type=int)
    sp.add_argument("--file", help="preview this file instead of a saved template")
    sp.add_argument("--subject", help="with --file: the subject template")
    sp.add_argument("--kind", default="reply", choices=KINDS)

    def sending(sp, to_required=False):
        as_user(sp)
        sp.add_argument("id", type=int, help="the ticket")
        sp.add_argument("--to", action="append", required=to_required, help="a recipient (repeatable)")
        sp.add_argument("--cc", action="append")
        sp.add_argument("--bcc", action="append")
        sp.add_argument("--subject", help="default: Re:/Fwd: the answered mail's subject; the ticket tag is added")
        sp.add_argument("--text", help="the text as it goes out ('-': stdin, '@FILE': a file)")
        sp.add_argument("--template", help="a template (with the queue's introduction and signature) when no --text")
        sp.add_argument("--lang")
        sp.add_argument("--article", type=int, help="the article answered or forwarded")
        sp.add_argument("--sign", action="store_true", default=None, help="sign (default: the queue's policy)")
        sp.add_argument("--encrypt", action="store_true", default=None, help="encrypt (default: the queue's policy)")
        sp.add_argument("--time", type=int, default=0, metavar="MINUTES", help="time worked")
        sp.add_argument("--idempotency-key", help="repeat-safe: the same key never sends twice")
        return sp

    sending(add("reply", cmd_reply, "reply by mail (to the answered mail's sender unless --to)"))
    sp = sending(add("forward", cmd_forward, "forward a mail: the original attached byte-exact (or --inline)"),
                 to_required=True)
    sp.add_argument("--inline", action="store_true", help="quote the original instead of attaching it")
    sp.add_argument("--remind-after", type=int, metavar="MINUTES", help="remind me if no answer by then")
    sp.add_argument("--remind-third-party", action="store_true", help="and then remind the recipient by mail")
    sending(add("mail-staff", cmd_mail_staff, "comment-to-staff: mail colleagues (user names or addresses)"),
            to_required=True)

    sp = as_user(add("outbox", cmd_outbox, "mail waiting, sent and failed (administrators; --ticket N: one ticket)"))
    sp.add_argument("--state", choices=["queued", "sending", "retry", "sent", "failed"])
    sp.add_argument("--ticket", type=int)
    sp.add_argument("--limit", type=int, default=100)
    sp.add_argument("--retry", metavar="ID", help="queue a failed mail again")

    sp = as_user(add("mail-policy", cmd_mail_policy, "show or set how a queue's mail goes out"))
    sp.add_argument("queue")
    sp.add_argument("--from-address")
    sp.add_argument("--from-name")
    sp.add_argument("--sign", action=argparse.BooleanOptionalAction, default=None)
    sp.add_argument("--encrypt", action=argparse.BooleanOptionalAction, default=None)
    sp.add_argument("--scheme", choices=["pgp-mime", "pgp-inline", "smime"])
