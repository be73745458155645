"""ingest's own dependency providers."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from osprey.config import settings

from . import followup
from .rawstore import RawStore


class RawBlobs(DependencyProvider):
    """The content-addressed raw store (a folder; an object store at scale)."""

    def setup(self):
        self.store = RawStore(settings().raw_store)

    def get_dependency(self, worker_ctx):
        return self.store


class ExternalPatterns(DependencyProvider):
    """The site's per-sender external ticket-number patterns (followup.load_patterns),
    read and checked once when the service starts: a broken file stops the start
    with the reason (PatternError), rather than threading mail without it."""

    def setup(self):
        from osprey.config import settings
        self.patterns = followup.load_patterns(settings().external_ref_patterns)

    def get_dependency(self, worker_ctx):
        return self.patterns
