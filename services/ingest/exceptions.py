"""Errors ingest returns over RPC (the gateway maps them to HTTP in one table)."""


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass
