"""Alembic environment of the enrich service (see osprey.db.run_migrations)."""
from osprey.db import run_migrations
from services.enrich.models import Base

run_migrations(Base.metadata)
