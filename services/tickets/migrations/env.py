"""Alembic environment of the tickets service (see osprey.db.run_migrations)."""
from osprey.db import run_migrations
from services.tickets.models import Base

run_migrations(Base.metadata)
