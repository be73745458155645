"""ingest's own dependency providers."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from osprey.config import settings

from .rawstore import RawStore


class RawBlobs(DependencyProvider):
    """The content-addressed raw store (a folder; an object store at scale)."""

    def setup(self):
        self.store = RawStore(settings().raw_store)

    def get_dependency(self, worker_ctx):
        return self.store
