"""First start: the search index, the default queues and the admin user."""
from __future__ import annotations

import logging
import secrets
import sys

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from osprey.config import settings

from . import accounts, records, search

log = logging.getLogger(__name__)


def bootstrap(engine: Engine) -> None:
    s = settings()
    search.check_backend(engine)
    with Session(engine) as session:
        records.ensure_queues(session, s.default_queues)
        if accounts.find_user(session, "admin") is None:
            password = s.admin_password or secrets.token_urlsafe(12)
            accounts.create_user(session, "admin", password, is_admin=True)
            session.commit()
            if s.admin_password:
                log.warning("created user 'admin' with the password from OSPREY_ADMIN_PASSWORD")
            else:
                banner = (f"\n{'=' * 64}\n  Osprey admin login (shown once): admin / {password}\n"
                          f"  change it with: osprey user passwd admin\n{'=' * 64}\n")
                print(banner, file=sys.stderr, flush=True)
        session.commit()
