"""One exception tree: every user-facing failure is a ``GigavisionError`` with a short code.

The CLI prints ``str(error)`` on one line and exits non-zero; the server maps ``http_status``
to the response status and ``code`` into ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations


class GigavisionError(Exception):
    """Base class. ``code`` is stable and machine-readable; the message says what and why."""

    code = "error"
    http_status = 400


class InvalidInput(GigavisionError):
    """A parameter, path or id supplied by the user is malformed."""

    code = "invalid_input"


class Ambiguous(InvalidInput):
    """An id prefix or a name that fits several images (jobs, …); the message lists the candidates.

    400, not 409: the request names nothing in particular, and the client fixes it by saying more (a longer
    prefix, the full id), not by waiting for or changing the stored state.
    """

    code = "ambiguous"


class InvalidImage(GigavisionError):
    """A file is not an image we can read: wrong type, truncated, malformed."""

    code = "invalid_image"
    http_status = 422


class LimitExceeded(GigavisionError):
    """The request or file exceeds a configured limit (``limits.*`` in gigavision.toml)."""

    code = "limit_exceeded"
    http_status = 413


class NotFound(GigavisionError):
    code = "not_found"
    http_status = 404


class Conflict(GigavisionError):
    code = "conflict"
    http_status = 409


class Unauthorized(GigavisionError):
    """No valid login (session cookie or API token) where the workspace has users, or a wrong password."""

    code = "unauthorized"
    http_status = 401


class Forbidden(GigavisionError):
    """The login is valid but its role does not allow this, or a CSRF token is missing or wrong."""

    code = "forbidden"
    http_status = 403


class TooManyAttempts(GigavisionError):
    """Too many failed logins for one user or one address in the last minute."""

    code = "too_many_attempts"
    http_status = 429


class ConfigError(GigavisionError):
    """The workspace or its settings are missing or invalid."""

    code = "config_error"
    http_status = 500


class MissingDependency(GigavisionError):
    """An optional dependency is needed for this feature; the message names the install command."""

    code = "missing_dependency"
    http_status = 501


class MissingExtra(MissingDependency):
    """A feature needs an optional extra of gigavision that is not installed (``gigavision.extras`` decides which).

    One line: what needs it, which module is missing, the install command. The CLI exits 2 and writes
    nothing; the server answers 501 ``missing_extra`` and keeps running.
    """

    code = "missing_extra"
    http_status = 501

    def __init__(self, message: str, *, extra: str = "", module: str = "") -> None:
        super().__init__(message)
        self.extra = extra
        self.module = module
