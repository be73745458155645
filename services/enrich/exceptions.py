"""Errors enrich returns over RPC (the gateway maps them to HTTP in one table)."""


class BadRequest(Exception):
    pass


class NotFound(Exception):
    pass
