"""osprey — the operator's command line.

Talks to the services over the bus (OSPREY_AMQP_URI), like the gateway does; whoever
can reach the broker is an operator. `osprey --help` and `osprey COMMAND --help`.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from osprey import config, contracts

ROOT = Path(__file__).resolve().parent.parent


def _rpc():
    from osprey.rpc import Rpc
    return Rpc()


def _print(data, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    elif isinstance(data, list):
        for row in data:
            print("  ".join(f"{k}={v}" for k, v in row.items()))
    else:
        for k, v in data.items():
            print(f"{k}: {v}")


def _call(rpc, service, method, *args):
    from nameko.exceptions import RemoteError
    from osprey.rpc import RpcUnavailable
    try:
        return rpc.call(service, method, *args)
    except RemoteError as exc:
        raise SystemExit(f"osprey: {exc.exc_type}: {exc.value}")
    except RpcUnavailable as exc:
        raise SystemExit(f"osprey: {exc} (is Osprey running? `osprey status`)")


# --- running the system --------------------------------------------------------

def local_node():
    from osprey.broker import RabbitNode
    s = config.settings()
    port = s.broker_port
    return RabbitNode(s.data_dir / "rabbitmq", port=port, name="osprey@localhost",
                      dist_port=port + 20000 if port + 20000 < 65536 else port - 1,
                      epmd_port=port + 10000 if port + 10000 < 65536 else port - 2)


def _amqp_clients(port: int) -> int:
    """Established TCP connections to the broker's port, from /proc/net/tcp{,6}."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                count += 1
    return count


def cmd_broker_run(args) -> int:
    """The local RabbitMQ node in the foreground (one line of the Procfile).

    On SIGTERM the node outlives its clients: it waits (up to 15 s) until the services
    have closed their connections, then stops, so that they stop cleanly. A terminal's
    Ctrl-C does not reach the node directly (its own session); the supervisor decides."""
    node = local_node()
    proc = subprocess.Popen(node.command(), env=node.env(), start_new_session=True)
    stopping = []

    def stop(_signum, _frame):
        stopping.append(time.monotonic())
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while proc.poll() is None:
        if stopping:
            deadline = stopping[0] + 15
            while _amqp_clients(node.port) and time.monotonic() < deadline:
                time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    code = proc.wait()
    node.kill_epmd()
    return code


def cmd_service_run(args) -> int:
    os.execv(sys.executable, [sys.executable, "-m", "osprey.servicerunner", args.name])


def cmd_gateway_run(args) -> int:
    import uvicorn
    s = config.settings()
    uvicorn.run("gateway.app:app", host=s.http_host, port=s.http_port, log_level=s.log_level.lower(),
                proxy_headers=False, access_log=False)
    return 0


def cmd_run(args) -> int:
    """Everything under one supervisor (honcho): broker, five services, gateway."""
    s = config.settings()
    s.data_dir.mkdir(parents=True, exist_ok=True)
    names = ["tickets", "ingest", "crypto", "enrich", "notify", "gateway", "lmtp", "ready"]
    if s.start_broker:
        names.insert(0, "broker")
    if s.mail_accounts:   # the poller runs only where mailboxes are configured
        names.insert(-1, "poller")
    print(f"Osprey: data in {s.data_dir}\n"
          f"Osprey: web UI and API at {s.public_url}  (log in as 'admin'; the password is "
          f"{'OSPREY_ADMIN_PASSWORD' if s.admin_password else 'printed below on first start'})\n"
          f"Osprey: Ctrl-C stops everything; the data stays for the next start.", flush=True)
    from honcho import manager as honcho_manager
    from honcho.environ import parse_procfile
    from honcho.printer import Printer

    honcho_manager.KILL_WAIT = 25   # let services and then the broker stop cleanly
    procfile = parse_procfile((ROOT / "Procfile").read_text())
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONUNBUFFERED="1")
    supervisor = honcho_manager.Manager(Printer(sys.stdout))
    for name in names:
        supervisor.add_process(name, procfile.processes[name], env=env, cwd=str(ROOT))
    supervisor.loop()
    return supervisor.returncode


def cmd_announce(args) -> int:
    """Wait until the gateway says every service is ready, say so, then stay (a
    Procfile line: the supervisor stops everything when one line exits)."""
    import urllib.error
    import urllib.request
    s = config.settings()
    url = f"http://{s.http_host}:{s.http_port}/readyz"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    started = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    login = ("the password in OSPREY_ADMIN_PASSWORD" if s.admin_password else
             "the password printed once by tickets on the first start (reset: osprey user passwd admin)")
    print(f"\n  Osprey is ready after {time.monotonic() - started:.0f}s: {s.public_url}\n"
          f"  log in as admin with {login}\n"
          f"  deliver mail: {Path(sys.executable).parent / 'osprey-mailgate'} --queue general < some.eml\n"
          f"            or by LMTP to {s.lmtp_host}:{s.lmtp_port} (recipient general@…)\n",
          flush=True)
    while True:
        signal.pause()


def cmd_status(args) -> int:
    from osprey.broker import amqp_reachable
    from urllib.parse import urlparse
    s = config.settings()
    uri = urlparse(s.amqp_uri)
    rows, ok = [], True
    broker_ok = amqp_reachable(uri.port or 5672, uri.hostname or "127.0.0.1", timeout=2)
    rows.append({"component": "broker", "ok": broker_ok, "detail": s.amqp_uri.split("@")[-1]})
    ok &= broker_ok
    if broker_ok:
        from osprey.rpc import Rpc
        rpc = Rpc(timeout=args.timeout)
        for name in contracts.SERVICES:
            try:
                reply = rpc.call(name, "ping")
                rows.append({"component": name, "ok": bool(reply.get("ok")),
                             "detail": json.dumps({k: v for k, v in reply.items() if k not in ("ok", "service")})})
                ok &= bool(reply.get("ok"))
            except Exception as exc:
                rows.append({"component": name, "ok": False, "detail": f"no answer ({type(exc).__name__})"})
                ok = False
        rpc.close()
    if args.json:
        print(json.dumps({"ok": ok, "components": rows}, indent=2))
    else:
        for r in rows:
            print(f"{r['component']:<8} {'up  ' if r['ok'] else 'DOWN'}  {r['detail']}")
    return 0 if ok else 1


# --- users and tokens ------------------------------------------------------------

def _password(args) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("osprey: the passwords differ")
    return first


def cmd_user_list(args) -> int:
    _print(_call(_rpc(), "tickets", "list_users"), args.json)
    return 0


def cmd_user_add(args) -> int:
    password = None if args.no_password else _password(args)
    role = "admin" if args.admin else args.role
    _print(_call(_rpc(), "tickets", "create_user", args.username, password, args.admin, role, args.email), args.json)
    return 0


def cmd_user_passwd(args) -> int:
    _print(_call(_rpc(), "tickets", "set_password", args.username, _password(args)), args.json)
    return 0


def cmd_user_disable(args) -> int:
    _print(_call(_rpc(), "tickets", "set_disabled", args.username, True), args.json)
    return 0


def cmd_user_enable(args) -> int:
    _print(_call(_rpc(), "tickets", "set_disabled", args.username, False), args.json)
    return 0


def cmd_token_create(args) -> int:
    result = _call(_rpc(), "tickets", "create_token", args.user, args.days, args.name)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(result["token"])
        print(f"(for {result['user']['username']}, expires {result['expires']}; shown once)", file=sys.stderr)
    return 0


# --- tickets, search, intake ------------------------------------------------------

def cmd_search(args) -> int:
    results = _call(_rpc(), "tickets", "search", args.as_user, " ".join(args.query), args.limit)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            snippet = (r.get("snippet") or "").replace("\x02", "").replace("\x03", "").replace("\n", " ")
            print(f"#{r['id']:<6} {r['state']:<9} {r['queue']:<12} {r['subject']}\n        {snippet}")
        print(f"{len(results)} ticket(s)", file=sys.stderr)
    return 0


def cmd_ticket_show(args) -> int:
    rpc = _rpc()
    ticket = _call(rpc, "tickets", "get_ticket", args.as_user, args.id)
    articles = _call(rpc, "tickets", "list_articles", args.as_user, args.id)
    if args.json:
        print(json.dumps({"ticket": ticket, "articles": articles}, indent=2))
        return 0
    if ticket.get("merged_from"):
        print(f"(#{ticket['merged_from']} was merged into #{ticket['id']})")
    print(f"#{ticket['id']} [{ticket['queue']}] {ticket['state']}"
          + (f" ({ticket['outcome']})" if ticket["outcome"] else "") + f": {ticket['subject']}")
    print(f"priority {ticket['priority']}, owner {ticket['owner'] or 'nobody'}, version {ticket['version']}, "
          f"time worked {ticket['time_worked']} min")
    for role, addresses in ticket["people"].items():
        if addresses:
            print(f"{role}: {', '.join(addresses)}")
    for name, value in ticket["fields"].items():
        print(f"{name}: {', '.join(value) if isinstance(value, list) else value}")
    for link in ticket["links"]:
        print(f"{link['label']} #{link['ticket_id']} ({link['state']}) {link['subject']}")
    for a in articles:
        print(f"\n--- article {a['id']} from {a['from']} ({a['date'] or a['created']}) sha256 {a['raw_sha256']}")
        print(a["body_text"])
    return 0


def cmd_queue_add(args) -> int:
    _print(_call(_rpc(), "tickets", "create_queue", args.name, args.description, args.followup_policy), args.json)
    return 0


def cmd_queue_list(args) -> int:
    queues = _call(_rpc(), "tickets", "list_queues", args.as_user)
    if args.json:
        print(json.dumps(queues, indent=2))
    else:
        for q in queues:
            counts = ", ".join(f"{k} {v}" for k, v in sorted(q["counts"].items())) or "empty"
            print(f"{q['name']:<20} {q['total']:>6} ticket(s)  ({counts})  {q['description']}")
    return 0


def cmd_tickets(args) -> int:
    result = _call(_rpc(), "tickets", "list_tickets", args.as_user, args.queue, args.state, args.limit, 0,
                   args.owner, args.order)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for t in result["tickets"]:
            print(f"#{t['id']:<6} {t['state']:<9} p{t['priority']:<3} {t['queue']:<12} {t['owner'] or '-':<10} "
                  f"{t['subject']}")
        print(f"{result['total']} ticket(s)", file=sys.stderr)
    return 0


def cmd_intake(args) -> int:
    if args.raw:
        blob = _call(_rpc(), "ingest", "get_raw", args.sha256.lower())
        sys.stdout.buffer.write(contracts.unb64(blob["data"]))
        return 0
    _print(_call(_rpc(), "ingest", "intake_status", args.sha256.lower()), True)
    return 0


def cmd_quarantine_retry(args) -> int:
    result = _call(_rpc(), "ingest", "retry", args.intake_id.lower(), f"cli:{os.environ.get('USER', 'operator')}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        where = f"ticket #{result['ticket_id']}" if result["ticket_id"] else result["reason"]
        print(f"{result['intake_id']}: {result['status']} ({where})")
    return 0 if result["status"] == contracts.INTAKE_DELIVERED else 1


def cmd_quarantine(args) -> int:
    rows = _call(_rpc(), "ingest", "list_intake", contracts.INTAKE_QUARANTINED, args.limit, 0)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['received_at'][:19]}  intake {r['intake_id']}  sha256 {r['sha256']}  {r['queue']}\n"
                  f"    {r['reason']}")
    return 0


# --- changing tickets (ticket core) --------------------------------------------------

def _pairs(items, what) -> dict:
    out: dict = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"osprey: {what} is NAME=VALUE, not {item!r}")
        if name in out:   # repeated: a multi-value field
            out[name] = (out[name] if isinstance(out[name], list) else [out[name]]) + [value]
        else:
            out[name] = value
    return out


def _key(args):
    return getattr(args, "idempotency_key", None)


def _show_change(result, args) -> int:
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    changed = result.get("changed", result)
    if not changed:
        print("nothing changed")
    for what, change in changed.items() if isinstance(changed, dict) else []:
        if isinstance(change, dict) and "old" in change:
            print(f"{what}: {change['old']} -> {change['new']}")
        else:
            print(f"{what}: {change}")
    return 0


def cmd_ticket_create(args) -> int:
    result = _call(_rpc(), "tickets", "create_ticket", args.as_user, args.queue, args.subject, args.text or "",
                   args.requestor or [], _pairs(args.field, "--field"), args.priority, _key(args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"#{result['id']} created in {result['queue']}")
    return 0


def cmd_ticket_update(args) -> int:
    changes = {k: v for k, v in (("subject", args.subject), ("queue", args.queue), ("state", args.state),
                                 ("outcome", args.outcome), ("priority", args.priority), ("due", args.due),
                                 ("time_estimated", args.time_estimated)) if v is not None}
    if args.owner is not None:
        changes["owner"] = "" if args.owner in ("", "nobody") else args.owner
    if args.field:
        changes["fields"] = _pairs(args.field, "--field")
    result = _call(_rpc(), "tickets", "update_ticket", args.as_user, args.id, changes, args.version, _key(args))
    return _show_change(result, args)


def cmd_ticket_take(args) -> int:
    return _show_change(_call(_rpc(), "tickets", "take_ticket", args.as_user, args.id, args.steal, None, _key(args)),
                        args)


def cmd_ticket_people(args) -> int:
    return _show_change(_call(_rpc(), "tickets", "set_people", args.as_user, args.id, args.role, args.add or [],
                              args.remove or [], _key(args)), args)


def cmd_ticket_comment(args) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    result = _call(_rpc(), "tickets", "add_comment", args.as_user, args.id, text, args.time, _key(args))
    print(json.dumps(result, indent=2) if args.json else f"article {result['id']} added to #{result['ticket_id']}")
    return 0


def cmd_ticket_link(args) -> int:
    method = "remove_link" if args.remove else "add_link"
    extra = () if args.remove else (_key(args),)
    result = _call(_rpc(), "tickets", method, args.as_user, args.id, args.type, args.other, *extra)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for link in result["links"]:
            print(f"{link['label']:<16} #{link['ticket_id']:<6} {link['state']:<9} {link['subject']}")
    return 0


def cmd_ticket_merge(args) -> int:
    result = _call(_rpc(), "tickets", "merge_tickets", args.as_user, args.id, args.into, _key(args))
    print(json.dumps(result, indent=2) if args.json else
          f"#{result['merged_ticket_id']} merged into #{result['ticket_id']} "
          f"({result['articles_moved']} article(s), time worked now {result['time_worked']} min)")
    return 0


def cmd_ticket_split(args) -> int:
    result = _call(_rpc(), "tickets", "split_ticket", args.as_user, args.id, args.articles, args.copy_field or [],
                   args.subject, args.queue, _key(args))
    print(json.dumps(result, indent=2) if args.json else
          f"#{result['ticket_id']} split from #{result['source_ticket_id']} with article(s) "
          + ", ".join(map(str, result["articles"])))
    return 0


def cmd_ticket_previous(args) -> int:
    rows = _call(_rpc(), "tickets", "previous_incidents", args.as_user, args.id, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for t in rows:
            why = ", ".join([f"same IP {x}" for x in t["same_ip"]] + [f"netblock {x}" for x in t["netblock"]])
            print(f"#{t['id']:<6} {t['created'][:10]} {t['state']:<9} {t['subject']}  ({why})")
        print(f"{len(rows)} earlier incident(s)", file=sys.stderr)
    return 0


def cmd_ticket_remind(args) -> int:
    result = _call(_rpc(), "tickets", "add_reminder", args.as_user, args.id, args.due, args.text, args.awaiting,
                   args.notify_third_party, _key(args))
    print(json.dumps(result, indent=2) if args.json else f"reminder {result['id']} due {result['due']}")
    return 0


def cmd_reminders(args) -> int:
    rows = _call(_rpc(), "tickets", "list_reminders", args.as_user, not args.all_users, args.status)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(f"{r['due']}  #{r['ticket_id']:<6} {r['owner']:<12} {r['text']}"
                  + (f"  (awaiting {r['awaiting']})" if r["awaiting"] else ""))
    return 0


# --- administration -------------------------------------------------------------------

def cmd_enrich_lookup(args) -> int:
    result = _call(_rpc(), "enrich", "lookup_ip", args.ip, args.refresh)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for key in ("ip", "status", "class", "registry", "source", "name", "cidr", "asn", "country", "abuse_contact",
                "errors", "cached"):
        if result.get(key) not in (None, "", []):
            print(f"{key}: {result[key]}")
    return 0


def cmd_enrich_extract(args) -> int:
    text = sys.stdin.read() if args.text == "-" else args.text
    rows = _call(_rpc(), "enrich", "extract", text)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for i in rows:
            print(f"{i['type']:<8} {i['value']}" + (f"  ({i['class']})" if i.get("class") else ""))
    return 0


def cmd_enrich_update_bootstrap(args) -> int:
    from services.enrich import lookup
    counts = lookup.update_bootstrap(base_url=args.url)
    print(json.dumps(counts, indent=2) if args.json else
          "updated " + ", ".join(f"{k}: {v} entries" for k, v in counts.items())
          + " (restart the enrich service to use them)")
    return 0


def cmd_constituency_add(args) -> int:
    _print(_call(_rpc(), "enrich", "add_constituency", args.name, args.netblock or [], args.domain or [],
                 args.asn or [], args.contact, args.queue, args.language, args.encryption), args.json)
    return 0


def cmd_constituency_list(args) -> int:
    rows = _call(_rpc(), "enrich", "list_constituencies")
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for c in rows:
            print(f"{c['name']:<20} {c['contact']:<30} {' '.join(c['netblocks'] + c['domains'] + [f'AS{a}' for a in c['asns']])}")
    return 0


def cmd_constituency_delete(args) -> int:
    _print(_call(_rpc(), "enrich", "delete_constituency", args.name), args.json)
    return 0


def cmd_keys_list(args) -> int:
    rows = _call(_rpc(), "crypto", "list_keys")
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for k in rows:
        flags = [f for f, on in (("trusted", k.get("trusted")), ("anchor", k.get("anchor")), ("secret", k.get("secret")),
                                 ("EXPIRED", k.get("expired")), ("expiring soon", k.get("expiring_soon")),
                                 ("REVOKED", k.get("revoked"))) if on]
        who = ", ".join(k.get("addresses") or k.get("uids") or [])
        print(f"{k['kind']:<8} {k.get('fingerprint', ''):<40} {(k.get('expires') or 'no expiry')[:10]:<10} "
              f"{' '.join(flags):<24} {who}" + (f"  queue={k['queue']}" if k.get("queue") else "")
              + (f"  PROBLEM: {k['problem']}" if k.get("problem") else ""))
    return 0


def cmd_keys_import(args) -> int:
    data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    rows = _call(_rpc(), "crypto", "import_key", contracts.b64(data), args.trusted, args.queue, args.passphrase_env)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for k in rows:
            print(f"imported {k['kind']} {k.get('fingerprint', '')} {', '.join(k.get('addresses') or [])}")
    return 0


def cmd_keys_delete(args) -> int:
    _print(_call(_rpc(), "crypto", "delete_key", args.fingerprint), args.json)
    return 0


def cmd_keys_trust(args) -> int:
    _print(_call(_rpc(), "crypto", "set_trust", args.fingerprint, not args.untrust), args.json)
    return 0


def cmd_keys_queue(args) -> int:
    _print(_call(_rpc(), "crypto", "set_queue_key", args.fingerprint, args.queue, args.passphrase_env), args.json)
    return 0


def cmd_admin_show(args) -> int:
    config_ = _call(_rpc(), "tickets", "admin_config", args.as_user)
    part = config_ if args.part == "all" else config_[args.part]
    print(json.dumps(part, indent=2))
    return 0


def cmd_rights(args) -> int:
    result = _call(_rpc(), "tickets", "grant_rights", args.as_user, args.queue, args.grantee, args.rights,
                   args.sub == "revoke")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for grantee, rights in result["grants"].items():
            print(f"{grantee:<24} {' '.join(rights)}")
    return 0


def cmd_group_add(args) -> int:
    _print(_call(_rpc(), "tickets", "create_group", args.as_user, args.name, args.description), args.json)
    return 0


def cmd_group_member(args) -> int:
    _print(_call(_rpc(), "tickets", "set_group_member", args.as_user, args.group, args.username, not args.remove),
           args.json)
    return 0


def _load_structured(path: str):
    import yaml
    text = sys.stdin.read() if path == "-" else Path(path).read_text()
    return yaml.safe_load(text)


def cmd_lifecycle_save(args) -> int:
    _print(_call(_rpc(), "tickets", "save_lifecycle", args.as_user, args.name, _load_structured(args.file)),
           args.json)
    return 0


def cmd_outcome_save(args) -> int:
    _print(_call(_rpc(), "tickets", "save_outcome", args.as_user, args.name, args.description, not args.inactive),
           args.json)
    return 0


def cmd_field_add(args) -> int:
    _print(_call(_rpc(), "tickets", "create_field", args.as_user, args.name, args.type, args.option or [],
                 args.queue, args.read_only_after_set, args.admin_only, args.description), args.json)
    return 0


def cmd_sla_save(args) -> int:
    calendar = _load_structured(args.calendar) if args.calendar else {}
    _print(_call(_rpc(), "tickets", "save_sla", args.as_user, args.name, args.first_response, args.next_response,
                 args.resolution, calendar, args.escalate_priority), args.json)
    return 0


def cmd_queue_configure(args) -> int:
    _print(_call(_rpc(), "tickets", "configure_queue", args.as_user, args.name, args.lifecycle, args.sla,
                 args.followup_policy, args.description), args.json)
    return 0


def cmd_user_email(args) -> int:
    _print(_call(_rpc(), "tickets", "set_email", args.username, args.email), args.json)
    return 0


def cmd_user_role(args) -> int:
    _print(_call(_rpc(), "tickets", "set_role", args.username, args.role), args.json)
    return 0


MIGRATING_SERVICES = ("tickets", "ingest", "enrich", "crypto", "notify")


def cmd_db_revision(args) -> int:
    """Autogenerate a migration: compare the models with a scratch database at head."""
    import tempfile
    from alembic import command
    from alembic.config import Config
    from osprey.db import make_engine, migrate

    migrations = ROOT / "services" / args.service / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/scratch.db")
        migrate(engine, migrations)
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.revision(cfg, message=args.message, autogenerate=True)
    return 0


def cmd_config(args) -> int:
    print(config.markdown_table())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="osprey", description="Osprey, the incident desk for CSIRTs.")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_, parent=sub):
        sp = parent.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=func)
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("run", cmd_run, "start the broker, every service and the gateway (Ctrl-C stops them)")
    add("announce", cmd_announce, "wait until Osprey is ready, print how to use it, then wait")
    add("status", cmd_status, "is the broker up, does every service answer").add_argument(
        "--timeout", type=float, default=5.0)
    add("config", cmd_config, "print every OSPREY_* setting as a Markdown table")

    broker = sub.add_parser("broker", help="the local RabbitMQ node").add_subparsers(dest="sub", required=True)
    add("run", cmd_broker_run, "run the local node in the foreground", broker)
    service = sub.add_parser("service", help="one nameko service").add_subparsers(dest="sub", required=True)
    add("run", cmd_service_run, "run one service in the foreground", service).add_argument(
        "name", choices=contracts.SERVICES)
    gateway = sub.add_parser("gateway", help="the web UI and REST API").add_subparsers(dest="sub", required=True)
    add("run", cmd_gateway_run, "run the gateway in the foreground", gateway)

    db = sub.add_parser("db", help="database schema (for developers)").add_subparsers(dest="sub", required=True)
    sp = add("revision", cmd_db_revision, "autogenerate a migration for a service's models", db)
    sp.add_argument("service", choices=MIGRATING_SERVICES)
    sp.add_argument("message")

    user = sub.add_parser("user", help="staff accounts").add_subparsers(dest="sub", required=True)
    add("list", cmd_user_list, "list users", user)
    for name, func, help_ in (("add", cmd_user_add, "create a user"),
                              ("passwd", cmd_user_passwd, "set a user's password")):
        sp = add(name, func, help_, user)
        sp.add_argument("username")
        sp.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
        if name == "add":
            sp.add_argument("--admin", action="store_true", help="make the user an administrator")
            sp.add_argument("--no-password", action="store_true", help="no password (API tokens only)")
            sp.add_argument("--role", default="agent", choices=["customer", "agent", "admin"])
            sp.add_argument("--email", default="")
    sp = add("email", cmd_user_email, "set a user's mail address (their signed mail's commands apply)", user)
    sp.add_argument("username")
    sp.add_argument("email")
    sp = add("role", cmd_user_role, "set a user's role (customer, agent, admin)", user)
    sp.add_argument("username")
    sp.add_argument("role", choices=["customer", "agent", "admin"])
    add("disable", cmd_user_disable, "disable a user (logins and tokens stop working)", user).add_argument("username")
    add("enable", cmd_user_enable, "enable a disabled user", user).add_argument("username")

    queue = sub.add_parser("queue", help="queues").add_subparsers(dest="sub", required=True)
    sp = add("add", cmd_queue_add, "create a queue", queue)
    sp.add_argument("name")
    sp.add_argument("--description", default="")
    sp.add_argument("--followup-policy", default="new-linked", choices=["new-linked", "accept"],
                    help="mail naming a ticket of this queue from an address the ticket does not know: "
                         "a new ticket linked to it (default), or accept it into the ticket")
    sp = add("configure", cmd_queue_configure, "set a queue's lifecycle, SLA, follow-up policy", queue)
    sp.add_argument("name")
    sp.add_argument("--lifecycle", help='a lifecycle name, or "default"')
    sp.add_argument("--sla", help='an SLA name, or "" for none')
    sp.add_argument("--followup-policy", choices=["new-linked", "accept"])
    sp.add_argument("--description")
    sp.add_argument("--as", dest="as_user", default="admin")
    add("list", cmd_queue_list, "queues with ticket counts per state", queue).add_argument(
        "--as", dest="as_user", default="admin", help="act as this user (default admin)")

    token = sub.add_parser("token", help="API bearer tokens").add_subparsers(dest="sub", required=True)
    sp = add("create", cmd_token_create, "create a token for a user (printed once)", token)
    sp.add_argument("--user", required=True)
    sp.add_argument("--days", type=int, default=None, help="lifetime (default OSPREY_TOKEN_DAYS)")
    sp.add_argument("--name", default="cli", help="a label for the token")

    for name, func, help_ in (("search", cmd_search, "search tickets (words, \"phrases\", IPs, CIDR, ranges)"),
                              ("tickets", cmd_tickets, "list tickets, newest first"),
                              ("ticket", cmd_ticket_show, "show one ticket and its articles")):
        sp = add(name, func, help_)
        sp.add_argument("--as", dest="as_user", default="admin", help="act as this user (default admin)")
        if name == "search":
            sp.add_argument("query", nargs="+")
            sp.add_argument("--limit", type=int, default=50)
        elif name == "tickets":
            sp.add_argument("--queue")
            sp.add_argument("--state", help='a state, a comma list, or "active" (not closed)')
            sp.add_argument("--owner", help='a user name, "me" or "nobody"')
            sp.add_argument("--order", choices=["newest", "oldest", "priority", "updated"])
            sp.add_argument("--limit", type=int, default=50)
        else:
            sp.add_argument("id", type=int)

    def acting(sp, key=True):
        sp.add_argument("--as", dest="as_user", default="admin", help="act as this user (default admin)")
        if key:
            sp.add_argument("--idempotency-key", help="repeat-safe: the same key never acts twice")
        return sp

    sp = acting(add("create", cmd_ticket_create, "open a ticket by hand"))
    sp.add_argument("queue")
    sp.add_argument("subject")
    sp.add_argument("--text", help="the first comment")
    sp.add_argument("--requestor", action="append", help="a requestor address (repeatable)")
    sp.add_argument("--field", action="append", metavar="NAME=VALUE", help="a custom field (repeatable)")
    sp.add_argument("--priority", type=int)
    sp = acting(add("update", cmd_ticket_update, "change a ticket (all or nothing)"))
    sp.add_argument("id", type=int)
    for opt in ("subject", "queue", "state", "outcome", "owner", "due"):
        sp.add_argument(f"--{opt}")
    sp.add_argument("--priority", type=int)
    sp.add_argument("--time-estimated", type=int, metavar="MINUTES")
    sp.add_argument("--field", action="append", metavar="NAME=VALUE",
                    help="set a custom field; repeat NAME for several values; NAME= clears it")
    sp.add_argument("--version", type=int, help="refuse if the ticket changed since this version")
    sp = acting(add("take", cmd_ticket_take, "take a ticket (--steal: from its owner)"))
    sp.add_argument("id", type=int)
    sp.add_argument("--steal", action="store_true")
    sp = acting(add("people", cmd_ticket_people, "add or remove requestors, Cc, AdminCc"))
    sp.add_argument("id", type=int)
    sp.add_argument("role", choices=["requestor", "cc", "admincc"])
    sp.add_argument("--add", action="append")
    sp.add_argument("--remove", action="append")
    sp = acting(add("comment", cmd_ticket_comment, "add an internal comment ('-' reads stdin)"))
    sp.add_argument("id", type=int)
    sp.add_argument("text")
    sp.add_argument("--time", type=int, default=0, metavar="MINUTES", help="time worked")
    sp = acting(add("link", cmd_ticket_link, "link two tickets (or --remove the link)"))
    sp.add_argument("id", type=int)
    sp.add_argument("type", choices=["child-of", "parent-of", "depends-on", "depended-on-by", "refers-to",
                                     "referred-to-by"])
    sp.add_argument("other", type=int)
    sp.add_argument("--remove", action="store_true")
    sp = acting(add("merge", cmd_ticket_merge, "merge ticket ID into ticket INTO"))
    sp.add_argument("id", type=int)
    sp.add_argument("into", type=int)
    sp = acting(add("split", cmd_ticket_split, "split articles out into a new linked ticket"))
    sp.add_argument("id", type=int)
    sp.add_argument("articles", type=int, nargs="+")
    sp.add_argument("--copy-field", action="append")
    sp.add_argument("--subject")
    sp.add_argument("--queue")
    sp = acting(add("previous", cmd_ticket_previous, "earlier incidents for this ticket's IPs and netblocks"),
                key=False)
    sp.add_argument("id", type=int)
    sp.add_argument("--limit", type=int, default=50)
    sp = acting(add("remind", cmd_ticket_remind, "a reminder on a ticket"))
    sp.add_argument("id", type=int)
    sp.add_argument("due", help="ISO 8601 time, e.g. 2026-12-01T09:00:00+01:00")
    sp.add_argument("text")
    sp.add_argument("--awaiting", help="the address whose answer ends the reminder")
    sp.add_argument("--notify-third-party", action="store_true")
    sp = acting(add("reminders", cmd_reminders, "my reminders"), key=False)
    sp.add_argument("--all-users", action="store_true")
    sp.add_argument("--status", default="open", choices=["open", "fired", "done"])

    keys = sub.add_parser("keys", help="OpenPGP keys, S/MIME certificates, trust anchors, CRLs").add_subparsers(
        dest="sub", required=True)
    add("list", cmd_keys_list, "keys with expiry, trust, usage and problems", keys)
    sp = add("import", cmd_keys_import, "import a key, certificate or CRL from a file ('-': stdin)", keys)
    sp.add_argument("file")
    sp.add_argument("--trusted", action="store_true", help="trust it (a CA certificate becomes a trust anchor)")
    sp.add_argument("--queue", help="the queue that signs with this (secret) key")
    sp.add_argument("--passphrase-env", help="environment variable (or secrets file name) holding its passphrase")
    add("delete", cmd_keys_delete, "delete a key", keys).add_argument("fingerprint")
    sp = add("trust", cmd_keys_trust, "trust a key (--untrust: stop trusting it)", keys)
    sp.add_argument("fingerprint")
    sp.add_argument("--untrust", action="store_true")
    sp = add("queue", cmd_keys_queue, "make a secret key a queue's signing key", keys)
    sp.add_argument("fingerprint")
    sp.add_argument("queue")
    sp.add_argument("--passphrase-env")

    enrich = sub.add_parser("enrich", help="indicators and RDAP/whois lookups").add_subparsers(dest="sub",
                                                                                              required=True)
    sp = add("lookup", cmd_enrich_lookup, "network, ASN, country and abuse contact of an IP (RDAP, then whois)",
             enrich)
    sp.add_argument("ip")
    sp.add_argument("--refresh", action="store_true", help="ask the registry even if cached")
    add("extract", cmd_enrich_extract, "indicators in a text ('-': stdin)", enrich).add_argument("text")
    sp = add("update-bootstrap", cmd_enrich_update_bootstrap, "refresh the IANA RDAP bootstrap files", enrich)
    sp.add_argument("--url", default="https://data.iana.org/rdap/")
    cons = sub.add_parser("constituency", help="constituencies: netblocks, domains, ASNs and their contact") \
        .add_subparsers(dest="sub", required=True)
    sp = add("add", cmd_constituency_add, "add or replace a constituency", cons)
    sp.add_argument("name")
    sp.add_argument("--contact", required=True)
    sp.add_argument("--netblock", action="append", help="CIDR or a-b range (repeatable)")
    sp.add_argument("--domain", action="append")
    sp.add_argument("--asn", action="append", type=int)
    sp.add_argument("--queue", help="new tickets whose addresses fall here are routed to this queue")
    sp.add_argument("--language", default="", help="language of mail to its contact (template variants)")
    sp.add_argument("--encryption", default="", choices=["", "none", "pgp", "smime"])
    add("list", cmd_constituency_list, "constituencies", cons)
    add("delete", cmd_constituency_delete, "delete a constituency", cons).add_argument("name")

    sp = acting(add("admin", cmd_admin_show, "show the configuration (rights, groups, lifecycles, ...)"), key=False)
    sp.add_argument("part", nargs="?", default="all",
                    choices=["all", "queues", "groups", "lifecycles", "outcomes", "fields", "slas", "rights"])
    rights_p = sub.add_parser("rights", help="rights per queue").add_subparsers(dest="sub", required=True)
    for name in ("grant", "revoke"):
        sp = acting(add(name, cmd_rights, f"{name} rights in a queue to role:NAME or group:NAME", rights_p), key=False)
        sp.add_argument("queue")
        sp.add_argument("grantee")
        sp.add_argument("rights", nargs="+")
    group = sub.add_parser("group", help="groups").add_subparsers(dest="sub", required=True)
    sp = acting(add("add", cmd_group_add, "create a group", group), key=False)
    sp.add_argument("name")
    sp.add_argument("--description", default="")
    sp = acting(add("member", cmd_group_member, "add (or --remove) a member", group), key=False)
    sp.add_argument("group")
    sp.add_argument("username")
    sp.add_argument("--remove", action="store_true")
    lc = sub.add_parser("lifecycle", help="lifecycles").add_subparsers(dest="sub", required=True)
    sp = acting(add("save", cmd_lifecycle_save, "create or replace a lifecycle from a YAML/JSON file ('-': stdin)",
                    lc), key=False)
    sp.add_argument("name")
    sp.add_argument("file")
    oc = sub.add_parser("outcome", help="closing outcomes").add_subparsers(dest="sub", required=True)
    sp = acting(add("save", cmd_outcome_save, "create or change an outcome", oc), key=False)
    sp.add_argument("name")
    sp.add_argument("--description", default="")
    sp.add_argument("--inactive", action="store_true")
    fd = sub.add_parser("field", help="custom fields").add_subparsers(dest="sub", required=True)
    sp = acting(add("add", cmd_field_add, "create a custom field", fd), key=False)
    sp.add_argument("name")
    sp.add_argument("type", choices=["text", "select", "multiselect", "date", "number", "iprange"])
    sp.add_argument("--option", action="append")
    sp.add_argument("--queue")
    sp.add_argument("--read-only-after-set", action="store_true")
    sp.add_argument("--admin-only", action="store_true")
    sp.add_argument("--description", default="")
    sl = sub.add_parser("sla", help="service levels").add_subparsers(dest="sub", required=True)
    sp = acting(add("save", cmd_sla_save, "create or change an SLA (minutes in business time)", sl), key=False)
    sp.add_argument("name")
    sp.add_argument("--first-response", type=int)
    sp.add_argument("--next-response", type=int)
    sp.add_argument("--resolution", type=int)
    sp.add_argument("--calendar", help="YAML/JSON file: {tz, days, start, end, holidays}")
    sp.add_argument("--escalate-priority", type=int, default=90)

    sp = add("intake", cmd_intake, "what became of a delivered mail, by its sha256")
    sp.add_argument("sha256")
    sp.add_argument("--raw", action="store_true", help="write the stored bytes to stdout instead")
    sp = add("quarantine", cmd_quarantine, "list quarantined mail with the reasons; `retry ID` processes one again")
    sp.add_argument("--limit", type=int, default=100)
    qsub = sp.add_subparsers(dest="sub")
    add("retry", cmd_quarantine_retry, "process a quarantined mail again (by its intake id)", qsub).add_argument(
        "intake_id")
    __import__("cli.notify").notify.register(sub, add)   # outbound: template, reply, forward, outbox
    return p


def main(argv=None) -> int:
    import warnings
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
