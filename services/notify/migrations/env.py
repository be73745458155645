"""Alembic environment of the notify service (see osprey.db.run_migrations)."""
from osprey.db import run_migrations
from services.notify.models import Base

run_migrations(Base.metadata)
