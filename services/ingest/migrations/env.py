"""Alembic environment of the ingest service (see osprey.db.run_migrations)."""
from osprey.db import run_migrations
from services.ingest.models import Base

run_migrations(Base.metadata)
