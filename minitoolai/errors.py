"""The one exception tree of MiniToolAI, and the error envelopes it renders to.

    MiniToolAIError
    ├── ConfigError                 bad configuration at start (names the key)
    ├── LedgerError                 an invariant of the ledger does not hold
    └── APIError                    anything answered to an HTTP client
        ├── InvalidRequest          400  which field, and why
        ├── AuthenticationFailed    401  missing, unknown or revoked key
        ├── InsufficientCredit      402  balance too low for the hold
        ├── PermissionDenied        403  not yours / not an admin / disabled account
        ├── NotFound                404  unknown model, job, route
        ├── RequestTimeout          408  the request body did not arrive in time
        ├── Conflict                409  an Idempotency-Key whose first request still runs
        ├── PayloadTooLarge         413  body over the configured limit
        ├── UnsupportedMediaType    415  a JSON API called without Content-Type: application/json
        ├── Unprocessable           422  an Idempotency-Key reused for another request
        ├── RateLimited             429  per-key request rate
        ├── UpstreamError           502  the upstream failed
        ├── ServiceUnavailable      503  no provider for the model, a full queue
        │   └── DatabaseUnavailable 503  the database is away or its pool exhausted
        │                                (always with Retry-After)
        └── UpstreamTimeout         504  the upstream did not answer in time

Every APIError renders to the OpenAI envelope
``{"error": {"message", "type", "param", "code"}}``; the image endpoints wrap the same
message in the seed's shape ``{"status": "error", "jobid": null, "signature": null, ...}``.
"""

from __future__ import annotations

from typing import Any

import orjson


class MiniToolAIError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(MiniToolAIError):
    """The configuration is invalid; the message names the key."""


class LedgerError(MiniToolAIError):
    """A ledger invariant failed (used by `ledger verify`)."""


class APIError(MiniToolAIError):
    status_code: int = 500
    error_type: str = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class InvalidRequest(APIError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_value"


class AuthenticationFailed(APIError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class InsufficientCredit(APIError):
    status_code = 402
    error_type = "insufficient_quota"
    default_code = "insufficient_credit"


class PermissionDenied(APIError):
    status_code = 403
    error_type = "permission_error"
    default_code = "forbidden"


class NotFound(APIError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class RequestTimeout(APIError):
    status_code = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"

    def __init__(self, message: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        # the rest of the body may still be on its way: the connection cannot serve another
        self.headers.setdefault("Connection", "close")


class Conflict(APIError):
    status_code = 409
    error_type = "idempotency_error"
    default_code = "idempotency_key_in_use"


class Unprocessable(APIError):
    status_code = 422
    error_type = "idempotency_error"
    default_code = "idempotency_key_reused"


class PayloadTooLarge(APIError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class UnsupportedMediaType(APIError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


class RateLimited(APIError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(APIError):
    status_code = 502
    error_type = "upstream_error"
    default_code = "upstream_failed"


class ServiceUnavailable(APIError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "no_provider"


class UpstreamTimeout(APIError):
    status_code = 504
    error_type = "upstream_timeout"
    default_code = "upstream_timeout"


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be reached, dropped the connection, or every pooled connection
    is busy (code `database_busy`). Nothing was served: the client may retry after
    `Retry-After` seconds. Raised by db/engine.py's Database for the driver's errors
    (db/faults.py says which)."""

    default_code = "database_unavailable"

    def __init__(self, message: str = "the database is unavailable; retry shortly", *,
                 retry_after: int = 2, code: str | None = None) -> None:
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})
