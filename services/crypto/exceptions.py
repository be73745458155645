"""Errors crypto returns over RPC (the gateway maps them to HTTP in one table)."""


class NotFound(Exception):
    pass


class BadRequest(Exception):
    pass


class NoUsableKey(BadRequest):
    """Asked to encrypt to a recipient without a usable key, or to sign for a queue
    without a usable signing key: nothing is sent in plain text instead."""
