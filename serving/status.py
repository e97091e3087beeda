"""Request errors and their status codes: the one table REST and gRPC both map from.

Like TF Serving, every failed request carries a canonical status (invalid argument, not
found, resource exhausted, unavailable, internal) and a message; the REST handler turns
it into ``{"error": message}`` with the HTTP code below, the gRPC servicer into the
matching ``grpc.StatusCode``.
"""
from __future__ import annotations

import grpc

INVALID_ARGUMENT = "INVALID_ARGUMENT"
NOT_FOUND = "NOT_FOUND"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNAVAILABLE = "UNAVAILABLE"
INTERNAL = "INTERNAL"

# status -> (HTTP code, gRPC code)
CODES = {
    INVALID_ARGUMENT: (400, grpc.StatusCode.INVALID_ARGUMENT),
    NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    RESOURCE_EXHAUSTED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    UNAVAILABLE: (503, grpc.StatusCode.UNAVAILABLE),
    INTERNAL: (500, grpc.StatusCode.INTERNAL),
}


class RequestError(Exception):
    """A request the server refuses; ``status`` is one of the keys of ``CODES``."""

    def __init__(self, status: str, message: str):
        if status not in CODES:
            raise ValueError(f"status must be one of {sorted(CODES)}. Received: status={status!r}")
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def http_code(self) -> int:
        return CODES[self.status][0]

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return CODES[self.status][1]


def invalid(message: str) -> RequestError:
    return RequestError(INVALID_ARGUMENT, message)


def not_found(message: str) -> RequestError:
    return RequestError(NOT_FOUND, message)
