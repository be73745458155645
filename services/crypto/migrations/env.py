"""Alembic environment of the crypto service (see osprey.db.run_migrations)."""
from osprey.db import run_migrations
from services.crypto.models import Base

run_migrations(Base.metadata)
