"""The Basalt error tree.

Every error a user or a client can see derives from :class:`BasaltError` and
carries a stable ``code`` (the Convex short code where one exists) and the HTTP
status it maps to when it is not raised inside a function::

    BasaltError
    ├── ConvexError            raised by app code; its ``data`` reaches the client
    ├── InvalidValue           a value outside the Convex value model or its limits
    ├── ValidationError        a value that does not match a validator
    │   ├── ArgumentValidationError
    │   ├── ReturnsValidationError
    │   └── SchemaValidationError
    ├── SchemaDefinitionError  a schema or index declared wrongly (raised at load time)
    ├── FunctionNotFound       no such public function at that path
    ├── AppLoadError           the app folder could not be imported
    ├── Unauthenticated        missing or bad credentials
    ├── Forbidden              credentials that do not allow the call
    ├── LimitExceeded          a per-function limit (documents read/written, bytes)
    ├── BadRequest             a malformed request outside any function
    └── StorageError           the storage engine failed

Control-flow signals derive from ``BaseException`` so that a bare
``except Exception`` in app code cannot swallow them:

    WriteConflict             the transaction must be retried
"""

from __future__ import annotations

from typing import Any


class BasaltError(Exception):
    """Base of every error Basalt raises on purpose."""

    code: str = "InternalServerError"
    http_status: int = 500
    #: more than every caller may be told (which functions a module has, ...):
    #: shown only to callers who see everything (admin, ``basalt dev``)
    detail: str | None = None

    def __init__(self, message: str, *, code: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if detail is not None:
            self.detail = detail


class ConvexError(BasaltError):
    """An error raised by app code on purpose, whose ``data`` reaches the client.

    ``data`` can be any Convex value. On the wire it travels as ``errorData``;
    the official clients surface it as their own ``ConvexError`` with ``.data``.
    """

    code = "ConvexError"
    http_status = 200

    def __init__(self, data: Any) -> None:
        self.data = data
        if isinstance(data, str):
            message = data
        else:
            import json

            try:
                message = json.dumps(data, default=repr)
            except (TypeError, ValueError):
                message = repr(data)
        super().__init__(message)


class InvalidValue(BasaltError):
    """A value that is not a legal Convex value, or is over a size limit."""

    code = "InvalidValue"
    http_status = 400


class ValidationError(BasaltError):
    """A value that does not match its validator; the message names the path."""

    code = "ValidationError"
    http_status = 400


class ArgumentValidationError(ValidationError):
    code = "ArgumentValidationError"


class ReturnsValidationError(ValidationError):
    code = "ReturnsValidationError"


class SchemaValidationError(ValidationError):
    code = "SchemaValidationError"


class SchemaDefinitionError(BasaltError):
    """A schema, table or index declared wrongly. Raised when the app loads."""

    code = "SchemaDefinitionError"
    http_status = 400


class FunctionNotFound(BasaltError):
    code = "FunctionNotFound"
    http_status = 404


class AppLoadError(BasaltError):
    """The app folder could not be loaded; the message names the file and line."""

    code = "AppLoadError"
    http_status = 500


class Unauthenticated(BasaltError):
    code = "Unauthenticated"
    http_status = 401


class Forbidden(BasaltError):
    code = "Forbidden"
    http_status = 403


class LimitExceeded(BasaltError):
    code = "LimitExceeded"
    http_status = 400


class ServerBusy(BasaltError):
    """The server holds as much of some resource as it may (e.g. request bodies
    being read); the client should retry in a moment."""

    code = "ServerBusy"
    http_status = 503


class BadRequest(BasaltError):
    code = "BadRequest"
    http_status = 400


class StorageError(BasaltError):
    code = "StorageError"
    http_status = 500


class WriteConflict(BaseException):
    """A transaction read something another commit changed; it will be retried."""

    def __init__(self, message: str = "write conflict") -> None:
        super().__init__(message)
