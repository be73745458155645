"""Errors notify returns over RPC (the gateway maps them to HTTP in one table,
gateway/errors.py: BadRequest 400, Forbidden 403, NotFound 404, Conflict 409)."""


class BadRequest(Exception):
    pass


class Forbidden(Exception):
    pass


class NotFound(Exception):
    pass


class Conflict(Exception):
    pass


class TemplateFailed(BadRequest):
    """A template did not render; ``line`` is its line number (or None) and the
    message the reason. Nothing is sent."""

    def __init__(self, message: str, line: int | None = None, template: str | None = None):
        super().__init__(message)
        self.line, self.template = line, template
