"""Every OSPREY_* setting, read in this one place.

Business code never reads os.environ; it asks for ``settings()``. The README's
configuration table is generated from ``SETTINGS`` (``osprey config --markdown``),
so this list is the single source of truth.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("OSPREY_DATA_DIR", "./var", "Root of all local state: one sub-folder per service, the local broker node, logs."),
    Setting("OSPREY_HTTP_HOST", "127.0.0.1", "Address the gateway listens on."),
    Setting("OSPREY_HTTP_PORT", "8080", "Port of the web UI and REST API."),
    Setting("OSPREY_PUBLIC_URL", "", "URL people use to reach the gateway (printed at start; default http://HOST:PORT/)."),
    Setting("OSPREY_AMQP_URI", "", "Broker URI. Empty: the local node started by `make run` (amqp://guest:guest@127.0.0.1:OSPREY_BROKER_PORT/)."),
    Setting("OSPREY_BROKER_PORT", "5673", "AMQP port of the local RabbitMQ node `make run` starts (not 5672, so a system node can coexist)."),
    Setting("OSPREY_START_BROKER", "1", "1: `osprey run` starts the local RabbitMQ node; 0: use OSPREY_AMQP_URI only."),
    Setting("OSPREY_ADMIN_PASSWORD", "", "Password of the `admin` user when it is first created; empty: generated and printed once."),
    Setting("OSPREY_SECRET_KEY", "", "Key signing session cookies; empty: generated once into DATA_DIR/gateway/secret_key."),
    Setting("OSPREY_TICKET_TAG", "Osprey", "Tag in subjects, `[Osprey #42]`; mail whose subject carries it is added to ticket 42."),
    Setting("OSPREY_DEFAULT_QUEUES", "general", "Comma-separated queues created on first start."),
    Setting("OSPREY_TICKETS_DB_URL", "", "SQLAlchemy URL of the tickets database; empty: SQLite in DATA_DIR/tickets/tickets.db."),
    Setting("OSPREY_INGEST_DB_URL", "", "SQLAlchemy URL of the intake ledger; empty: SQLite in DATA_DIR/ingest/ingest.db."),
    Setting("OSPREY_CRYPTO_DB_URL", "", "SQLAlchemy URL of the keyring database (keys, certificates, CRLs; every crypto replica reads it); empty: SQLite in DATA_DIR/crypto/crypto.db."),
    Setting("OSPREY_ENRICH_DB_URL", "", "SQLAlchemy URL of the enrichment database (RDAP/whois cache, constituencies); empty: SQLite in DATA_DIR/enrich/enrich.db."),
    Setting("OSPREY_ENRICH_LOOKUPS", "1", "1: enrich looks public addresses up in RDAP/whois (network, ASN, abuse contact); 0: indicators only (no outside requests, e.g. an offline site or the test suite)."),
    Setting("OSPREY_ENRICH_OWN_DOMAINS", "", "Comma-separated mail domains of the team and of Osprey itself: never reported as indicators."),
    Setting("OSPREY_RAW_STORE", "", "Folder of the content-addressed raw mail store; empty: DATA_DIR/ingest/raw."),
    Setting("OSPREY_MAX_MAIL_BYTES", str(64 * 1024 * 1024), "Largest mail osprey-mailgate and osprey-lmtp accept (bytes); larger mail is refused (exit 69, `552 5.3.4`) so the MTA bounces it to its sender. Keep it under a third of the broker's max_message_size (RabbitMQ: 128 MiB): raw bytes cross RPC base64-encoded."),
    Setting("OSPREY_MAX_BODY_CHARS", str(1024 * 1024), "Body text kept per article for display and search; the raw original always stays whole."),
    Setting("OSPREY_MAILGATE_TIMEOUT", "30", "Seconds osprey-mailgate and osprey-lmtp wait for the broker's confirm before giving up with a temporary failure (exit 75, `451 4.3.0`)."),
    Setting("OSPREY_LMTP_HOST", "127.0.0.1", "Address the LMTP intake listener (`osprey-lmtp`) listens on."),
    Setting("OSPREY_LMTP_PORT", "2424", "Port of the LMTP intake listener."),
    Setting("OSPREY_EXTERNAL_REF_PATTERNS", "", "YAML file of per-sender patterns for other teams' ticket numbers in subjects (docs/intake.md); empty: the built-ins only."),
    Setting("OSPREY_MAIL_ACCOUNTS", "", "YAML file of the IMAP/POP3 mailboxes `osprey-poller` fetches mail from (docs/mail-accounts.md); empty: none, the poller idles."),
    Setting("OSPREY_POLL_SECONDS", "60", "Seconds `osprey-poller` waits between two rounds over its mail accounts."),
    Setting("OSPREY_NOTIFY_DB_URL", "", "SQLAlchemy URL of the notify database (templates, outbox); empty: SQLite in DATA_DIR/notify/notify.db."),
    Setting("OSPREY_MAIL_DOMAIN", "localhost", "Domain of Osprey's own addresses: a queue's mail goes out From QUEUE@DOMAIN, and Message-IDs end in it."),
    Setting("OSPREY_MAIL_FROM_NAME", "Osprey", "Display name before a queue's address (`Osprey general <general@DOMAIN>`)."),
    Setting("OSPREY_SMTP_HOST", "127.0.0.1", "The SMTP relay outgoing mail is delivered to."),
    Setting("OSPREY_SMTP_PORT", "25", "Port of the SMTP relay (587 for submission with STARTTLS, 465 for implicit TLS)."),
    Setting("OSPREY_SMTP_SECURITY", "none", "`none`, `starttls` (required: no plain-text fallback) or `tls` (implicit TLS, port 465)."),
    Setting("OSPREY_SMTP_CAFILE", "", "CA certificates (PEM) that the relay's certificate must chain to; empty: the system's."),
    Setting("OSPREY_SMTP_USER", "", "SMTP AUTH user name; empty: no authentication."),
    Setting("OSPREY_SMTP_PASSWORD", "", "SMTP AUTH password (only sent after TLS is up, unless OSPREY_SMTP_SECURITY is none)."),
    Setting("OSPREY_SMTP_TIMEOUT", "30", "Seconds one SMTP conversation step may take before the attempt counts as a temporary failure."),
    Setting("OSPREY_NOTIFY_POLL_SECONDS", "1", "How often the delivery worker looks for mail to send."),
    Setting("OSPREY_NOTIFY_RETRY_SECONDS", "60", "First wait after a temporary failure (4xx, connection); doubled each attempt."),
    Setting("OSPREY_NOTIFY_RETRY_MAX_SECONDS", "3600", "Longest wait between two attempts."),
    Setting("OSPREY_NOTIFY_GIVE_UP_HOURS", "48", "A mail still not accepted this long after it was queued fails permanently."),
    Setting("OSPREY_NOTIFY_LEASE_SECONDS", "300", "A mail claimed by a delivery worker that has not finished it after this long (a crashed replica) is attempted again; at least OSPREY_SMTP_TIMEOUT + 5."),
    Setting("OSPREY_NOTIFY_ACTOR", "admin", "The user as whom notify reads tickets for automatic mail (auto-replies, SLA and reminder notices)."),
    Setting("OSPREY_AUTOREPLY_DAILY_LIMIT", "3", "At most this many auto-replies to one address in 24 hours."),
    Setting("OSPREY_RPC_TIMEOUT", "30", "Seconds the gateway and CLI wait for a service's RPC reply."),
    Setting("OSPREY_GATEWAY_RPC_THREADS", "16", "Threads (each with its own RPC connection) the gateway uses to call services."),
    Setting("OSPREY_TOKEN_DAYS", "90", "Lifetime of API tokens created without an explicit expiry."),
    Setting("OSPREY_TOKEN_CACHE_SECONDS", "30", "How long the gateway trusts a verified API token before asking tickets again (a disabled user's token stops working within this time)."),
    Setting("OSPREY_SESSION_HOURS", "12", "Lifetime of a web login session."),
    Setting("OSPREY_LOG_LEVEL", "INFO", "Log level of every process."),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def get(name: str) -> str:
    """The raw value of a setting (environment, else its default)."""
    return os.environ.get(name, _BY_NAME[name].default)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    http_host: str
    http_port: int
    public_url: str
    amqp_uri: str
    broker_port: int
    start_broker: bool
    admin_password: str
    secret_key: str
    ticket_tag: str
    default_queues: tuple[str, ...]
    tickets_db_url: str
    ingest_db_url: str
    crypto_db_url: str
    enrich_db_url: str
    enrich_lookups: bool
    enrich_own_domains: tuple[str, ...]
    raw_store: Path
    max_mail_bytes: int
    max_body_chars: int
    mailgate_timeout: float
    lmtp_host: str
    lmtp_port: int
    mail_accounts: str
    external_ref_patterns: str
    poll_seconds: float
    rpc_timeout: float
    gateway_rpc_threads: int
    token_days: int
    token_cache_seconds: float
    session_hours: int
    log_level: str

    def service_dir(self, name: str) -> Path:
        path = self.data_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def _sqlite_url(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def settings() -> Settings:
    data_dir = Path(get("OSPREY_DATA_DIR")).resolve()
    host = get("OSPREY_HTTP_HOST")
    port = int(get("OSPREY_HTTP_PORT"))
    broker_port = int(get("OSPREY_BROKER_PORT"))
    return Settings(
        data_dir=data_dir,
        http_host=host,
        http_port=port,
        public_url=get("OSPREY_PUBLIC_URL") or f"http://{host}:{port}/",
        amqp_uri=get("OSPREY_AMQP_URI") or f"amqp://guest:guest@127.0.0.1:{broker_port}/",
        broker_port=broker_port,
        start_broker=get("OSPREY_START_BROKER") not in ("0", "false", "no", ""),
        admin_password=get("OSPREY_ADMIN_PASSWORD"),
        secret_key=get("OSPREY_SECRET_KEY"),
        ticket_tag=get("OSPREY_TICKET_TAG"),
        default_queues=tuple(q.strip() for q in get("OSPREY_DEFAULT_QUEUES").split(",") if q.strip()),
        tickets_db_url=get("OSPREY_TICKETS_DB_URL") or _sqlite_url(data_dir / "tickets" / "tickets.db"),
        ingest_db_url=get("OSPREY_INGEST_DB_URL") or _sqlite_url(data_dir / "ingest" / "ingest.db"),
        crypto_db_url=get("OSPREY_CRYPTO_DB_URL") or _sqlite_url(data_dir / "crypto" / "crypto.db"),
        enrich_db_url=get("OSPREY_ENRICH_DB_URL") or _sqlite_url(data_dir / "enrich" / "enrich.db"),
        enrich_lookups=get("OSPREY_ENRICH_LOOKUPS") not in ("0", "false", "no", ""),
        enrich_own_domains=tuple(d.strip().lower() for d in get("OSPREY_ENRICH_OWN_DOMAINS").split(",") if d.strip()),
        raw_store=Path(get("OSPREY_RAW_STORE") or data_dir / "ingest" / "raw"),
        max_mail_bytes=int(get("OSPREY_MAX_MAIL_BYTES")),
        max_body_chars=int(get("OSPREY_MAX_BODY_CHARS")),
        mailgate_timeout=float(get("OSPREY_MAILGATE_TIMEOUT")),
        lmtp_host=get("OSPREY_LMTP_HOST"),
        lmtp_port=int(get("OSPREY_LMTP_PORT")),
        mail_accounts=get("OSPREY_MAIL_ACCOUNTS"),
        external_ref_patterns=get("OSPREY_EXTERNAL_REF_PATTERNS"),
        poll_seconds=float(get("OSPREY_POLL_SECONDS")),
        rpc_timeout=float(get("OSPREY_RPC_TIMEOUT")),
        gateway_rpc_threads=int(get("OSPREY_GATEWAY_RPC_THREADS")),
        token_days=int(get("OSPREY_TOKEN_DAYS")),
        token_cache_seconds=float(get("OSPREY_TOKEN_CACHE_SECONDS")),
        session_hours=int(get("OSPREY_SESSION_HOURS")),
        log_level=get("OSPREY_LOG_LEVEL"),
    )


def markdown_table() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for s in SETTINGS:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.help} |")
    return "\n".join(rows)


def nameko_config(s: Settings | None = None) -> dict:
    """The nameko container config every service and RPC client uses."""
    s = s or settings()
    return {
        "AMQP_URI": s.amqp_uri,
        "serializer": "json",
        "max_workers": 10,
        "parent_calls_tracked": 10,
        "LOGGING": {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
            "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
            "root": {"level": s.log_level, "handlers": ["console"]},
            "loggers": {"kombu": {"level": "WARNING"}, "amqp": {"level": "WARNING"}},
        },
    }
