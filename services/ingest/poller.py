"""osprey-poller: fetch mail from IMAP(S) and POP3(S) mailboxes into the intake queue.

Accounts come from the YAML file named by OSPREY_MAIL_ACCOUNTS (docs/mail-accounts.md).
Every OSPREY_POLL_SECONDS each account is polled in turn; ``--once`` polls every
account once and exits:
  0   every account was polled (a message refused for its size is data, not a failure)
  1   at least one account could not be polled (login refused, server unreachable or
      timed out, broker down); what it could not take stays on the server
  64  bad command line
  78  EX_CONFIG: the accounts file is missing or wrong

Durable before removed: each message is published through the intake front ends' shared
``services.ingest.publisher.Publisher`` (persistent, mandatory, confirmed; one broker
connection per round, opened at the first message) and only then moved to the done folder, deleted, or
(``keep: true``) recorded as done. A crash or a timeout in between means the same bytes
are published again next round, which ingest recognises (``contracts.intake_id``):
one delivery, one article.
"""
from __future__ import annotations

import argparse
import imaplib
import logging
import poplib
import re
import signal
import sqlite3
import ssl
import sys
import threading
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from osprey import contracts
from services.ingest import envelope as envelopes
from services.ingest.publisher import Publisher

log = logging.getLogger("osprey.poller")

EX_OK, EX_FAILED, EX_USAGE, EX_CONFIG = 0, 1, 64, 78

PROTOCOLS = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995}
DEFAULT_DONE_FOLDER = "Osprey-done"
DEFAULT_FAILED_FOLDER = "Osprey-failed"
CHUNK = 1024 * 1024          # IMAP partial fetch size: a large message arrives in pieces
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(Exception):
    """The accounts file is missing or wrong; the message says where."""


class AccountError(Exception):
    """This account could not be polled this round; the message says why."""


class PublishTimeout(Exception):
    pass


# --- the accounts file -----------------------------------------------------------

@dataclass(frozen=True)
class Account:
    name: str
    protocol: str
    host: str
    port: int
    username: str
    password: str | None
    password_file: Path | None
    queue: str
    action: str
    folder: str                     # IMAP only
    done_folder: str | None         # IMAP: where a delivered message goes (None: delete or keep)
    failed_folder: str | None       # IMAP: where a refused message goes; POP3: None (kept, remembered)
    delete: bool
    keep: bool
    tls_verify: bool
    ca_file: Path | None
    starttls: bool
    timeout: float

    @property
    def imap(self) -> bool:
        return self.protocol.startswith("imap")

    @property
    def tls(self) -> bool:
        return self.protocol.endswith("s")

    @property
    def source(self) -> str:
        return f"{'imap' if self.imap else 'pop3'}:{self.name}"

    @property
    def mailbox(self) -> str:
        """Where the mail is, as the state is keyed (a renamed account keeps its state)."""
        where = f"{'imap' if self.imap else 'pop3'}://{self.username}@{self.host}:{self.port}"
        return f"{where}/{self.folder}" if self.imap else where

    def read_password(self) -> str:
        if self.password is not None:
            return self.password
        try:
            return self.password_file.read_text().splitlines()[0] if self.password_file.stat().st_size else ""
        except OSError as exc:
            raise AccountError(f"cannot read password_file {self.password_file}: {exc.strerror}") from exc


_KEYS = {"name", "protocol", "host", "port", "username", "password", "password_file", "queue", "action",
         "folder", "done_folder", "failed_folder", "delete", "keep", "tls_verify", "ca_file", "starttls",
         "timeout"}


def load_accounts(path: Path) -> list[Account]:
    """Read and check the whole file; any mistake is a ConfigError naming the account and key."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or set(doc) != {"accounts"} or not isinstance(doc["accounts"], list):
        raise ConfigError(f"{path}: expected one top-level key `accounts:` holding a list of accounts")
    accounts, names = [], set()
    for i, entry in enumerate(doc["accounts"], 1):
        account = _account(entry, f"{path}: account {i}", path.parent)
        if account.name in names:
            raise ConfigError(f"{path}: two accounts are named {account.name!r}")
        names.add(account.name)
        accounts.append(account)
    return accounts


def _account(entry, where: str, base: Path) -> Account:
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of keys")
    if isinstance(entry.get("name"), str):
        where = f"{where} ({entry['name']})"
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")

    def text(key, default=None, required=False):
        value = entry.get(key, default)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: `{key}` must be a non-empty string")
        return value

    def flag(key, default):
        value = entry.get(key, default)
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: `{key}` must be true or false")
        return value

    def path(key):
        value = text(key)
        return None if value is None else (base / value).resolve()

    name = text("name", required=True)
    if not _NAME.match(name):
        raise ConfigError(f"{where}: `name` may hold letters, digits, '.', '_', '-' (at most 64)")
    protocol = text("protocol", required=True).lower()
    if protocol not in PROTOCOLS:
        raise ConfigError(f"{where}: `protocol` must be one of {', '.join(PROTOCOLS)}")
    port = entry.get("port", PROTOCOLS[protocol])
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: `port` must be a number from 1 to 65535")
    timeout = entry.get("timeout", 60)
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"{where}: `timeout` must be a positive number of seconds")
    password, password_file = text("password"), path("password_file")
    if (password is None) == (password_file is None):
        raise ConfigError(f"{where}: give exactly one of `password` and `password_file`")
    action = text("action", "correspond")
    if action not in contracts.ACTIONS:
        raise ConfigError(f"{where}: `action` must be one of {', '.join(contracts.ACTIONS)}")
    delete, keep = flag("delete", False), flag("keep", False)
    imap = protocol.startswith("imap")
    if imap:
        if delete and keep:
            raise ConfigError(f"{where}: `delete: true` and `keep: true` exclude each other")
        if (delete or keep) and "done_folder" in entry:
            raise ConfigError(f"{where}: `done_folder` makes no sense with `delete: true` or `keep: true`")
        folder = text("folder", "INBOX")
        done = None if (delete or keep) else text("done_folder", DEFAULT_DONE_FOLDER)
        failed = text("failed_folder", DEFAULT_FAILED_FOLDER)
        if folder in (done, failed):
            raise ConfigError(f"{where}: `folder` must differ from `done_folder` and `failed_folder`")
    else:
        for key in ("folder", "done_folder", "failed_folder"):
            if key in entry:
                raise ConfigError(f"{where}: `{key}` is for IMAP; POP3 has one mailbox and no folders")
        if "delete" in entry and not delete and not keep:
            raise ConfigError(f"{where}: a POP3 account either deletes (default) or keeps (`keep: true`)")
        folder, done, failed, delete = "INBOX", None, None, not keep
    if protocol.endswith("s") and flag("starttls", False):
        raise ConfigError(f"{where}: `starttls` is for imap/pop3; {protocol} is TLS from the start")
    return Account(name=name, protocol=protocol, host=text("host", required=True), port=port,
                   username=text("username", required=True), password=password, password_file=password_file,
                   queue=text("queue", "general"), action=action, folder=folder, done_folder=done,
                   failed_folder=failed, delete=delete, keep=keep, tls_verify=flag("tls_verify", True),
                   ca_file=path("ca_file"), starttls=flag("starttls", False), timeout=float(timeout))


# --- what was done already (keep: true) -----------------------------------------------

class State:
    """Per mailbox: IMAP UIDVALIDITY + the highest UID done; POP3 UIDLs done or refused.
    A small SQLite file; every update is committed before the next message."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.executescript("""
            PRAGMA journal_mode=WAL;
            CREATE TABLE IF NOT EXISTS imap_state (
                mailbox TEXT PRIMARY KEY, account TEXT NOT NULL,
                uidvalidity INTEGER NOT NULL, last_uid INTEGER NOT NULL, updated TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS pop3_seen (
                mailbox TEXT NOT NULL, uidl TEXT NOT NULL, account TEXT NOT NULL,
                outcome TEXT NOT NULL, updated TEXT NOT NULL, PRIMARY KEY (mailbox, uidl));
        """)

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def _now() -> str:
        return datetime.now(timezone.utc).isoformat()

    def imap_last_uid(self, account: Account, uidvalidity: int) -> int:
        row = self.db.execute("SELECT uidvalidity, last_uid FROM imap_state WHERE mailbox = ?",
                              (account.mailbox,)).fetchone()
        if row is None:
            return 0
        if row[0] != uidvalidity:
            log.warning("account %s: UIDVALIDITY of %s changed (%s → %s): every message there counts as new "
                        "(ingest recognises any it already has)", account.name, account.folder, row[0], uidvalidity)
            return 0
        return row[1]

    def imap_done(self, account: Account, uidvalidity: int, uid: int) -> None:
        self.db.execute("INSERT INTO imap_state (mailbox, account, uidvalidity, last_uid, updated) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (mailbox) DO UPDATE SET account = excluded.account, "
                        "uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid, updated = excluded.updated",
                        (account.mailbox, account.name, uidvalidity, uid, self._now()))

    def pop3_seen(self, account: Account) -> dict[str, str]:
        return dict(self.db.execute("SELECT uidl, outcome FROM pop3_seen WHERE mailbox = ?", (account.mailbox,)))

    def pop3_mark(self, account: Account, uidl: str, outcome: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO pop3_seen (mailbox, uidl, account, outcome, updated) "
                        "VALUES (?, ?, ?, ?, ?)", (account.mailbox, uidl, account.name, outcome, self._now()))

    def pop3_forget_except(self, account: Account, present: set[str]) -> None:
        """Drop UIDLs of messages no longer on the server (the table stays as small as the mailbox)."""
        gone = set(self.pop3_seen(account)) - present
        self.db.executemany("DELETE FROM pop3_seen WHERE mailbox = ? AND uidl = ?",
                            [(account.mailbox, uidl) for uidl in gone])


# --- polling -------------------------------------------------------------------

@contextmanager
def _deadline(seconds: float):
    """Bound the broker publish (pika has no timeout on the confirm wait), like the mailgate."""
    def alarm(_signum, _frame):
        raise PublishTimeout(f"no confirm from the broker within {seconds:g}s")
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _tls_context(account: Account) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(account.ca_file) if account.ca_file else None)
    if not account.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _RawRetr:
    """RETR that returns the message's exact bytes (line ends as sent, dot-unstuffed),
    with no limit on line length (poplib's own ``retr`` stops at 2048-byte lines)."""

    def retr_raw(self, which: int, max_bytes: int) -> bytes | None:
        self._shortcmd(f"RETR {which}")
        parts, size, over = [], 0, False
        while True:
            line = self.file.readline(max_bytes + 3)
            if not line:
                raise poplib.error_proto("-ERR connection closed during RETR")
            if line in (b".\r\n", b".\n"):
                break
            if line.startswith(b".."):
                line = line[1:]
            size += len(line)
            if size > max_bytes:
                over, parts = True, []     # read to the end, keep nothing
            elif not over:
                parts.append(line)
        return None if over else b"".join(parts)


class _POP3(_RawRetr, poplib.POP3):
    pass


class _POP3_SSL(_RawRetr, poplib.POP3_SSL):
    pass


# errors that mean "this account, this round" (the next round tries again)
_ROUND_ERRORS = (OSError, imaplib.IMAP4.error, poplib.error_proto, PublishTimeout, AccountError)


class Poller:
    def __init__(self, accounts: list[Account], state: State, amqp_uri: str, max_mail_bytes: int,
                 publish_timeout: float):
        self.accounts = accounts
        self.state = state
        self.amqp_uri = amqp_uri
        self.max_mail_bytes = max_mail_bytes
        self.publish_timeout = publish_timeout
        self.stopping = threading.Event()
        self.publisher: Publisher | None = None

    def poll_all(self) -> list[str]:
        """Poll every account once; returns the names of those that failed (logged)."""
        failed = []
        with Publisher(self.amqp_uri, self.publish_timeout) as self.publisher:
            for account in self.accounts:
                if self.stopping.is_set():
                    break
                if self._poll_failed(account):
                    failed.append(account.name)
        return failed

    def _poll_failed(self, account: Account) -> bool:
        """Poll one account; True if it failed (logged as an ERROR)."""
        try:
            self.poll(account)
        except _ROUND_ERRORS as exc:
            log.error("account %s: %s (what is still on the server stays there; the next round tries again)",
                      account.name, _describe(exc, account))
            return True
        except Exception:
            log.exception("account %s: unexpected failure; next round tries again", account.name)
            return True
        return False

    def poll(self, account: Account) -> int:
        return (self._poll_imap if account.imap else self._poll_pop3)(account)

    def _publish(self, account: Account, raw: bytes, what: str, **where) -> None:
        """``where``: the message's place on the server (uid, uidvalidity / uidl), kept
        with the account and mailbox as the delivery's envelope (envelope.py)."""
        envelope = envelopes.make(account=account.name, mailbox=account.mailbox,
                                  folder=account.folder if account.imap else None, **where)
        try:
            with _deadline(self.publish_timeout):
                self.publisher.publish(raw, account.queue, account.action, account.source, envelope=envelope)
        except Exception as exc:
            raise AccountError(f"the broker did not take {what} ({_describe(exc, account)})") from exc
        log.info("account %s: %s delivered (%d bytes, sha256 %s, queue %s)", account.name, what, len(raw),
                 contracts.sha256_hex(raw), account.queue)

    def _refuse(self, raw_size: int | None) -> str | None:
        """Why a message of ``raw_size`` bytes is not taken (None: larger than the server said)."""
        if raw_size is None:
            return f"it is larger than OSPREY_MAX_MAIL_BYTES ({self.max_mail_bytes})"
        if raw_size == 0:
            return "it is empty"
        if raw_size > self.max_mail_bytes:
            return f"it is {raw_size} bytes, over OSPREY_MAX_MAIL_BYTES ({self.max_mail_bytes})"
        return None

    # --- IMAP ------------------------------------------------------------------

    def _imap_connect(self, account: Account):
        from imapclient import IMAPClient
        from imapclient.exceptions import LoginError

        where = f"{account.protocol}://{account.host}:{account.port}"
        ctx = _tls_context(account) if account.tls or account.starttls else None
        try:
            client = IMAPClient(account.host, port=account.port, ssl=account.tls, ssl_context=ctx,
                                timeout=account.timeout)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise AccountError(f"cannot connect to {where}: {_describe(exc, account)}") from exc
        try:
            if account.starttls:
                client.starttls(ctx)
            client.login(account.username, account.read_password())
        except LoginError as exc:
            _close_imap(client)
            said = exc.__context__ if isinstance(exc.__context__, imaplib.IMAP4.error) else exc
            raise AccountError(f"login as {account.username!r} refused by {where}: {_server_said(said)}") from exc
        except BaseException:
            _close_imap(client)
            raise
        return client

    def _poll_imap(self, account: Account) -> int:
        client = self._imap_connect(account)
        try:
            delivered = self._imap_round(client, account)
        except BaseException:
            _drop_imap(client)                # no LOGOUT: the connection may be the problem
            raise
        _close_imap(client)
        return delivered

    def _imap_round(self, client, account: Account) -> int:
        """One pass over the account's folder, oldest UID first; raises on whatever ends it."""
        uidvalidity = client.select_folder(account.folder)[b"UIDVALIDITY"]
        for folder in filter(None, (account.done_folder, account.failed_folder)):
            if not client.folder_exists(folder):
                client.create_folder(folder)
                log.info("account %s: created folder %s", account.name, folder)
        if account.keep:
            last = self.state.imap_last_uid(account, uidvalidity)
            # "n:*" always matches the highest UID, even one below n
            uids = [u for u in client.search(["UID", f"{last + 1}:*", "NOT", "DELETED"]) if u > last]
        else:
            uids = client.search(["NOT", "DELETED"])
        uids.sort()
        sizes = {}
        for i in range(0, len(uids), 500):
            for uid, data in client.fetch(uids[i:i + 500], ["RFC822.SIZE"]).items():
                sizes[uid] = data[b"RFC822.SIZE"]
        delivered = 0
        for uid in uids:
            if self.stopping.is_set():
                break
            if uid not in sizes:
                continue                  # expunged by someone else meanwhile
            what = f"uid {uid} in {account.folder}"
            problem = self._refuse(sizes[uid])
            raw = None if problem else self._imap_download(client, uid, sizes[uid])
            if raw is not None and len(raw) > self.max_mail_bytes:
                problem, raw = self._refuse(None), None
            if problem:
                _imap_move(client, uid, account.failed_folder)
                log.warning("account %s: %s not delivered: %s; moved to %s", account.name, what, problem,
                            account.failed_folder)
            elif raw is not None:
                # raises: the message stays where it is
                self._publish(account, raw, what, uid=uid, uidvalidity=uidvalidity)
                if account.done_folder:
                    _imap_move(client, uid, account.done_folder)
                elif account.delete:
                    _imap_delete(client, uid)
                delivered += 1
            self.state.imap_done(account, uidvalidity, uid)
        return delivered

    def _imap_download(self, client, uid: int, size: int) -> bytes | None:
        """The message's exact bytes, fetched in CHUNK-sized partial fetches (BODY.PEEK:
        \\Seen is not set) until a short one: the server's RFC822.SIZE ``size`` is not
        trusted to end the message. None if the message vanished. Stops past the size limit."""
        parts, offset = [], 0
        while True:
            data = client.fetch([uid], [f"BODY.PEEK[]<{offset}.{CHUNK}>"]).get(uid, {})
            chunk = data.get(f"BODY[]<{offset}>".encode())
            if chunk is None:
                if offset == 0:
                    return None
                if offset < size:
                    raise AccountError(f"uid {uid} vanished during download")
                chunk = b""                   # a server that says NIL past the end
            parts.append(chunk)
            offset += len(chunk)
            if len(chunk) < CHUNK or offset > self.max_mail_bytes:
                return b"".join(parts)

    # --- POP3 ------------------------------------------------------------------

    def _pop3_connect(self, account: Account):
        where = f"{account.protocol}://{account.host}:{account.port}"
        ctx = _tls_context(account) if account.tls or account.starttls else None
        try:
            if account.tls:
                pop = _POP3_SSL(account.host, account.port, context=ctx, timeout=account.timeout)
            else:
                pop = _POP3(account.host, account.port, timeout=account.timeout)
        except (OSError, poplib.error_proto) as exc:
            raise AccountError(f"cannot connect to {where}: {_describe(exc, account)}") from exc
        try:
            if account.starttls:
                pop.stls(ctx)
            pop.user(account.username)
            pop.pass_(account.read_password())
        except poplib.error_proto as exc:
            _close_pop3(pop)
            raise AccountError(f"login as {account.username!r} refused by {where}: {_server_said(exc)}") from exc
        except BaseException:
            _close_pop3(pop)
            raise
        return pop

    def _poll_pop3(self, account: Account) -> int:
        pop = self._pop3_connect(account)
        try:
            listing = [line.decode().split() for line in pop.uidl()[1]]
            sizes = {int(n): int(size) for n, size in (line.decode().split() for line in pop.list()[1])}
            seen = self.state.pop3_seen(account)
            delivered = 0
            for num, uidl in ((int(n), u) for n, u in listing):
                if self.stopping.is_set():
                    break
                if uidl in seen:
                    continue
                what = f"message {uidl}"
                problem = self._refuse(sizes[num])
                raw = None if problem else pop.retr_raw(num, self.max_mail_bytes)
                if raw is None and not problem:
                    problem = self._refuse(None)
                if problem:
                    # POP3 has no folders: a refused message stays on the server, remembered
                    self.state.pop3_mark(account, uidl, "failed")
                    log.warning("account %s: %s not delivered: %s; left on the server (POP3 has no failed "
                                "folder) and not fetched again", account.name, what, problem)
                    continue
                self._publish(account, raw, what, uidl=uidl)
                if account.keep:
                    self.state.pop3_mark(account, uidl, "delivered")
                else:
                    pop.dele(num)               # takes effect at QUIT
                delivered += 1
            pop.quit()
            pop = None
            self.state.pop3_forget_except(account, {u for _n, u in listing})
            return delivered
        finally:
            if pop is not None:
                _close_pop3(pop)                # no QUIT: the server undoes this session's DELEs


def _imap_move(client, uid: int, folder: str) -> None:
    if client.has_capability("MOVE"):
        client.move([uid], folder)
    else:
        client.copy([uid], folder)
        _imap_delete(client, uid)


def _imap_delete(client, uid: int) -> None:
    client.delete_messages([uid])
    if client.has_capability("UIDPLUS"):
        client.uid_expunge([uid])
    else:
        client.expunge()


def _close_imap(client) -> None:
    try:
        client.logout()
    except Exception:
        _drop_imap(client)


def _drop_imap(client) -> None:
    try:
        client.shutdown()
    except Exception:
        pass


def _close_pop3(pop) -> None:
    try:
        pop.close()
    except Exception:
        pass


def _server_said(exc: BaseException) -> str:
    """The text of an imaplib / poplib error: the server's own reply."""
    text = exc.args[0] if len(exc.args) == 1 else str(exc)
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)


def _describe(exc: BaseException, account: Account) -> str:
    if isinstance(exc, TimeoutError):       # socket.timeout is TimeoutError
        return f"the server did not answer within {account.timeout:g}s (the account's `timeout`)"
    text = _server_said(exc)
    if isinstance(exc, AccountError):
        return text
    if isinstance(exc, imaplib.IMAP4.abort):
        return f"the IMAP connection broke: {text}"
    if isinstance(exc, (imaplib.IMAP4.error, poplib.error_proto)):
        return f"the server said: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- the process -----------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from osprey.config import settings

    s = settings()
    parser = argparse.ArgumentParser(prog="osprey-poller",
                                     description="Fetch mail from IMAP and POP3 mailboxes into Osprey.")
    parser.add_argument("--once", action="store_true",
                        help="poll every account once and exit (0: all polled, 1: an account failed)")
    parser.add_argument("--accounts", default=s.mail_accounts,
                        help="accounts file (default: OSPREY_MAIL_ACCOUNTS)")
    parser.add_argument("--amqp-uri", default=s.amqp_uri, help="broker URI (default: OSPREY_AMQP_URI)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return EX_USAGE if exc.code else EX_OK
    logging.basicConfig(level=s.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pika", "imapclient"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    accounts: list[Account] = []
    if args.accounts:
        try:
            accounts = load_accounts(Path(args.accounts))
        except ConfigError as exc:
            log.error("%s", exc)
            return EX_CONFIG
        if Path(args.accounts).stat().st_mode & 0o004 and any(a.password is not None for a in accounts):
            log.warning("%s holds passwords and every user of this machine can read it: chmod 600 it",
                        args.accounts)
    state = State(s.data_dir / "ingest" / "poller.db")
    poller = Poller(accounts, state, args.amqp_uri, s.max_mail_bytes, s.mailgate_timeout)

    def stop(_signum, _frame):
        poller.stopping.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    with closing(state):
        if not accounts:
            log.info("no mail accounts configured (%s): nothing to poll%s",
                     f"{args.accounts} lists none" if args.accounts else "OSPREY_MAIL_ACCOUNTS is empty",
                     "" if args.once else "; idling")
            if not args.once:
                poller.stopping.wait()
            return EX_OK
        log.info("polling %d account(s) %s: %s", len(accounts),
                 "once" if args.once else f"every {s.poll_seconds:g}s",
                 ", ".join(f"{a.name} ({a.protocol}://{a.host}:{a.port})" for a in accounts))
        while True:
            failed = poller.poll_all()
            if args.once:
                return EX_FAILED if failed else EX_OK
            if poller.stopping.wait(s.poll_seconds):
                log.info("stopped")
                return EX_OK


if __name__ == "__main__":
    sys.exit(main())
