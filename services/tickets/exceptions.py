"""Errors tickets returns over RPC. The gateway maps them to HTTP in one table
(gateway/errors.py); ingest quarantines a mail that tickets refuses."""


class NotFound(Exception):
    pass


class Forbidden(Exception):
    pass


class BadRequest(Exception):
    pass


class UnknownQueue(BadRequest):
    pass


class Conflict(Exception):
    pass
