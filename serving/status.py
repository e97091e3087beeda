"""Request errors and their status codes: the one table REST and gRPC both map from.

Like TF Serving, every failed request carries a canonical status (one of the 16 codes of
``absl::StatusCode`` / ``grpc.StatusCode`` other than OK) and a message; the REST handler
turns it into ``{"error": message}`` with the HTTP code of TF Serving's
``http_server.cc`` ``ToHTTPStatusCode`` (below), the gRPC servicer into the matching
``grpc.StatusCode`` (with TF Serving's ``ToGRPCStatus`` limit: a message over 1024
characters is cut there and ends in ``...TRUNCATED``, ``grpc_message``).
"""
from __future__ import annotations

import os
import re

import grpc

from core import fs

CANCELLED = "CANCELLED"
UNKNOWN = "UNKNOWN"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
NOT_FOUND = "NOT_FOUND"
ALREADY_EXISTS = "ALREADY_EXISTS"
PERMISSION_DENIED = "PERMISSION_DENIED"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
ABORTED = "ABORTED"
OUT_OF_RANGE = "OUT_OF_RANGE"
UNIMPLEMENTED = "UNIMPLEMENTED"
INTERNAL = "INTERNAL"
UNAVAILABLE = "UNAVAILABLE"
DATA_LOSS = "DATA_LOSS"
UNAUTHENTICATED = "UNAUTHENTICATED"

# status -> (HTTP code as TF Serving's ToHTTPStatusCode maps it, gRPC code)
CODES = {
    CANCELLED: (499, grpc.StatusCode.CANCELLED),  # CLIENT_CLOSED_REQUEST
    UNKNOWN: (500, grpc.StatusCode.UNKNOWN),
    INVALID_ARGUMENT: (400, grpc.StatusCode.INVALID_ARGUMENT),
    DEADLINE_EXCEEDED: (504, grpc.StatusCode.DEADLINE_EXCEEDED),  # GATEWAY_TO
    NOT_FOUND: (404, grpc.StatusCode.NOT_FOUND),
    ALREADY_EXISTS: (409, grpc.StatusCode.ALREADY_EXISTS),
    PERMISSION_DENIED: (403, grpc.StatusCode.PERMISSION_DENIED),
    RESOURCE_EXHAUSTED: (429, grpc.StatusCode.RESOURCE_EXHAUSTED),
    FAILED_PRECONDITION: (400, grpc.StatusCode.FAILED_PRECONDITION),
    ABORTED: (409, grpc.StatusCode.ABORTED),
    OUT_OF_RANGE: (400, grpc.StatusCode.OUT_OF_RANGE),
    UNIMPLEMENTED: (501, grpc.StatusCode.UNIMPLEMENTED),
    INTERNAL: (500, grpc.StatusCode.INTERNAL),
    UNAVAILABLE: (503, grpc.StatusCode.UNAVAILABLE),
    DATA_LOSS: (500, grpc.StatusCode.DATA_LOSS),
    UNAUTHENTICATED: (401, grpc.StatusCode.UNAUTHENTICATED),
}
GRPC_MESSAGE_LIMIT = 1024  # TF Serving's grpc_status_util.cc kErrorMessageLimit


def grpc_message(message: str) -> str:
    """``message`` as TF Serving's ``ToGRPCStatus`` sends it: cut at 1024 characters plus
    ``...TRUNCATED`` when longer."""
    return message if len(message) <= GRPC_MESSAGE_LIMIT else message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"


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


def failed_precondition(message: str) -> RequestError:
    return RequestError(FAILED_PRECONDITION, message)


def unimplemented(message: str) -> RequestError:
    return RequestError(UNIMPLEMENTED, message)


# An absolute path not inside a relative one: "/x/y" after a start, space, quote, bracket, "=".
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~\-/])/[^\s'\"`,;:()\[\]{}<>|]+")


def redact_paths(message: str, base_dir: str | None = None) -> str:
    """``message`` without absolute file paths, for clients (model status, internal errors).

    Paths under ``base_dir`` become relative to it (``<model>/<version>/saved_model.pb``);
    any other absolute path is cut to its last component (``.../name``). The server's log
    keeps the full message.
    """
    if base_dir:
        roots = {fs.absolute(base_dir), os.path.realpath(base_dir) if fs.is_local(base_dir) else base_dir}
        for root in sorted(roots, key=len, reverse=True):
            message = message.replace(root.rstrip(os.sep) + os.sep, "").replace(root, ".")
    return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(0).rstrip("/").rsplit("/", 1)[-1], message)
