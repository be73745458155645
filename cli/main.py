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
    _print(_call(_rpc(), "tickets", "create_user", args.username, password, args.admin), args.json)
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
    print(f"#{ticket['id']} [{ticket['queue']}] {ticket['state']}: {ticket['subject']}")
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
    result = _call(_rpc(), "tickets", "list_tickets", args.as_user, args.queue, args.state, args.limit, 0)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for t in result["tickets"]:
            print(f"#{t['id']:<6} {t['state']:<9} {t['queue']:<12} {t['subject']}")
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


MIGRATING_SERVICES = ("tickets", "ingest", "enrich", "crypto")


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
    add("disable", cmd_user_disable, "disable a user (logins and tokens stop working)", user).add_argument("username")
    add("enable", cmd_user_enable, "enable a disabled user", user).add_argument("username")

    queue = sub.add_parser("queue", help="queues").add_subparsers(dest="sub", required=True)
    sp = add("add", cmd_queue_add, "create a queue", queue)
    sp.add_argument("name")
    sp.add_argument("--description", default="")
    sp.add_argument("--followup-policy", default="new-linked", choices=["new-linked", "accept"],
                    help="mail naming a ticket of this queue from an address the ticket does not know: "
                         "a new ticket linked to it (default), or accept it into the ticket")
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
            sp.add_argument("--state")
            sp.add_argument("--limit", type=int, default=50)
        else:
            sp.add_argument("id", type=int)

    sp = add("intake", cmd_intake, "what became of a delivered mail, by its sha256")
    sp.add_argument("sha256")
    sp.add_argument("--raw", action="store_true", help="write the stored bytes to stdout instead")
    sp = add("quarantine", cmd_quarantine, "list quarantined mail with the reasons; `retry ID` processes one again")
    sp.add_argument("--limit", type=int, default=100)
    qsub = sp.add_subparsers(dest="sub")
    add("retry", cmd_quarantine_retry, "process a quarantined mail again (by its intake id)", qsub).add_argument(
        "intake_id")
    return p


def main(argv=None) -> int:
    import warnings
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    args = build_parser().parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
