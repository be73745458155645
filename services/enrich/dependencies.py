"""enrich's own dependency providers."""
from __future__ import annotations

from nameko.extensions import DependencyProvider

from .lookup import Lookups


class RegistryLookups(DependencyProvider):
    """The RDAP/whois client of this process (lookup.Lookups): one HTTP client, one
    set of per-registry rate limits and backoffs, shared by all workers. Keyword
    arguments go to Lookups (tests give local servers' URLs and hosts)."""

    def __init__(self, **options):
        self.options = options
        self.lookups: Lookups | None = None

    def setup(self):
        self.lookups = Lookups(**self.options)

    def stop(self):
        if self.lookups is not None:
            self.lookups.close()
            self.lookups = None

    def kill(self):
        self.stop()

    def get_dependency(self, worker_ctx):
        return self.lookups
