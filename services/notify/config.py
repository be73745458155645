"""The notify service's settings: its OSPREY_* variables are declared with all the
others in osprey.config.SETTINGS (one table in the README); business code asks
``notify_settings()``."""
from __future__ import annotations

from dataclasses import dataclass

from osprey import contracts
from osprey.config import get as _get
from osprey.config import settings


@dataclass(frozen=True)
class NotifySettings:
    db_url: str
    mail_domain: str
    from_name: str
    ticket_tag: str
    smtp_host: str
    smtp_port: int
    smtp_security: str
    smtp_cafile: str
    smtp_user: str
    smtp_password: str
    smtp_timeout: float
    poll_seconds: float
    retry_seconds: float
    retry_max_seconds: float
    give_up_hours: float
    lease_seconds: float
    actor: str
    autoreply_daily_limit: int


def notify_settings() -> NotifySettings:
    base = settings()
    security = _get("OSPREY_SMTP_SECURITY").strip().lower() or "none"
    if security not in ("none", "starttls", "tls"):
        raise ValueError(f"OSPREY_SMTP_SECURITY is none, starttls or tls, not {security!r}")
    timeout = float(_get("OSPREY_SMTP_TIMEOUT"))
    db_url = _get("OSPREY_NOTIFY_DB_URL") or f"sqlite:///{base.service_dir(contracts.NOTIFY) / 'notify.db'}"
    return NotifySettings(
        db_url=db_url,
        mail_domain=_get("OSPREY_MAIL_DOMAIN").strip().lower(),
        from_name=_get("OSPREY_MAIL_FROM_NAME"),
        ticket_tag=base.ticket_tag,
        smtp_host=_get("OSPREY_SMTP_HOST"),
        smtp_port=int(_get("OSPREY_SMTP_PORT")),
        smtp_security=security,
        smtp_cafile=_get("OSPREY_SMTP_CAFILE"),
        smtp_user=_get("OSPREY_SMTP_USER"),
        smtp_password=_get("OSPREY_SMTP_PASSWORD"),
        smtp_timeout=timeout,
        poll_seconds=float(_get("OSPREY_NOTIFY_POLL_SECONDS")),
        retry_seconds=float(_get("OSPREY_NOTIFY_RETRY_SECONDS")),
        retry_max_seconds=float(_get("OSPREY_NOTIFY_RETRY_MAX_SECONDS")),
        give_up_hours=float(_get("OSPREY_NOTIFY_GIVE_UP_HOURS")),
        lease_seconds=max(float(_get("OSPREY_NOTIFY_LEASE_SECONDS")), timeout + 5),
        actor=_get("OSPREY_NOTIFY_ACTOR"),
        autoreply_daily_limit=int(_get("OSPREY_AUTOREPLY_DAILY_LIMIT")),
    )


def poll_seconds() -> float:
    """The delivery timer's interval (needed when the service class is defined)."""
    return float(_get("OSPREY_NOTIFY_POLL_SECONDS"))
